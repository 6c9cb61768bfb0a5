"""Evaluation speed: tunefleet's `evaluate` against the HF Trainer's `evaluate()` on the same split.

Validation runs after every epoch of every trial, so on small data it is a large share of a sweep.
Both sides score the same CoNLL-2003 validation sentences (the first `--sentences`), with the same
model (the bundled all-MiniLM-L6-v2 with a seeded fresh token-classification head; the figures are
about speed, so an untrained head is fine) and the same entity-F1 scoring (tunefleet's task), and
both include that scoring in their time:

- tunefleet: `tunefleet.train.loop.evaluate` as the loop calls it on a CPU: examples sorted by
  length, fixed batches of 2 x the training batch, `inference_mode`, bf16 autocast where the CPU has
  bf16 (or `--precision`), fp32 linear layers through oneDNN (`train/onednn.py`);
- with `--eval-batches 16 64 ...`: the same at other evaluation batch sizes, and `--token-budget N`
  batches of at least 2 x the training batch filled up to N padded tokens (what a GPU uses), to
  show what batch size suits this CPU;
- hf-trainer: `Trainer.evaluate()` with its defaults (per-device eval batch 8, fp32, the split in
  its order, DataCollatorForTokenClassification) and a `compute_metrics` that calls the same scorer.

Throughput counts real (non-pad) tokens per second of wall time; each side runs `--rounds` times,
interleaved, and its best round counts.

    .venv/bin/python benchmarks/eval_speed.py [--sentences 1000] [--precision fp32] [--rounds 3]
        [--eval-batches 16 64] [--token-budget 4096 8192]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from machine import machine
from tunefleet.data import Examples, load_data
from tunefleet.spec import DataConfig
from tunefleet.tasks import get_task
from tunefleet.train import loop
from tunefleet.train.models import build_model, load_tokenizer, quiet_transformers, resolve_precision
from tunefleet.train.onednn import pays_here, use_onednn_linear

ROOT = Path(__file__).resolve().parents[1]
CONLL = ROOT.parent / "shared" / "data" / "conll2003"
TASK = "token-classification"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1000, help="first N validation sentences")
    parser.add_argument("--batch-size", type=int, default=16, help="the training batch (evaluation uses 2x)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-batches", type=int, nargs="*", default=[], help="also try these evaluation batch sizes")
    parser.add_argument("--token-budget", type=int, nargs="*", default=[], help="also try these padded-token budgets")
    args = parser.parse_args()
    quiet_transformers()
    torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, "cpu")

    splits = load_data(DataConfig(format="conll", train=str(CONLL / "train.txt"), validation=str(CONLL / "valid.txt"),
                                  test=str(CONLL / "test.txt")), TASK)
    labels, task, tokenizer = splits.label_names, get_task(TASK), load_tokenizer("bundled-minilm")
    valid = splits.validation
    split = task.tokenize(Examples(None, valid.tokens[:args.sentences], valid.labels[:args.sentences]),
                          tokenizer, labels, 128)
    real_tokens = int(split.lengths().sum())
    torch.manual_seed(0)
    model = build_model(task, "bundled-minilm", labels, None)
    ours = copy.deepcopy(model)  # the same weights, with the linear layers the loop uses on this CPU
    if pays_here():
        use_onednn_linear(ours)

    def tunefleet(eval_batch: int, max_tokens: int = 0) -> dict[str, Any]:
        started = time.perf_counter()
        # max_tokens: the GPU's batching, asked for explicitly (on a CPU evaluate uses fixed batches).
        scores = loop.evaluate(ours, split, task, labels, eval_batch // 2, torch.device("cpu"), precision,
                               tokenizer.pad_token_id, max_tokens=max_tokens)
        return {"seconds": time.perf_counter() - started, "f1": scores["f1"]}

    sides = {"tunefleet": lambda: tunefleet(2 * args.batch_size),
             "hf_trainer": lambda: hf_trainer(model, split, task, labels, tokenizer, precision)}
    for size in args.eval_batches:
        sides[f"tunefleet_eval_batch_{size}"] = lambda size=size: tunefleet(size)
    for budget in args.token_budget:
        sides[f"tunefleet_token_budget_{budget}"] = lambda budget=budget: tunefleet(2 * args.batch_size, budget)
    sides["tunefleet"]()  # warm-up: the first forward passes pay for oneDNN's kernel set-up
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, run in sides.items():
            rounds[name].append(run())
    results = {}
    for name, runs in rounds.items():
        best = min(runs, key=lambda r: r["seconds"])
        results[name] = {"tokens_per_second": round(real_tokens / best["seconds"], 1),
                         "seconds": round(best["seconds"], 2), "f1": round(best["f1"], 4),
                         "all_rounds_seconds": [round(r["seconds"], 2) for r in runs]}
    ours = results["tunefleet"]["tokens_per_second"]
    print(json.dumps({
        "benchmark": "eval_speed", "sentences": len(split), "real_tokens": real_tokens, "precision": precision,
        "threads": args.threads, "machine": machine(), **results,
        "speedup_vs_hf_trainer": round(ours / results["hf_trainer"]["tokens_per_second"], 2),
    }))


def hf_trainer(model: Any, split: Any, task: Any, labels: list[str], tokenizer: Any, precision: str) -> dict[str, Any]:
    """`Trainer.evaluate()` with its defaults; `compute_metrics` scores with tunefleet's entity F1.
    fp32 as the Trainer's defaults are; with tunefleet in bf16, `bf16_full_eval` is not set either,
    because a Trainer user rarely sets it (the row says which precision each side ran)."""
    from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments

    rows = [{"input_ids": split.ids[a:b].tolist(), "labels": split.labels[a:b].tolist()}
            for a, b in zip(split.offsets[:-1], split.offsets[1:])]

    def compute_metrics(prediction: Any) -> dict[str, float]:
        logits, gold = prediction.predictions, prediction.label_ids
        predicted = task.predictions(logits, gold)
        return {"f1": task.score(predicted, split, list(range(len(split))), labels)["f1"]}

    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(output_dir=out, use_cpu=True, report_to="none", disable_tqdm=True)
        trainer = Trainer(model=model, args=arguments, eval_dataset=rows, compute_metrics=compute_metrics,
                          data_collator=DataCollatorForTokenClassification(tokenizer))
        started = time.perf_counter()
        metrics = trainer.evaluate()
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "f1": metrics["eval_f1"], "loss": metrics["eval_loss"]}


if __name__ == "__main__":
    main()
