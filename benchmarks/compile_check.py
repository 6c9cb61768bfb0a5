"""Does `torch.compile` speed up the fp32 training step on this CPU? Eager against compiled, side by side.

The same steps as the loop takes (length-grouped batches of 16 of the first 1,024 CoNLL-2003 training
sentences, the bundled MiniLM with a fresh token-classification head, AdamW fused, gradients clipped
at 1.0), first eager, then with `torch.compile(model, dynamic=True)` (one graph for every sequence
length and batch size, so lengths need no bucketing and nothing recompiles), then eager again. For each:
the first step's seconds (compilation included) and real tokens per second over the remaining steps.
Compiled graphs are cached on disk (/tmp/torchinductor_$USER), so a second run of this script shows
what each later trial on the machine would pay.

    .venv/bin/python benchmarks/compile_check.py [--steps 64] [--precision fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from machine import machine
from tunefleet.data import Examples, load_data
from tunefleet.spec import DataConfig
from tunefleet.tasks import get_task
from tunefleet.train.batching import collate, train_batches
from tunefleet.train.models import build_model, load_tokenizer, quiet_transformers

CONLL = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003"
TASK = "token-classification"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    quiet_transformers()
    torch.set_num_threads(args.threads)
    splits = load_data(DataConfig(format="conll", train=str(CONLL / "train.txt"), validation=str(CONLL / "valid.txt"),
                                  test=str(CONLL / "test.txt")), TASK)
    task, tokenizer, labels = get_task(TASK), load_tokenizer("bundled-minilm"), splits.label_names
    train = splits.train
    split = task.tokenize(Examples(None, train.tokens[:1024], train.labels[:1024]), tokenizer, labels, 128)
    batches = train_batches(split, 16, 0, 0, 0, 1, True)[:args.steps]
    results = [run(variant, task, labels, split, batches, tokenizer.pad_token_id, args.precision)
               for variant in ("eager", "compiled", "eager")]
    print(json.dumps({"benchmark": "compile_check", "steps": len(batches), "precision": args.precision,
                      "machine": machine(), "runs": results}))


def run(variant: str, task, labels, split, batches, pad_id: int, precision: str) -> dict:
    torch.manual_seed(0)
    model = build_model(task, "bundled-minilm", labels, 0.1)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    step = torch.compile(model, dynamic=True) if variant == "compiled" else model
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    started, tokens, first = time.perf_counter(), 0, 0.0
    for i, indices in enumerate(batches):
        batch = collate(split, indices, pad_id, True)
        with autocast:
            loss = step(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i == 0:
            first, started = time.perf_counter() - started, time.perf_counter()
        else:
            tokens += int(batch["attention_mask"].sum())
    return {"variant": variant, "first_step_seconds": round(first, 2),
            "tokens_per_second_after_first": round(tokens / (time.perf_counter() - started), 1)}


if __name__ == "__main__":
    main()
