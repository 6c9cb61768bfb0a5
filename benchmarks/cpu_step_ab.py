"""The cheaper CPU dropout mask (train/dropout.py) against PyTorch's, one training step at a time,
interleaved in one process.

Two copies of the same model (bundled MiniLM, fresh token-classification head, dropout 0.1, seed 0),
one with `use_fast_dropout` (what the loop does on a CPU), each with its own fused AdamW, train on
the same length-grouped batches of the first 1,024 CoNLL-2003 training sentences (batch 16, the
loop's clipping folded into the step). Each round runs 10 steps on one side and the same 10 batches
on the other, alternating which goes first; the figure is the median over rounds of the time ratio.
Neighbours on a shared machine slow whichever side runs while they are busy, so single rounds scatter
(0.9-1.6 were seen); the median of 20 rounds is steadier than any best-of-N between processes.

    .venv/bin/python benchmarks/dropout_speed.py [--rounds 20] [--precision fp32|bf16]   # JSON line last
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from machine import machine
from tunefleet.data import Examples, load_data
from tunefleet.spec import DataConfig
from tunefleet.tasks import get_task
from tunefleet.train.batching import collate, train_batches
from tunefleet.train.dropout import use_fast_dropout
from tunefleet.train.loop import _param_groups, clip_in_step
from tunefleet.train.models import build_model, load_tokenizer, quiet_transformers

CONLL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "conll2003"
TASK = "token-classification"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per side per round")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    quiet_transformers()
    torch.set_num_threads(args.threads)

    splits = load_data(DataConfig(format="conll", train=str(CONLL / "train.txt"), validation=str(CONLL / "valid.txt"),
                                  test=str(CONLL / "test.txt")), TASK)
    tokenizer, task, labels = load_tokenizer("bundled-minilm"), get_task(TASK), splits.label_names
    train = task.tokenize(Examples(None, splits.train.tokens[:1024], splits.train.labels[:1024]), tokenizer, labels, 128)
    torch.manual_seed(0)
    native = build_model(task, "bundled-minilm", labels, 0.1)
    fast = copy.deepcopy(native)
    use_fast_dropout(fast)
    sides = {name: (model.train(), torch.optim.AdamW(_param_groups(model, 0.01), lr=1e-4, fused=True))
             for name, model in (("native", native), ("fast", fast))}
    batches = train_batches(train, 16, 0, 0, 0, 1, True)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def run(name: str, chunk: list[np.ndarray]) -> float:
        model, optimizer = sides[name]
        started = time.perf_counter()
        for indices in chunk:
            batch = collate(train, indices, tokenizer.pad_token_id, True)
            with autocast:
                loss = model(**batch).loss
            loss.backward()
            clip_in_step(optimizer, model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    run("native", batches[:3])  # warm-up: first-call allocations, kernel selection
    run("fast", batches[:3])
    ratios, seconds = [], {"native": 0.0, "fast": 0.0}
    for r in range(args.rounds):
        start = (r * args.steps) % max(1, len(batches) - args.steps)
        chunk = batches[start:start + args.steps]
        order = ("native", "fast") if r % 2 == 0 else ("fast", "native")
        took = {name: run(name, chunk) for name in order}
        ratios.append(took["native"] / took["fast"])
        for name in took:
            seconds[name] += took[name]
        print(f"round {r + 1}/{args.rounds}: native {took['native']:.2f} s, fast {took['fast']:.2f} s, "
              f"{ratios[-1]:.3f}x", flush=True)
    print(json.dumps({
        "benchmark": "dropout_speed", "precision": args.precision, "rounds": args.rounds, "steps_per_round": args.steps,
        "median_speedup": round(float(np.median(ratios)), 3),
        "quartiles": [round(float(q), 3) for q in np.percentile(ratios, [25, 75])],
        "total_seconds": {k: round(v, 1) for k, v in seconds.items()}, "machine": machine(),
    }))


if __name__ == "__main__":
    main()
