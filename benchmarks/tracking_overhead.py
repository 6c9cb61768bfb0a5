"""Tracking overhead: the same small training run with and without MLflow logging.

Runs `tunefleet train`'s code path (`run_train`) alternately with `tracking.enabled=false` and with
tracking into a fresh SQLite store (or `--tracking-uri`, e.g. a real `mlflow server`), and reports
per mode the median fit time (`train_seconds`: the Ray Train run, where rank 0 logs each evaluation
through `RunLogger`) and the median wall time (which adds creating the run, params, test metrics
and artifacts on the driver).

    .venv/bin/python benchmarks/tracking_overhead.py                      # demo spec, 1 epoch, 3 repeats
    .venv/bin/python benchmarks/tracking_overhead.py --repeats 5 --set train.eval_every_steps=2

The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "search_spaces" / "demo.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tracking-uri", help="default: a fresh SQLite store in a temporary folder")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tunefleet.spec import load_spec
    from tunefleet.cluster import start_ray
    from tunefleet.search.single import run_train

    work = Path(tempfile.mkdtemp(prefix="tunefleet-bench-"))
    uri = args.tracking_uri or f"sqlite:///{work / 'mlflow.db'}"
    base = ["train.epochs=1", "data.synthetic_size=300", f"resources.storage_path={work / 'runs'}", *args.overrides]
    specs = {
        "off": load_spec(args.spec, [*base, "tracking.enabled=false"]),
        "mlflow": load_spec(args.spec, [*base, "tracking.enabled=true", f"tracking.uri={uri}"]),
    }
    start_ray(specs["off"])
    run_train(specs["off"], run_name="warmup")  # tokenizer cache, Ray workers, page cache
    times: dict[str, dict[str, list[float]]] = {mode: {"train_seconds": [], "wall_seconds": []} for mode in specs}
    for repeat in range(args.repeats):
        for mode, spec in specs.items():
            started = time.perf_counter()
            summary = run_train(spec, run_name=f"bench-{mode}-{repeat}")
            times[mode]["wall_seconds"].append(time.perf_counter() - started)
            times[mode]["train_seconds"].append(summary["train_seconds"])
            print(f"{mode:6s} repeat {repeat}: train {summary['train_seconds']:.2f}s wall "
                  f"{times[mode]['wall_seconds'][-1]:.2f}s", file=sys.stderr, flush=True)
    medians = {mode: {k: round(statistics.median(v), 2) for k, v in t.items()} for mode, t in times.items()}
    result = {
        "spec": args.spec, "overrides": base, "repeats": args.repeats, "tracking_uri": uri, "median": medians,
        "overhead_train_seconds": round(medians["mlflow"]["train_seconds"] - medians["off"]["train_seconds"], 2),
        "overhead_wall_seconds": round(medians["mlflow"]["wall_seconds"] - medians["off"]["wall_seconds"], 2),
        "raw": times,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
