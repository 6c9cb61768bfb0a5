"""Optuna+ASHA against random search without early stopping and against the seed-style fixed setting,
on a CoNLL-2003 subset with the bundled MiniLM; plus the platform's overhead.

    .venv/bin/python benchmarks/sweep_compare.py [--train 1000 --validation 300 --test 300 --trials 16 --cpus 1]

For each strategy it reports the best validation and test entity F1 against the compute spent (trial-
epochs and wall time). Overhead: sweep wall time against the sum of the trials' own training time
divided by the concurrency, and the trial start-up time (a trial's first iteration minus its
median epoch time).

Targets (issue 3): Optuna+ASHA within 0.5 F1 points of random search's best with at most 40% of its
trial-epochs; overhead at most 15% for trials of a minute or more.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONLL = ROOT.parent / "shared" / "data" / "conll2003"


def trials_at_once(args: argparse.Namespace) -> int:
    """Trials at once: as many as the machine's CPUs hold, at least one."""
    return max(1, int(args.total_cpus // args.cpus))


def base_spec(args: argparse.Namespace, storage: Path) -> dict:
    return {
        "name": "bench-conll",
        "task": "token-classification",
        "data": {"format": "conll", "train": str(CONLL / "train.txt"), "validation": str(CONLL / "valid.txt"),
                 "test": str(CONLL / "test.txt"), "max_train_samples": args.train,
                 "max_validation_samples": args.validation, "max_test_samples": args.test},
        "model": {"name_or_path": "bundled-minilm", "max_length": 128},
        "train": {"epochs": args.epochs, "batch_size": 16, "lr": 2.0e-5, "metric": "f1", "early_stopping_patience": None},
        "resources": {"workers": 1, "cpus_per_worker": args.cpus, "storage_path": str(storage)},
        "tracking": {"enabled": False},
        "search": {"num_trials": args.trials, "seed": 0, "seed_with_spec": False, "grace_period": 1,
                   "reduction_factor": args.reduction_factor, "max_concurrent": trials_at_once(args),
                   "space": {"train.lr": {"loguniform": [1.0e-5, 5.0e-4]},
                             "train.dropout": {"uniform": [0.0, 0.3]},
                             "train.epochs": {"choice": [args.epochs]}}},
    }


def run(strategy: str, args: argparse.Namespace, storage: Path) -> dict:
    from tunefleet.search.sweep import run_sweep
    from tunefleet.spec import spec_from_dict
    from tunefleet.search.single import run_train

    raw = base_spec(args, storage / strategy)
    started = time.perf_counter()
    if strategy == "fixed":  # the seed-style setting: lr 2e-5, 5 epochs, batch 16
        raw["train"]["epochs"] = 5
        result = run_train(spec_from_dict(raw))
        return {"strategy": strategy, "best_validation_f1": result["metrics"]["validation"]["f1"],
                "test_f1": result["metrics"]["test"]["f1"], "trial_epochs": result["epochs_run"],
                "wall_seconds": round(time.perf_counter() - started, 1)}
    if strategy == "optuna_asha":
        raw["search"] |= {"algorithm": "optuna", "scheduler": "asha"}
    else:
        raw["search"] |= {"algorithm": "random", "scheduler": "none"}
    summary = run_sweep(spec_from_dict(raw))
    return sweep_row(strategy, Path(summary["storage"]), trials_at_once(args))


def sweep_row(strategy: str, sweep_dir: Path, concurrency: int) -> dict:
    """The figures of one finished sweep, from its summary.json and trials.json.

    A trial's first report also carries its start-up (trial process, Ray Train controller, worker
    group, model load): start-up = first iteration - the median of its later epochs, measured on
    trials that ran two epochs or more (one epoch alone cannot be split). Training = the rest; for a
    one-epoch trial, its iteration minus the mean start-up. Overhead = sweep wall time against the
    summed training time divided by the concurrency.
    """
    summary = json.loads((sweep_dir / "summary.json").read_text())
    trials = json.loads((sweep_dir / "trials.json").read_text())
    times = [[h["time_this_iter_s"] for h in t["history"]] for t in trials if t["history"]]
    own = [t[0] - statistics.median(t[1:]) if len(t) > 1 else None for t in times]  # None: one epoch only
    measured = [s for s in own if s is not None]
    startup = statistics.mean(measured) if measured else 0.0
    training = sum(sum(t) - (startup if s is None else s) for t, s in zip(times, own))
    long_trials = [sum(t) - startup for t in times if sum(t) - startup >= 60]
    return {
        "strategy": strategy,
        "best_validation_f1": summary["best"]["metrics"]["validation"]["f1"],
        "test_f1": summary["best"]["metrics"]["test"]["f1"],
        "trial_epochs": summary["trial_epochs"],
        "trials": summary["trials"],
        "wall_seconds": summary["wall_seconds"],
        "concurrency": concurrency,
        "sum_training_seconds": round(training, 1),
        "overhead_vs_training": round(summary["wall_seconds"] / (training / concurrency) - 1, 3),
        "startup_seconds_per_trial": round(startup, 1),
        "trials_training_60s_or_more": len(long_trials),
        "median_trial_training_seconds": round(statistics.median(sum(t) - startup for t in times), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--validation", type=int, default=600)
    parser.add_argument("--test", type=int, default=600)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--cpus", type=float, default=2)
    parser.add_argument("--total-cpus", type=float, default=2, help="CPUs of the machine; trials at once = total / cpus")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of every searched trial (ASHA's max_t); "
                        "the fixed setting always runs 5")
    parser.add_argument("--reduction-factor", type=int, default=3, help="ASHA's reduction factor (grace period 1)")
    parser.add_argument("--only", nargs="*", default=["fixed", "optuna_asha", "random"])
    parser.add_argument("--from-storage", metavar="DIR",
                        help="recompute the sweep rows from a finished run's storage folder instead of running")
    args = parser.parse_args()
    if args.from_storage:  # e.g. after changing how overhead is computed
        for strategy in ("optuna_asha", "random"):
            for sweep_dir in sorted((Path(args.from_storage) / strategy).glob("*/summary.json")):
                print(json.dumps(sweep_row(strategy, sweep_dir.parent, trials_at_once(args))))
        return
    if not CONLL.exists():
        sys.exit(f"{CONLL} not found: ../shared/data must lie beside the project")
    storage = Path(tempfile.mkdtemp(prefix="tunefleet-bench-"))
    rows = [run(strategy, args, storage) for strategy in args.only]
    for row in rows:
        print(json.dumps(row))
    by = {r["strategy"]: r for r in rows}
    if "optuna_asha" in by and "random" in by:
        gap = (by["random"]["best_validation_f1"] - by["optuna_asha"]["best_validation_f1"]) * 100
        share = by["optuna_asha"]["trial_epochs"] / by["random"]["trial_epochs"]
        print(json.dumps({"f1_gap_points": round(gap, 2), "trial_epoch_share": round(share, 3),
                          "target_met": gap <= 0.5 and share <= 0.4}))


if __name__ == "__main__":
    main()
