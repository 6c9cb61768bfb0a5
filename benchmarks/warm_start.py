"""Does a sweep warm-started from an earlier one get to the earlier one's best sooner than a cold one?

    .venv/bin/python benchmarks/warm_start.py [--train 2000] [--trials 8] [--seeds 0 1] [--out FILE]

The work of `sweep_vs_trainer.py` (first N CoNLL-2003 sentences, bundled MiniLM, batch 16, TPE +
ASHA, one trial at a time on 2 CPUs), three sweeps in one process:
- first: TPE seed A (`--seeds A B`, default 0 1), nothing to start from;
- warm: TPE seed B, `search.warm_start: auto` in the first sweep's storage folder (so it starts from
  the first sweep's trials);
- cold: TPE seed B, `warm_start: off`, in a folder of its own.
For each, the trial-epochs (evaluations, in the order they came) it spent until its validation F1
first reached the first sweep's best, and its own best. The issue's target: the warm sweep needs at
most half the trial-epochs that the first needed to reach its best.

`--first-from FOLDER` takes the first sweep from a finished one (a folder the benchmark kept, or any
sweep of the same work) instead of running it, and `--no-cold` skips the cold sweep: together they
rerun only the warm sweep after a change to warm starting.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sweep_vs_trainer as work  # noqa: E402 - the same data and spec as the Trainer comparison
from machine import machine  # noqa: E402


def run(spec_dict: dict[str, Any]) -> dict[str, Any]:
    from ray import tune

    from tunefleet.search.sweep import run_sweep
    from tunefleet.spec import spec_from_dict

    class Evaluations(tune.Callback):
        def __init__(self) -> None:
            self.values: list[float] = []

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if result.get("val_f1") is not None and not result.get("diverged"):
                self.values.append(result["val_f1"])

    clock = Evaluations()
    summary = run_sweep(spec_from_dict(spec_dict), callbacks=[clock])
    return {"evaluations": clock.values, "best": max(clock.values, default=None),
            "trial_epochs": summary["trial_epochs"], "wall_seconds": summary["wall_seconds"],
            "warm_start": summary["warm_start"],
            "test_f1": summary["best"]["metrics"]["test"]["f1"] if summary["best"] else None}


def earlier(folder: Path, storage: Path) -> dict[str, Any]:
    """A finished first sweep (`--first-from`), put where the warm sweep finds it, and its figures:
    its evaluations in the order they came (by the time of each report; one trial ran at a time)."""
    import shutil

    (storage / folder.name).mkdir(parents=True)
    for name in ("summary.json", "trials.json"):
        shutil.copy(folder / name, storage / folder.name / name)
    summary = json.loads((folder / "summary.json").read_text())
    reports = [h for t in json.loads((folder / "trials.json").read_text()) for h in t["history"]
               if h.get("val_f1") is not None and not h.get("diverged")]
    values = [h["val_f1"] for h in sorted(reports, key=lambda h: (h["timestamp"], h["training_iteration"]))]
    return {"evaluations": values, "best": max(values), "trial_epochs": summary["trial_epochs"],
            "wall_seconds": summary["wall_seconds"], "warm_start": summary["warm_start"],
            "test_f1": summary["best"]["metrics"]["test"]["f1"], "from": str(folder)}


def epochs_to_reach(values: list[float], target: float) -> int | None:
    """Trial-epochs spent until the first evaluation at or above `target` (that one included)."""
    return next((i + 1 for i, value in enumerate(values) if value >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    work.add_work_arguments(parser)  # the data, space and sweep settings, as sweep_vs_trainer.py takes them
    parser.add_argument("--seeds", type=int, nargs=2, default=[0, 1], metavar=("FIRST", "SECOND"),
                        help="TPE seeds of the first sweep and of the warm and cold second sweeps")
    parser.add_argument("--first-from", metavar="FOLDER",
                        help="do not run the first sweep: take it from FOLDER, a finished sweep of the same work "
                             "(its summary.json and trials.json), e.g. to rerun only the second sweeps after a change")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold second sweep")
    parser.add_argument("--no-warm", action="store_true",
                        help="skip the warm second sweep, e.g. to add the cold one to a pair run with --no-cold")
    parser.add_argument("--out", metavar="FILE")
    args = parser.parse_args()
    if not work.CONLL.exists():
        sys.exit(f"{work.CONLL} not found: ../shared/data must lie beside the project")
    with tempfile.TemporaryDirectory(prefix="warm-start-") as folder:
        root = Path(folder)
        files = work.write_first_sentences(args, root / "data")
        args.data_dir = str(Path(files["train"]).parent)

        def spec(storage: str, seed: int, warm_start: str) -> dict[str, Any]:
            raw = work.sweep_spec(args, root / storage, seed)
            raw["search"]["warm_start"] = warm_start
            return raw

        first, second = args.seeds
        if args.first_from:
            sweeps = {"first": earlier(Path(args.first_from), root / "shared")}
        else:
            sweeps = {"first": run(spec("shared", first, "off"))}
        if not args.no_warm:
            sweeps["warm"] = run(spec("shared", second, "auto"))
        if not args.no_cold:
            sweeps["cold"] = run(spec("alone", second, "off"))
    target = sweeps["first"]["best"]
    for result in sweeps.values():
        result["trial_epochs_to_first_best"] = epochs_to_reach(result["evaluations"], target)
    work_done = ("train", "validation", "test", "trials", "epochs", "cpus", "precision", "seeds", "first_from",
                 "start_up_design")
    report = {"benchmark": "warm_start", "work": {k: getattr(args, k) for k in work_done},
              "cpu": machine(), "first_best": target, **sweeps}
    print("| sweep | starts from | best validation F1 | its test F1 | trial-epochs to the first's best | trial-epochs | wall |")
    print("|---|---|---|---|---|---|---|")
    for name, result in sweeps.items():
        print(f"| {name} | {result['warm_start']['trials_used']} earlier trials | {result['best']:.4f} | "
              f"{result['test_f1']:.4f} | {result['trial_epochs_to_first_best']} | {result['trial_epochs']} | "
              f"{result['wall_seconds']} s |")
    line = json.dumps(report)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
