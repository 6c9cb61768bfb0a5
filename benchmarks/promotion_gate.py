"""Does the promotion gate promote seed noise? The paired gate against the old fixed margin.

    .venv/bin/python benchmarks/promotion_gate.py [--train 2000] [--seeds 10] [--spread-seeds 4] [--out FILE]

On the first N CoNLL-2003 training sentences with the bundled MiniLM (batch 16, lr 1e-4, the whole
CoNLL test split of 3,453 sentences as the test set):
- a champion: one epoch, seed 0, whose seed-to-seed spread is measured as `search.final_seeds`
  measures it: the same recipe with `--spread-seeds` other seeds (101, 102, ...), the sample
  standard deviation of their validation F1;
- `--seeds` challengers that differ from it only by the seed (one epoch, seeds 1..N);
- one challenger trained clearly better: three epochs, seed 0.
Each gate decides the same sequence as a recurring sweep would meet it (champion, then the
challengers in order, a promoted one becoming the champion the next one faces), all at margin 0:
- `margin`: test F1 against the champion's (the gate before);
- `paired, test set only`: the paired bootstrap without seed noise (what the gate does when no
  spread was measured);
- `paired + seed noise`: the paired bootstrap with the champion's measured spread, run through the
  real registry on SQLite (`register_checkpoint`, `tracking.promotion_gate: bootstrap`).
Reported: seed-only challengers each gate promoted, whether the three-epoch one was promoted, every
model's test F1, and every challenger's paired interval against the first champion. The issue's
target: at most one seed-only challenger promoted, the three-epoch one promoted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sweep_vs_trainer as work  # noqa: E402 - the same CoNLL subset and model as the sweep benchmarks
from machine import machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--validation", type=int, default=500)
    parser.add_argument("--test", type=int, default=3453, help="test sentences (3,453: all of CoNLL's test split)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--spread-seeds", type=int, default=4, help="seeds that measure the champion's spread")
    parser.add_argument("--lr", type=float, default=1.0e-4)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--out", metavar="FILE")
    args = parser.parse_args()
    if not work.CONLL.exists():
        sys.exit(f"{work.CONLL} not found: ../shared/data must lie beside the project")
    from tunefleet.data.load import split_fingerprint
    from tunefleet.spec import spec_from_dict
    from tunefleet.tasks import get_task
    from tunefleet.tracking.paired import compare, example_record
    from tunefleet.tracking.registry import register_checkpoint
    from tunefleet.train.launch import prepare_data, score_checkpoint_examples
    from tunefleet.train.local import train_local

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="promotion-gate-") as folder:
        root = Path(folder)
        files = work.write_first_sentences(args, root / "data")
        base = {
            "name": "promotion-gate", "task": work.TASK,
            "data": {"format": "conll", "train": files["train"], "validation": files["validation"], "test": files["test"]},
            "model": {"name_or_path": work.MODEL, "max_length": work.MAX_LENGTH},
            "train": {"epochs": 1, "batch_size": work.BATCH_SIZE, "lr": args.lr, "weight_decay": 0.01, "dropout": 0.1,
                      "metric": "f1", "precision": args.precision, "early_stopping_patience": None},
            "tracking": {"enabled": False},
        }
        prepared = prepare_data(spec_from_dict(base))
        names = prepared.splits.label_names
        fingerprint = split_fingerprint(prepared.splits.test, names)
        task = get_task(work.TASK)
        spread_runs = [(f"spread seed {100 + i}", 100 + i, 1) for i in range(1, args.spread_seeds + 1)]
        runs = [("champion", 0, 1)] + [(f"seed {seed}", seed, 1) for seed in range(1, args.seeds + 1)] + \
            [("3 epochs", 0, 3)] + spread_runs
        models = []
        for label, seed, epochs in runs:
            spec = spec_from_dict(base | {"train": base["train"] | {"seed": seed, "epochs": epochs}})
            trained = train_local(spec, root / "runs" / label.replace(" ", "-"), prepared=prepared)
            test, predicted = score_checkpoint_examples(trained["checkpoint"], prepared.tokenized["test"], 64)
            record = example_record(task, prepared.tokenized["test"], predicted, names, fingerprint)
            models.append({"label": label, "seed": seed, "epochs": epochs, "checkpoint": trained["checkpoint"],
                           "test_f1": test["f1"], "validation_f1": trained["metrics"]["validation"]["f1"], "record": record})
            print(f"{label}: test F1 {test['f1']:.4f}", file=sys.stderr, flush=True)
        import statistics

        spread = statistics.stdev(m["validation_f1"] for m in models if m["label"].startswith("spread"))
        sequence = [m for m in models if not m["label"].startswith("spread")]
        decisions = {"margin": _sequence(sequence, lambda champ, new: new["test_f1"] > champ["test_f1"]),
                     "paired, test set only": _sequence(sequence, lambda champ, new: compare(
                         champ["record"], new["record"], "f1", "max", 0.95).lower_bound > 0.0)}
        uri = f"sqlite:///{root / 'mlflow.db'}"
        decisions["paired + seed noise"] = []
        for model in sequence:
            result = register_checkpoint(model["checkpoint"], "gate", {"f1": model["test_f1"]}, tracking_uri=uri,
                                         test_predictions=model["record"], gate="bootstrap", confidence=0.95,
                                         margin=0.0, seed_std=spread if model["label"] == "champion" else None)
            decisions["paired + seed noise"].append({"label": model["label"], "promoted": result["promoted"]["promoted"],
                                                     "reason": result["promoted"]["reason"]})
        champion = models[0]
        against_first = []
        for model in sequence[1:]:
            paired = compare(champion["record"], model["record"], "f1", "max", 0.95)
            against_first.append({"label": model["label"], "test_f1": round(model["test_f1"], 4),
                                  "advantage": round(paired.advantage, 4), "lower_bound": round(paired.lower_bound, 4),
                                  "interval": [round(v, 4) for v in paired.interval]})

    def count(gate: str, which: str) -> int:
        rows = decisions[gate][1:-1] if which == "seeds" else decisions[gate][-1:]
        return sum(row["promoted"] for row in rows)

    seed_f1 = [m["test_f1"] for m in sequence[:-1]]
    report = {
        "benchmark": "promotion_gate",
        "work": {"train": args.train, "validation": args.validation, "test": len(champion["record"]["gold"]),
                 "seeds": args.seeds, "lr": args.lr, "model": work.MODEL, "batch_size": work.BATCH_SIZE},
        "machine": machine(),
        "test_f1": {m["label"]: round(m["test_f1"], 4) for m in models},
        "seed_spread": {"test_f1_min": round(min(seed_f1), 4), "test_f1_max": round(max(seed_f1), 4),
                        "test_f1_std": round(statistics.stdev(seed_f1), 4),
                        "champion_measured_validation_std": round(spread, 4), "measured_with_seeds": args.spread_seeds},
        "promoted": {gate: {"seed_only_challengers": count(gate, "seeds"), "of": args.seeds,
                            "three_epochs": bool(count(gate, "better"))} for gate in decisions},
        "decisions": decisions,
        "against_first_champion": against_first,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


def _sequence(models: list[dict[str, Any]], better: Any) -> list[dict[str, Any]]:
    """Each model against the champion of the moment; a promoted one becomes the champion."""
    champion, out = models[0], [{"label": models[0]["label"], "promoted": True, "reason": "first"}]
    for model in models[1:]:
        promoted = bool(better(champion, model))
        out.append({"label": model["label"], "promoted": promoted})
        champion = model if promoted else champion
    return out


if __name__ == "__main__":
    main()
