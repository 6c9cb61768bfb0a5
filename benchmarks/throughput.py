"""Training throughput of tunefleet's loop against two baselines, side by side in one process.

Same data (the first 1,024 CoNLL-2003 training sentences from ../shared/data), same model (the
bundled all-MiniLM-L6-v2 with a fresh token-classification head, same seed), batch size 16, one pass
= 64 optimizer steps each:

- tunefleet: the real `train_loop_per_worker`, run in-process by Ray Train's local mode (no cluster):
  random batches packed into shared rows (its default for a token task; `--batching length-grouped`
  or `random` for padded batches), bf16 autocast where the CPU supports it. Its throughput is the
  `tokens_per_second` the loop itself reports for the epoch.
- plain: a textbook loop that pads every sentence to 128 tokens, fp32, same optimizer and schedule.
- hf-trainer: Hugging Face `Trainer` with its defaults and `DataCollatorForTokenClassification`.

Throughput counts real (non-pad) tokens, special tokens included, per second of training. Quality:
mean training loss over the pass, and entity F1 (seqeval, strict IOB2) on the first few hundred
validation sentences, scored by tunefleet's own `evaluate` for all three.

Each run of a side is a process of its own (this script again, with `--side`): the loop keeps the
memory it frees for its whole process (`train/allocator.py`), which would speed up a baseline run
after it in the same process; the baselines run with malloc's defaults, as their users run them.

On a shared machine, neighbours slow whichever side happens to run while they are busy. Each side
reports `cpu_share`, the CPU seconds this process got per wall second during it (about `--threads`
on an idle machine); with `--rounds N` the sides run interleaved N times and the best round of each
counts.

    .venv/bin/python benchmarks/throughput.py [--rounds 2] [--precision fp32]   # prints a JSON line last

`--precision fp32` measures the path a CPU without AVX-512 bf16 / AMX takes (where `auto` means fp32)
on one that has them; the HF Trainer side trains in fp32 either way, as its defaults do.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from machine import machine
from tunefleet.train.models import build_model, load_tokenizer, quiet_transformers, resolve_precision
from tunefleet.data import Examples, load_data
from tunefleet.spec import DataConfig, spec_from_dict
from tunefleet.tasks import IGNORE, TokenizedSplit, get_task
from tunefleet.train.loop import _param_groups, evaluate, train_loop_per_worker

ROOT = Path(__file__).resolve().parents[1]
CONLL = ROOT.parent / "shared" / "data" / "conll2003"
TASK = "token-classification"
MODEL_CLASS = "AutoModelForTokenClassification"
SIDES = ["tunefleet", "plain", "hf_trainer"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1024, help="first N training sentences")
    parser.add_argument("--valid", type=int, default=300, help="first N validation sentences for F1")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=1, help="run the three sides interleaved N times, keep each one's best")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="tunefleet's train.precision; fp32 measures a CPU without bf16 on one that has it")
    parser.add_argument("--batching", choices=["packed", "length-grouped", "random"], default="packed",
                        help="tunefleet's batches: packed (its default for NER), length-grouped padded "
                             "(train.pack_sequences: false), or random padded (and group_by_length: false)")
    parser.add_argument("--only", nargs="+", choices=SIDES, default=SIDES)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one run of one side, in a child
    args = parser.parse_args()
    quiet_transformers()
    torch.set_num_threads(args.threads)

    splits = load_data(DataConfig(format="conll", train=str(CONLL / "train.txt"),
                                  validation=str(CONLL / "valid.txt"), test=str(CONLL / "test.txt")), TASK)
    labels = splits.label_names
    tokenizer = load_tokenizer("bundled-minilm")
    task = get_task(TASK)

    def first(examples: Examples, n: int) -> TokenizedSplit:
        return task.tokenize(Examples(None, examples.tokens[:n], examples.labels[:n]), tokenizer, labels, 128)

    train, valid = first(splits.train, args.sentences), first(splits.validation, args.valid)
    steps = math.ceil(len(train) / args.batch_size)
    real_tokens = int(train.lengths().sum())
    cfg = {"epochs": 1, "batch_size": args.batch_size, "lr": args.lr, "weight_decay": 0.01, "dropout": 0.1,
           "warmup_ratio": 0.1, "precision": args.precision, "max_grad_norm": 1.0, "seed": 0, "metric": "f1",
           "early_stopping_patience": None, "pack_sequences": args.batching == "packed",
           "group_by_length": args.batching != "random"}
    spec = spec_from_dict({"name": "throughput", "task": TASK, "data": {"format": "synthetic"},
                           "model": {"name_or_path": "bundled-minilm", "max_length": 128}, "train": cfg,
                           "resources": {"cpus_per_worker": args.threads}, "tracking": {"enabled": False}})

    if args.side is not None:
        run = {"tunefleet": lambda: run_tunefleet(spec, train, valid, labels),
               "plain": lambda: run_plain(spec, train, valid, labels, tokenizer, real_tokens),
               "hf_trainer": lambda: run_hf_trainer(spec, train, valid, labels, tokenizer, real_tokens, steps)}
        print(json.dumps(run[args.side]()))
        return

    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in args.only}
    for _ in range(args.rounds):
        for name in args.only:
            rounds[name].append(run_side(name))
    results = {name: max(runs, key=lambda r: r["tokens_per_second"]) for name, runs in rounds.items()}
    if args.rounds > 1:
        for name, runs in rounds.items():
            results[name]["all_rounds_tokens_per_second"] = [r["tokens_per_second"] for r in runs]
    ours = results.get("tunefleet", {}).get("tokens_per_second")
    ratios = {f"speedup_vs_{name}": round(ours / results[name]["tokens_per_second"], 2)
              for name in ("plain", "hf_trainer") if ours and name in results}
    print(json.dumps({
        "benchmark": "throughput", "sentences": len(train), "steps": steps, "batch_size": args.batch_size,
        "real_tokens": real_tokens, "threads": args.threads, "rounds": args.rounds,
        "precision": resolve_precision(args.precision, "cpu"), "machine": machine(), **results, **ratios,
    }))


def run_side(name: str) -> dict[str, Any]:
    """One run of one side in a fresh process (this script with `--side`): tunefleet's loop keeps
    freed memory for its whole process (train/allocator.py), and the baselines run with malloc as
    their users have it."""
    done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--side", name], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {name} side exited with code {done.returncode}; see its output above")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_tunefleet(spec: Any, train: TokenizedSplit, valid: TokenizedSplit, labels: list[str]) -> dict[str, Any]:
    """The real worker loop, in this process (Ray Train local mode: num_workers=0)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    data = {"train": train.to_arrays(), "validation": valid.to_arrays(), "test": valid.to_arrays()}
    with tempfile.TemporaryDirectory() as storage:
        run = TorchTrainer(train_loop_per_worker,
                           train_loop_config={"spec": spec.to_dict(), "data": data, "label_names": labels},
                           scaling_config=ScalingConfig(num_workers=0),
                           run_config=RunConfig(name="throughput", storage_path=storage))
        with measured() as clock:
            result = run.fit()
    if result.error is not None:
        raise result.error
    epoch = result.return_value["history"][-1]
    # The loop's own figure: real tokens over the epoch's training time (setup and evaluation excluded).
    return {"tokens_per_second": round(epoch["tokens_per_second"], 1), "batching": result.return_value["batching"],
            "train_loss": round(epoch["train_loss"], 4),
            "dev_f1": round(epoch["val_f1"], 4), "dev_loss": round(epoch["val_loss"], 4),
            "cpu_share": clock["cpu_share"], "wall_seconds_incl_setup_and_eval": clock["wall"],
            "peak_rss_mb": clock["peak_rss_mb"]}


