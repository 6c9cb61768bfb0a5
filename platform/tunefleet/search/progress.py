"""What a user watches while a sweep runs: one compact view, and `status.json` for `tunefleet show`.

A Tune callback on the driver follows every trial (started, each evaluation, ended) and shows:
- on a terminal, one view that updates in place (rich `Live`, on stderr): trials done out of the
  total (completed, stopped early, failed), the ones running with their epoch and latest metric,
  the best so far with its hyperparameters, elapsed time and an estimate of the time left;
- anywhere else (CI, a pipe, a scheduler's log), one short line per trial that ends, and one when
  the sweep starts and ends.
Either goes to stderr: stdout keeps the trial table and the JSON summary as its last line.

The same state is written to `<sweep>/status.json` at every event (atomically), so that `tunefleet
show` can tell how far a running sweep is from another shell. Ray Tune's own trial table is off
(`verbose=0`); Ray's and the trials' messages go to the sweep's log files (`search/logs.py`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from .results import config_text, finite

STATUS_FILE = "status.json"
_STREAMS: dict[str, Any] = {}  # progress views' streams, by key (see `sweep_progress`)
# This process's state of each sweep (by its folder): what a progress callback feeds. A resumed sweep's
# callback is the copy Tune unpickled from the first run's tuner.pkl, state included; looked up here
# (`_current_state`) it feeds the state of the process that resumed, which `run_sweep` reads.
_STATES: dict[str, "SweepState"] = {}


class SweepState:
    """The sweep as the progress view and `status.json` see it, fed by Tune's trial events."""

    def __init__(self, name: str, sweep_dir: Path, metric: str, mode: str, total: int, concurrency: int,
                 time_budget: float | None = None, planned_epochs: int = 1):
        self.name, self.sweep_dir, self.metric, self.mode = name, sweep_dir, metric, mode
        self.total, self.concurrency, self.time_budget = total, max(1, concurrency), time_budget
        self.planned_epochs = planned_epochs
        self.started = time.time()
        self.trials: dict[str, dict[str, Any]] = {}  # trial id -> status, epoch, value, best, config, times
        self.state = "running"

    # ---- events -----------------------------------------------------------------------------------
    def start(self, trial_id: str, config: dict[str, Any]) -> None:
        entry = self.trials.setdefault(trial_id, {"number": len(self.trials) + 1, "best": None, "value": None,
                                                  "epoch": 0.0, "started": time.time()})
        entry |= {"status": "running", "config": _plain(config)}
        for key in ("ended", "error", "log"):  # a trial restarted by --resume (or a retry) runs again
            entry.pop(key, None)

    def carry_over(self) -> None:
        """A resumed sweep: the trials of the run it continues, from that run's `status.json`. Tune
        sends no events for the trials that ended before the interruption, so without them the
        counts, the best and the view would cover only what runs after the resume.

        The file is moved aside (to `status.json.resumed`) until this run writes its own: Tune's
        restore copies every *.json of the run's folder to its staging folder and copies them back at
        each snapshot, which would put the interrupted run's status back over this run's again and again.
        """
        path = self.sweep_dir / STATUS_FILE
        aside = path.with_name(f"{STATUS_FILE}.resumed")  # also what a resume that failed early left
        if path.exists():
            path.replace(aside)
        try:
            saved = json.loads(aside.read_text())
        except (OSError, ValueError):
            return
        now = time.time()
        for trial_id, t in (saved.get("trials") or {}).items():
            entry = {k: v for k, v in t.items() if k != "seconds"} | {"started": now - float(t.get("seconds") or 0.0)}
            if entry.get("status") in ("running", "interrupted"):
                entry["status"] = "interrupted"  # until Tune starts it again
            else:
                entry["ended"] = now
            self.trials[trial_id] = entry

    def result(self, trial_id: str, result: dict[str, Any]) -> None:
        entry = self.trials.setdefault(trial_id, {"number": len(self.trials) + 1, "best": None, "started": time.time(),
                                                  "status": "running", "config": {}})
        value = result.get(self.metric)
        if finite(value) and not result.get("diverged"):
            entry["value"] = value
            entry["best"] = value if entry["best"] is None else _better(self.mode)(entry["best"], value)
        entry["epoch"] = float(result.get("epoch", entry.get("epoch", 0.0)))
        entry["planned"] = result.get("planned_epochs", entry.get("planned"))
        entry["early_stopped"] = bool(result.get("early_stopped"))
        if result.get("diverged"):
            entry["error"] = str(result.get("diverged_reason") or "diverged")

    def end(self, trial_id: str, error: str | None = None, log: str | None = None) -> dict[str, Any]:
        entry = self.trials.setdefault(trial_id, {"number": len(self.trials) + 1, "best": None, "epoch": 0.0,
                                                  "started": time.time(), "config": {}})
        entry["ended"] = time.time()
        planned = (entry.get("config") or {}).get("train.epochs") or entry.get("planned") or self.planned_epochs
        if error is not None or entry.get("error"):
            entry |= {"status": "failed", "error": error or entry.get("error"), "log": log}
        elif entry.get("epoch", 0.0) < planned and not entry.get("early_stopped"):
            # Fewer epochs than planned without its own early stopping: the scheduler stopped it.
            entry["status"] = "stopped_early"
        else:
            entry["status"] = "completed"
        return entry

    def interrupted(self) -> None:
        """Ctrl-C: the trials still running are interrupted, not stopped early; --resume finishes them."""
        self.state = "interrupted"
        for entry in self.trials.values():
            if entry.get("status") == "running":
                entry["status"] = "interrupted"

    # ---- views ------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        statuses = [t.get("status") for t in self.trials.values()]
        return {s: statuses.count(s) for s in ("completed", "stopped_early", "failed", "running", "interrupted")}

    def best(self) -> tuple[str, dict[str, Any]] | None:
        scored = [(tid, t) for tid, t in self.trials.items() if finite(t.get("best"))]
        if not scored:
            return None
        pick = max if self.mode == "max" else min
        return pick(scored, key=lambda item: item[1]["best"])

    def elapsed(self) -> float:
        return time.time() - self.started

    def seconds_left(self) -> float | None:
        """From the trials left and the mean length of the ended ones (running trials' progress
        counted), capped by the time budget; None until a trial has ended."""
        ended = [t for t in self.trials.values() if t.get("ended")]
        by_budget = None if self.time_budget is None else max(0.0, self.time_budget - self.elapsed())
        if not ended:
            return by_budget
        mean = sum(t["ended"] - t["started"] for t in ended) / len(ended)
        remaining = self.total - len(ended)
        running = [t for t in self.trials.values() if t.get("status") == "running"]
        done_share = sum(min(1.0, (time.time() - t["started"]) / mean) for t in running) if mean > 0 else 0.0
        estimate = max(0.0, (remaining - done_share) * mean / self.concurrency)
        return estimate if by_budget is None else min(estimate, by_budget)

    def status(self) -> dict[str, Any]:
        best = self.best()
        return {
            "sweep": self.name, "state": self.state, "pid": os.getpid(), "metric": self.metric, "mode": self.mode,
            "started": _clock(self.started), "updated": _clock(time.time()), "elapsed_seconds": round(self.elapsed(), 1),
            "seconds_left": _round(self.seconds_left()), "total": self.total, "counts": self.counts(),
            "best": None if best is None else {"trial_id": best[0], "value": best[1]["best"], "config": best[1].get("config")},
            "trials": {tid: {k: v for k, v in t.items() if k not in ("started", "ended")} |
                       {"seconds": round((t.get("ended") or time.time()) - t["started"], 1)}
                       for tid, t in self.trials.items()},
        }

    def save(self) -> None:
        """`status.json`, replaced atomically: a reader never sees half a file."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        partial = self.sweep_dir / f".{STATUS_FILE}.{os.getpid()}"
        partial.write_text(json.dumps(self.status(), indent=1, default=str))
        partial.replace(self.sweep_dir / STATUS_FILE)

    def headline(self) -> str:
        c = self.counts()
        done = c["completed"] + c["stopped_early"] + c["failed"]
        left = self.seconds_left()
        parts = [f"{done}/{self.total} done ({c['completed']} completed, {c['stopped_early']} stopped early, "
                 f"{c['failed']} failed)", f"{c['running']} running", f"elapsed {_duration(self.elapsed())}"]
        if left is not None and self.state == "running":
            parts.append(f"~{_duration(left)} left")
        return " | ".join(parts)

    def best_line(self) -> str:
        best = self.best()
        if best is None:
            return f"best {self.metric}: none yet"
        return f"best {self.metric} {best[1]['best']:.4f} (trial {best[0]}: {config_text(best[1].get('config') or {})})"

    def event_line(self, trial_id: str) -> str:
        """One line for a trial that ended, for logs and pipes."""
        t = self.trials[trial_id]
        what = {"completed": f"completed after {t['epoch']:g} epoch(s)",
                "stopped_early": f"stopped early at epoch {t['epoch']:g}",
                "failed": "FAILED"}.get(t["status"], t["status"])
        value = "" if t.get("best") is None else f": {self.metric} {t['best']:.4f}"
        line = f"[{_duration(self.elapsed())}] trial {t['number']}/{self.total} {trial_id} {what}{value} | {self.best_line()}"
        left = self.seconds_left()
        if left is not None:
            line += f" | ~{_duration(left)} left"
        if t["status"] == "failed":
            line += f"\n    {t.get('error') or 'no error message'}" + (f"\n    full log: {t['log']}" if t.get("log") else "")
        return line

    def table(self) -> Any:
        """The live view: headline, best, and one row per running trial."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        running = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        for column in ("running trial", "epoch", self.metric, "hyperparameters"):
            running.add_column(column)
        for tid, t in self.trials.items():
            if t.get("status") == "running":
                planned = (t.get("config") or {}).get("train.epochs") or t.get("planned") or self.planned_epochs
                value = "" if t.get("value") is None else f"{t['value']:.4f}"
                running.add_row(tid, f"{t.get('epoch', 0):g}/{planned}", value, config_text(t.get("config") or {}))
        return Group(Text(f"sweep {self.name}: {self.headline()}", style="bold"), Text(self.best_line()), running)


