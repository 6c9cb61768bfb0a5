"""LoRA against full fine-tuning on CoNLL-2003 NER, with the bundled MiniLM, through tunefleet's own loop.

Both sides run `train.local.train_local` (the loop without Ray, one process) on the same data: a
seeded subset of CoNLL-2003 from ../shared/data (`data.max_train_samples` etc.), the same epochs,
batch size, schedule and seed. Each side gets its own learning rate: LoRA trains a few low-rank
matrices from zero and wants a larger step than full fine-tuning. Defaults: 2e-4 for full fine-tuning
of MiniLM (the shipped conll2003.yaml's) and 3e-3 for LoRA (on this subset 1e-3, the usual LoRA rate
for larger models, was far from converged after one epoch; see benchmarks/RESULTS.md).

Reported per side:
- validation and test entity F1 (seqeval, strict IOB2) of the best checkpoint;
- trainable parameters (what the loop counts: with LoRA, the adapters and the head);
- AdamW state: bytes of the optimizer's saved state (exp_avg, exp_avg_sq, step) in the checkpoint;
- checkpoint size: the model weights file (for LoRA, the merged model that is registered) and, for
  LoRA, the adapter (`adapter/adapter_model.safetensors`, what resuming needs beside the state);
- time per epoch: the epoch's real tokens over the tokens/s the loop reports for it (wall clock,
  training only), and the whole run's wall and CPU seconds (model load, evaluation, checkpoints,
  test scoring included).

    .venv/bin/python benchmarks/lora.py [--train 2000 --validation 500 --test 500 --epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONLL = ROOT.parent / "shared" / "data" / "conll2003"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000, help="training sentences (seeded subset)")
    parser.add_argument("--validation", type=int, default=500)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--full-lr", type=float, default=2e-4)
    parser.add_argument("--lora-lr", type=float, default=3e-3)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", nargs="+", choices=["full", "lora"], default=["full", "lora"])
    args = parser.parse_args()

    from tunefleet.spec import spec_from_dict
    from tunefleet.train.launch import prepare_data

    base = {
        "name": "lora-bench", "task": "token-classification",
        "data": {"format": "conll", "train": str(CONLL / "train.txt"), "validation": str(CONLL / "valid.txt"),
                 "test": str(CONLL / "test.txt"), "max_train_samples": args.train,
                 "max_validation_samples": args.validation, "max_test_samples": args.test},
        "model": {"name_or_path": "bundled-minilm", "max_length": 128},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "weight_decay": 0.01, "dropout": 0.1,
                  "warmup_ratio": 0.1, "precision": "auto", "early_stopping_patience": None, "metric": "f1",
                  "seed": 0},
        "resources": {"workers": 1, "cpus_per_worker": args.threads},
        "tracking": {"enabled": False},
    }
    sides = {"full": {"lr": args.full_lr},
             "lora": {"lr": args.lora_lr, "peft": {"method": "lora", "r": args.r, "alpha": args.alpha, "dropout": 0.1}}}
    prepared = None
    rows = []
    for name in args.only:
        raw = json.loads(json.dumps(base))
        raw["train"] |= sides[name]
        spec = spec_from_dict(raw)
        prepared = prepared or prepare_data(spec)  # the same tokenized data for both sides
        rows.append(run_side(name, spec, prepared))
    print_table(rows, args)
    print(json.dumps({"args": vars(args), "load_average": os.getloadavg(), "results": rows}))


def run_side(name: str, spec: Any, prepared: Any) -> dict[str, Any]:
    import torch

    from tunefleet.train.checkpoint import ADAPTER_DIR, load_training_state
    from tunefleet.train.local import train_local

    with tempfile.TemporaryDirectory(prefix=f"lora-bench-{name}-") as out:
        cpu = _cpu_seconds()
        started = time.perf_counter()
        summary = train_local(spec, out, prepared=prepared, device="cpu")
        wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
        checkpoint = Path(summary["checkpoint"])
        optimizer = load_training_state(checkpoint)["optimizer"]["state"]
        state_bytes = sum(t.numel() * t.element_size() for s in optimizer.values() for t in s.values()
                          if isinstance(t, torch.Tensor))
        adapter = checkpoint / ADAPTER_DIR / "adapter_model.safetensors"
        tokens = int(prepared.tokenized["train"].lengths().sum())
        epochs = [h for h in summary["history"] if float(h["epoch"]).is_integer()]
        return {
            "side": name, "lr": spec.train.lr, "peft": spec.train.peft.model_dump() if spec.train.peft else None,
            "validation_f1": round(summary["metrics"]["validation"]["f1"], 4),
            "test_f1": round(summary["metrics"]["test"]["f1"], 4),
            "trainable_parameters": summary["parameters"]["trainable"],
            "total_parameters": summary["parameters"]["total"],
            "optimizer_state_bytes": state_bytes,
            "model_file_bytes": (checkpoint / "model.safetensors").stat().st_size,
            "adapter_file_bytes": adapter.stat().st_size if adapter.is_file() else None,
            "epoch_seconds": [round(tokens / h["tokens_per_second"], 1) for h in epochs],
            "tokens_per_second": [round(h["tokens_per_second"]) for h in epochs],
            "run_wall_seconds": round(wall, 1), "run_cpu_seconds": round(cpu, 1),
        }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nCoNLL-2003, {args.train} training / {args.validation} validation / {args.test} test sentences, "
          f"{args.epochs} epoch(s), batch {args.batch_size}, {args.threads} threads")
    print("| side | lr | validation F1 | test F1 | trainable parameters | AdamW state | checkpoint | time per epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        size = f"{r['model_file_bytes'] / 2**20:.1f} MiB model"
        if r["adapter_file_bytes"]:
            size += f" (merged) + {r['adapter_file_bytes'] / 2**10:.0f} KiB adapter"
        print(f"| {r['side']} | {r['lr']:g} | {r['validation_f1']:.3f} | {r['test_f1']:.3f} | "
              f"{r['trainable_parameters']:,} | {r['optimizer_state_bytes'] / 2**20:.2f} MiB | {size} | "
              f"{', '.join(f'{s:.1f} s' for s in r['epoch_seconds'])} ({r['run_wall_seconds']:.0f} s run, "
              f"{r['run_cpu_seconds']:.0f} CPU-s) |")


if __name__ == "__main__":
    main()