@contextmanager
def measured():
    """Wall seconds and this process's CPU seconds per wall second over the block."""
    clock: dict[str, float] = {}
    usage, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    yield clock
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    # The process's peak resident memory so far (Linux reports KiB): train/allocator.py keeps freed
    # memory, and this shows what that costs.
    clock |= {"wall": round(wall, 1), "seconds": wall, "cpu_share": round(cpu / wall, 2),
              "peak_rss_mb": after.ru_maxrss // 1024}


def fresh_model(spec: Any, labels: list[str]) -> Any:
    # Same seed and head initialisation as the loop (torch.manual_seed, then build_model).
    torch.manual_seed(spec.train.seed)
    return build_model(get_task(spec.task), spec.model.name_or_path, labels, spec.train.dropout)


def run_plain(spec: Any, train: TokenizedSplit, valid: TokenizedSplit, labels: list[str], tokenizer: Any,
              real_tokens: int) -> dict[str, Any]:
    """Every sentence padded to 128 tokens, random batches, fp32; the loop's parameter groups and
    schedule, with AdamW's default (per-tensor, non-fused) implementation."""
    from transformers import get_linear_schedule_with_warmup

    cfg = spec.train
    model = fresh_model(spec, labels)
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    order = np.random.default_rng(cfg.seed).permutation(len(train))
    batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * len(batches)), len(batches))
    losses = []
    with measured() as clock:
        for indices in batches:
            batch = pad_to(train, indices, spec.model.max_length, tokenizer.pad_token_id)
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    return {"tokens_per_second": round(real_tokens / clock["seconds"], 1),
            "train_loss": round(float(np.mean(losses)), 4), **dev_scores(model, valid, labels, tokenizer),
            "cpu_share": clock["cpu_share"]}