def sweep_progress(state: SweepState, stream: TextIO | None = None, live: bool | None = None) -> Any:
    """The Tune callback that feeds `state`, saves `status.json` and shows the progress.

    Args:
        stream: where the view goes (default stderr).
        live: an in-place view (default: when `stream` is a terminal); else one line per trial event.
    """
    from ray.tune import Callback

    # Tune pickles its callbacks (by value: this class is local) with the experiment's state, so the
    # stream and the state are looked up by key in this process: a resumed sweep runs the callback
    # Tune unpickled, whose closure holds the first run's state as it was when Tune pickled it.
    key = str(state.sweep_dir)
    _STREAMS[key] = stream
    _STATES[key] = state

    class _Progress(Callback):
        def __init__(self) -> None:
            self.live = None

        # The live view stays out of the pickled state too; a restored copy writes to stderr.
        def __getstate__(self) -> dict[str, Any]:
            return {}

        def __setstate__(self, saved: dict[str, Any]) -> None:
            self.live = None

        @property
        def state(self) -> SweepState:
            return _current_state(key) or state

        @property
        def out(self) -> TextIO:
            return _current_stream(key) or sys.stderr

        @property
        def in_place(self) -> bool:
            return self.out.isatty() if live is None else live

        def setup(self, **info: Any) -> None:
            self.state.save()
            if self.in_place:
                from rich.console import Console
                from rich.live import Live

                self.live = Live(self.state.table(), console=Console(file=self.out), refresh_per_second=2,
                                 transient=False)
                self.live.start()
            else:
                state = self.state
                print(f"sweep {state.name}: {state.total} trial(s), {state.concurrency} at a time; "
                      f"logs in {state.sweep_dir / 'logs'}", file=self.out, flush=True)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.state.start(trial.trial_id, trial.config or {})
            self._changed()

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.state.result(trial.trial_id, result)
            self._changed()

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.state.end(trial.trial_id)
            self._ended(trial.trial_id)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.state.end(trial.trial_id, error=_error_line(trial),
                           log=_trial_log(self.state.sweep_dir, trial.trial_id))
            self._ended(trial.trial_id)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self.close()

        def _changed(self) -> None:
            self.state.save()
            if self.live is not None:
                self.live.update(self.state.table())

        def _ended(self, trial_id: str) -> None:
            self._changed()
            line = self.state.event_line(trial_id)
            if self.live is not None:
                # Above the live view, where it stays: a record of each trial on the terminal too.
                self.live.console.print(line, highlight=False)
            else:
                print(line, file=self.out, flush=True)

        def close(self) -> None:
            if self.live is not None:
                self.live.update(self.state.table())
                self.live.stop()
                self.live = None

    return _Progress()


# The callback reads the registries through these module-level functions, never by naming them: Tune
# pickles the callback's class (local, so by value) with a *copy* of every module global its methods
# name, and a restored copy would read the first run's dicts. Functions are pickled by reference.
def _current_state(key: str) -> SweepState | None:
    return _STATES.get(key)


def _current_stream(key: str) -> TextIO | None:
    return _STREAMS.get(key)


def _error_line(trial: Any) -> str:
    """The last line of the trial's error (Tune writes the whole traceback to its error file)."""
    path = getattr(trial, "error_file", None) or getattr(trial, "error_filename", None)
    try:
        lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except (OSError, TypeError):
        return "the trial failed; see its log"
    return lines[-1][:500] if lines else "the trial failed; see its log"


def _trial_log(sweep_dir: Path, trial_id: str) -> str | None:
    path = sweep_dir / "logs" / f"{trial_id}.log"
    return str(path) if path.exists() else None


def _better(mode: str) -> Any:
    return max if mode == "max" else min


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in config.items()}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _clock(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
