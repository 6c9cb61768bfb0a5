"""Where a command's CPU time goes, by kind of process: run it and sample /proc once a second.

    python benchmarks/suite_cpu.py -- ./scripts/test.sh --durations=60

Every process on the machine is sampled (Ray's and MLflow's processes are not children of the
command), so run nothing else meanwhile. A process is counted under its Ray name (`ray::RayTrainWorker`,
`ray::ImplicitFunc` for a Tune trial), or under the program it runs (`gcs_server`, `mlflow`, `huey`,
`pytest`, ...), with the CPU seconds it had used when it was last seen: a process that lived less than
the sampling interval is missed, and up to a second of each one's end. The table goes to stdout, with
the total and the wall time; on 2 saturated cores the total is about twice the wall time.

This is how benchmarks/RESULTS.md found the suite's MLflow servers idling at half a core each (MLflow's
job runner) and Ray Train's per-run actors costing about 30 CPU-seconds a run.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")
# Checked in order; the first that occurs in a process's command line names its kind.
KINDS = ("huey", "_job_runner", "mlflow", "uvicorn", "gcs_server", "raylet", "dashboard", "log_monitor",
         "runtime_env", "postgres", "chrom", "pytest", "xdist", "tunefleet.cli")


def kind_of(command: str) -> str:
    if command.startswith("ray::"):
        return command.split()[0][:48]
    return next((kind for kind in KINDS if kind in command), command[:48] or "(kernel)")


def sample(seen: dict[tuple[str, str], tuple[float, str]]) -> None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                fields = stat.read().rsplit(")", 1)[1].split()
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # (pid, start time): a reused pid is another process. utime + stime, in clock ticks.
        key = (pid, fields[19])
        kind = kind_of(command) if command else seen.get(key, (0.0, "(kernel)"))[1]
        seen[key] = ((int(fields[11]) + int(fields[12])) / TICKS, kind)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    args = parser.parse_args()
    command = [part for part in args.command if part != "--"] or parser.error("give a command after --")
    seen: dict[tuple[str, str], tuple[float, str]] = {}
    sample(seen)
    before = dict(seen)
    started = time.monotonic()
    process = subprocess.Popen(command)
    while process.poll() is None:
        sample(seen)
        time.sleep(args.interval)
    sample(seen)
    wall = time.monotonic() - started
    totals, counts = collections.Counter(), collections.Counter()
    for key, (cpu, kind) in seen.items():
        totals[kind] += cpu - before.get(key, (0.0, kind))[0]
        counts[kind] += 1
    print(f"{'CPU s':>9} {'procs':>6}  kind")
    for kind, cpu in totals.most_common():
        if cpu >= 1.0:
            print(f"{cpu:9.1f} {counts[kind]:6d}  {kind}")
    print(f"{sum(totals.values()):9.1f} CPU-seconds in all, {wall:.0f} s wall; exit {process.returncode}")
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())
