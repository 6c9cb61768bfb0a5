"""One of the loop's CPU speed-ups against the same loop without it, interleaved in one process:
training steps, then evaluation.

The changes (what the loop does on a CPU, `train/loop.py`):
  dropout  dropout masks from 16-bit random numbers (`train/dropout.py`) against `nn.Dropout`
  linear   fp32 linear layers through oneDNN (`train/onednn.py`) against `nn.Linear` (MKL)
  weight-grad  oneDNN's linear layers with the weight gradient of widening layers through MKL (what
           `OneDNNLinear` does) against every weight gradient through oneDNN (the code before)
  embedding-rows  AdamW over the word embedding's used rows only (`train/embedding_rows.py`)
           against torch's fused AdamW over the whole table
The other changes stay on both sides, as the loop runs them.

Two copies of the same model (bundled MiniLM, fresh token-classification head, dropout 0.1, seed 0),
each with its own fused AdamW, train on the same length-grouped batches of the first 1,024 CoNLL-2003
training sentences (batch 16, the loop's clipping folded into the step). Each round runs 10 steps on
one side and the same 10 batches on the other, alternating which goes first; the figure is the median
over rounds of the time ratio (without / with). Then each side evaluates the first 1,000 validation
sentences (sorted, batches of 32, `inference_mode`, as the loop does) in alternating rounds.
Neighbours on a shared machine slow whichever side runs while they are busy, so single rounds scatter
(0.9-1.6 were seen); the median of 20 rounds is steadier than any best-of-N between processes.

    .venv/bin/python benchmarks/cpu_step_ab.py --change dropout|linear|weight-grad|embedding-rows [--rounds 20] [--eval-rounds 6] \
        [--precision fp32|bf16]   # JSON line last
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from machine import machine
from tunefleet.data import Examples, load_data
from tunefleet.spec import DataConfig
from tunefleet.tasks import get_task
from tunefleet.train.batching import collate, eval_batches, train_batches
from tunefleet.train.dropout import use_fast_dropout
from tunefleet.train.embedding_rows import RowwiseAdamW, rowwise_embedding
from tunefleet.train.loop import _param_groups, clip_in_step
from tunefleet.train.models import build_model, load_tokenizer, quiet_transformers
from tunefleet.train.onednn import OneDNNLinear, use_onednn_linear

CONLL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "conll2003"
TASK = "token-classification"


def _weight_grads_by(by_mkl: bool | None) -> Callable:
    def choose(model: torch.nn.Module) -> None:
        for module in model.modules():
            if isinstance(module, OneDNNLinear):
                module.weight_grad_by_mkl = by_mkl
    return choose


def _everything_but_weight_grad(model: torch.nn.Module) -> None:
    use_fast_dropout(model)
    use_onednn_linear(model)
    _weight_grads_by(False)(model)  # every weight gradient through oneDNN, as before


CHANGES: dict[str, tuple[Callable, Callable]] = {  # change: (it, what stays on both sides)
    "dropout": (use_fast_dropout, use_onednn_linear),
    "linear": (use_onednn_linear, use_fast_dropout),
    "weight-grad": (_weight_grads_by(None), _everything_but_weight_grad),
    "embedding-rows": (lambda model: None, use_fast_dropout),  # the optimizer differs: see `optimizer`
}


def optimizer(model: torch.nn.Module, rowwise: bool) -> torch.optim.Optimizer:
    groups = _param_groups(model, 0.01)
    if rowwise:
        return RowwiseAdamW(groups, rowwise_embedding(model), lr=1e-4)
    return torch.optim.AdamW(groups, lr=1e-4, fused=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--change", choices=sorted(CHANGES), required=True)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per side per round")
    parser.add_argument("--eval-rounds", type=int, default=6, help="evaluations per side (0: none)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    quiet_transformers()
    torch.set_num_threads(args.threads)

    splits = load_data(DataConfig(format="conll", train=str(CONLL / "train.txt"), validation=str(CONLL / "valid.txt"),
                                  test=str(CONLL / "test.txt")), TASK)
    tokenizer, task, labels = load_tokenizer("bundled-minilm"), get_task(TASK), splits.label_names
    train = task.tokenize(Examples(None, splits.train.tokens[:1024], splits.train.labels[:1024]), tokenizer, labels, 128)
    validation = task.tokenize(Examples(None, splits.validation.tokens[:1000], splits.validation.labels[:1000]),
                               tokenizer, labels, 128)
    change, common = CHANGES[args.change]
    torch.manual_seed(0)
    without = build_model(task, "bundled-minilm", labels, 0.1)
    common(without)
    with_it = copy.deepcopy(without)
    change(with_it)
    sides = {name: (model, optimizer(model, name == "with" and args.change == "embedding-rows"))
             for name, model in (("without", without), ("with", with_it))}
    batches = train_batches(train, 16, 0, 0, 0, 1, True)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def steps(name: str, chunk: list[np.ndarray]) -> float:
        model, optimizer = sides[name]
        model.train()
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

    def evaluation(name: str) -> float:
        model = sides[name][0].eval()
        started = time.perf_counter()
        with torch.inference_mode(), autocast:
            for indices in eval_batches(validation, 32, 0, 1):
                model(**collate(validation, indices, tokenizer.pad_token_id, True))
        return time.perf_counter() - started

    steps("without", batches[:3])  # warm-up: first-call allocations, kernel selection
    steps("with", batches[:3])

    def chunk(r: int) -> list[np.ndarray]:  # round r's batches, the same on both sides
        start = (r * args.steps) % max(1, len(batches) - args.steps)
        return batches[start:start + args.steps]

    train_ratios = interleave(args.rounds, "step", lambda name, r: steps(name, chunk(r)))
    eval_ratios = interleave(args.eval_rounds, "evaluation", lambda name, r: evaluation(name))
    print(json.dumps({
        "benchmark": "cpu_step_ab", "change": args.change, "precision": args.precision, "rounds": args.rounds,
        "steps_per_round": args.steps, **summary("step", train_ratios), **summary("evaluation", eval_ratios),
        "machine": machine(),
    }))


def interleave(rounds: int, what: str, run: Callable[[str, int], float]) -> list[float]:
    """Time ratios (without / with) of `rounds` rounds, alternating which side goes first."""
    ratios = []
    for r in range(rounds):
        order = ("without", "with") if r % 2 == 0 else ("with", "without")
        took = {name: run(name, r) for name in order}
        ratios.append(took["without"] / took["with"])
        print(f"{what} round {r + 1}/{rounds}: without {took['without']:.2f} s, with {took['with']:.2f} s, "
              f"{ratios[-1]:.3f}x", flush=True)
    return ratios


def summary(what: str, ratios: list[float]) -> dict[str, object]:
    if not ratios:
        return {}
    return {f"{what}_median_speedup": round(float(np.median(ratios)), 3),
            f"{what}_quartiles": [round(float(q), 3) for q in np.percentile(ratios, [25, 75])]}


if __name__ == "__main__":
    main()
