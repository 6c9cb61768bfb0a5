"""Where a sweep trial's start-up goes: CPU per Ray process, and each trial's first epoch against the rest.

    .venv/bin/python benchmarks/trial_startup.py [--trials 3]

Runs `tunefleet sweep` on a small spec (synthetic sentiment, bundled MiniLM, 3 epochs, random search,
one trial at a time on 1 worker x 2 CPUs, tracking off) while sampling every process's CPU time
from /proc every 0.2 s. Ray names its worker processes after the actor they host
(`ray::TrainController`, `ray::PlacementGroupCleaner`, ...), so the CPU each kind of helper costs
per trial can be read off. Extra environment (e.g. `RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=2`) passes
through to the sweep, to compare settings.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]


def spec(storage: Path, trials: int) -> dict:
    return {
        "name": "startup", "task": "text-classification",
        "data": {"format": "synthetic", "synthetic_size": 600},
        "model": {"name_or_path": "bundled-minilm", "max_length": 48},
        "train": {"epochs": 3, "batch_size": 32, "lr": 1.0e-4, "metric": "accuracy", "early_stopping_patience": None},
        "resources": {"workers": 1, "cpus_per_worker": 2, "storage_path": str(storage)},
        "tracking": {"enabled": False},
        "search": {"algorithm": "random", "scheduler": "none", "num_trials": trials, "max_concurrent": 1,
                   "space": {"train.lr": {"loguniform": [1.0e-5, 3.0e-4]}}},
    }


def sample(cpu: dict[int, tuple[str, float]], since: float) -> None:
    """Latest CPU seconds and name of every process started after `since`. A process keeps the
    first actor name it showed: at exit its title and command line go blank."""
    for proc in psutil.process_iter(["pid", "cmdline", "cpu_times", "create_time"]):
        try:
            if proc.info["create_time"] < since:
                continue
            title = " ".join(proc.info["cmdline"] or [])
            old = cpu.get(proc.info["pid"], ("", 0.0))[0]
            if old.startswith("ray::") and not title.startswith("ray::") or title.startswith("ray::IDLE"):
                title = old or title
            times = proc.info["cpu_times"]
            cpu[proc.info["pid"]] = (title, times.user + times.system)
        except (psutil.Error, TypeError):
            pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunefleet-startup-"))
    path = work / "spec.yaml"
    path.write_text(yaml.safe_dump(spec(work / "runs", args.trials)))
    cpu: dict[int, tuple[str, float]] = {}
    started = time.time()
    sweep = subprocess.Popen([str(Path(sys.executable).with_name("tunefleet")), "sweep", str(path)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while sweep.poll() is None:
        sample(cpu, started - 1)
        time.sleep(0.2)
    wall = time.time() - started
    if sweep.returncode != 0:
        sys.exit(f"tunefleet sweep failed with exit code {sweep.returncode}")
    summary = json.loads(sweep.stdout.read().strip().splitlines()[-1])
    trials = json.loads((Path(summary["storage"]) / "trials.json").read_text())
    times = [[h["time_this_iter_s"] for h in t["history"]] for t in trials]
    by_kind: dict[str, float] = collections.defaultdict(float)
    for title, seconds in cpu.values():
        # "ray::RayTrainWorker.shutdown" is still the worker.
        kind = title.split(" ")[0].split(".")[0] if title.startswith("ray::") else "other (driver, Ray's own daemons)"
        by_kind[kind] += seconds
    print(json.dumps({
        "command_wall_seconds": round(wall, 1),
        "sweep_wall_seconds": summary["wall_seconds"],
        "first_epoch_seconds": [round(t[0], 1) for t in times],
        "later_epoch_median_seconds": [round(statistics.median(t[1:]), 1) for t in times],
        "startup_seconds_per_trial": round(statistics.mean(t[0] - statistics.median(t[1:]) for t in times), 1),
        "cpu_seconds_per_trial": {kind: round(seconds / len(trials), 1)
                                  for kind, seconds in sorted(by_kind.items(), key=lambda kv: -kv[1])},
    }, indent=1))


if __name__ == "__main__":
    main()