def pad_to(split: TokenizedSplit, indices: np.ndarray, width: int, pad_id: int) -> dict[str, torch.Tensor]:
    input_ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.int64)
    labels = np.full((len(indices), width), IGNORE, dtype=np.int64)
    for row, i in enumerate(indices):
        start, end = split.offsets[i], split.offsets[i + 1]
        input_ids[row, :end - start] = split.ids[start:end]
        mask[row, :end - start] = 1
        labels[row, :end - start] = split.labels[start:end]
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels)}


def run_hf_trainer(spec: Any, train: TokenizedSplit, valid: TokenizedSplit, labels: list[str], tokenizer: Any,
                   real_tokens: int, steps: int) -> dict[str, Any]:
    """`transformers.Trainer` with its defaults (fp32, random batches padded to their longest by
    DataCollatorForTokenClassification); only batch size, steps and the optimiser's hyperparameters
    are set, to match the others."""
    from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments

    cfg = spec.train
    rows = [{"input_ids": train.ids[a:b].tolist(), "labels": train.labels[a:b].tolist()}
            for a, b in zip(train.offsets[:-1], train.offsets[1:])]
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out, per_device_train_batch_size=cfg.batch_size, max_steps=steps,
            learning_rate=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=int(cfg.warmup_ratio * steps),
            max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, use_cpu=True, report_to="none",
            save_strategy="no", logging_strategy="no", disable_tqdm=True)
        hf = Trainer(model=fresh_model(spec, labels), args=arguments, train_dataset=rows,
                     data_collator=DataCollatorForTokenClassification(tokenizer))
        with measured() as clock:
            output = hf.train()
    return {"tokens_per_second": round(real_tokens / clock["seconds"], 1), "train_loss": round(output.training_loss, 4),
            **dev_scores(hf.model, valid, labels, tokenizer), "cpu_share": clock["cpu_share"]}


def dev_scores(model: Any, valid: TokenizedSplit, labels: list[str], tokenizer: Any) -> dict[str, float]:
    scores = evaluate(model, valid, get_task(TASK), labels, 32, torch.device("cpu"), "fp32", tokenizer.pad_token_id)
    return {"dev_f1": round(scores["f1"], 4), "dev_loss": round(scores["loss"], 4)}


if __name__ == "__main__":
    main()
