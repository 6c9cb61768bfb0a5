"""What a user watches (`search/progress.py`, `search/logs.py`, `search/show.py`): the progress state
fed with hand-made trial events, the per-trial log files, `tunefleet show` on a running and a finished
sweep, and the console of a real sweep on a non-terminal stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_spec_dict
from tunefleet.search.progress import SweepState


def _state(tmp_path: Path, total: int = 4, budget: float | None = None) -> SweepState:
    return SweepState("demo-1234", tmp_path / "demo-1234", "val_accuracy", "max", total=total, concurrency=1,
                      time_budget=budget, planned_epochs=3)


def test_trial_events_become_counts_best_and_one_line_each(tmp_path):
    state = _state(tmp_path)
    state.start("a", {"train.lr": 1e-3, "train.epochs": 3})
    for epoch, value in ((1, 0.60), (2, 0.75), (3, 0.70)):
        state.result("a", {"epoch": epoch, "val_accuracy": value, "planned_epochs": 3})
    state.end("a")
    state.start("b", {"train.lr": 5e-3, "train.epochs": 3})
    state.result("b", {"epoch": 1, "val_accuracy": 0.55, "planned_epochs": 3})
    state.end("b")  # one epoch of three, no early stopping of its own: the scheduler stopped it
    state.start("c", {"train.lr": 2e-3, "train.epochs": 2})
    state.result("c", {"epoch": 1, "val_accuracy": 0.80, "planned_epochs": 2, "early_stopped": 1})
    state.end("c")  # its own patience ended it: completed, not stopped early
    state.start("d", {"train.lr": 1e-2})
    state.end("d", error="ValueError: loss is nan", log="/x/logs/d.log")

    assert state.counts() == {"completed": 2, "stopped_early": 1, "failed": 1, "running": 0, "interrupted": 0}
    assert state.best()[0] == "c" and state.best()[1]["best"] == 0.80
    assert "trial 1/4 a completed after 3 epoch(s): val_accuracy 0.7500" in state.event_line("a")
    assert "trial 2/4 b stopped early at epoch 1: val_accuracy 0.5500" in state.event_line("b")
    failed = state.event_line("d")
    assert "trial 4/4 d FAILED" in failed and "ValueError: loss is nan" in failed and "full log: /x/logs/d.log" in failed
    assert "best val_accuracy 0.8000 (trial c: lr=0.002, epochs=2)" in state.best_line()


def test_time_left_comes_from_the_ended_trials_and_the_budget(tmp_path):
    state = _state(tmp_path, total=5)
    now = time.time()
    for name in ("a", "b"):  # two trials of 60 s each have ended, three to go, one at a time
        state.start(name, {})
        state.trials[name] |= {"started": now - 60, "status": "running"}
        state.end(name)
        state.trials[name]["ended"] = now
    assert state.seconds_left() == pytest.approx(180, abs=2)
    state.start("c", {})
    state.trials["c"]["started"] = now - 30  # half way through (by the mean): 2.5 trials' time left
    assert state.seconds_left() == pytest.approx(150, abs=2)
    budgeted = _state(tmp_path, total=5, budget=100.0)
    budgeted.started = now - 40
    assert budgeted.seconds_left() == pytest.approx(60, abs=2)  # nothing ended yet: the budget alone


def test_status_file_is_what_show_reads_of_a_running_sweep(tmp_path):
    from tunefleet.search.show import find_sweep, show

    state = _state(tmp_path)
    state.start("a", {"train.lr": 1e-3})
    state.result("a", {"epoch": 1, "val_accuracy": 0.6})
    state.save()
    folder = find_sweep("demo-1234", storage=str(tmp_path))
    running = show(folder)
    assert running["state"] == "running"  # our pid is alive
    assert running["running"] == [{"trial_id": "a", "epoch": 1.0, "value": 0.6, "config": {"train.lr": 1e-3}}]
    status = json.loads((folder / "status.json").read_text())
    status["pid"] = _dead_pid()
    (folder / "status.json").write_text(json.dumps(status))
    stopped = show(folder)
    assert stopped["state"] == "stopped" and "--resume" in stopped["next"]
    with pytest.raises(ValueError, match="no sweep 'nope'.*sweeps there: demo-1234"):
        find_sweep("nope", storage=str(tmp_path))


def test_a_trial_log_gets_everything_its_process_writes(tmp_path):
    """print, a logging handler made before the redirect, and a C-level write to descriptor 2 all
    land in the trial's file; after it, the process writes where it did before."""
    script = f"""
import logging, os, sys
from pathlib import Path
from tunefleet.search.logs import trial_log
logging.basicConfig(stream=sys.stderr, level=logging.INFO)
with trial_log(Path({str(tmp_path)!r}), "t1"):
    print("from print")
    logging.getLogger("x").info("from logging")
    os.write(2, b"from fd 2\\n")
print("after the trial")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "logs" / "t1.log").read_text()
    for line in ("from print", "from logging", "from fd 2"):
        assert line in log
    assert "after the trial" not in log and "after the trial" in done.stdout
    assert "from print" in done.stderr  # copied to where the descriptors went before (Ray's worker log)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.slow
def test_on_a_terminal_the_view_updates_in_place(tiny_model, tmp_path, ray_cluster):
    """The CLI on a pseudo-terminal (stderr a tty): rich's live view redraws itself with cursor
    movements (ESC [ nA up, ESC [2K erase line) instead of printing new lines, and the JSON summary
    is still the last line of stdout."""
    import pty
    import re

    raw = tiny_spec_dict(tiny_model, tmp_path / "runs", name="live", train={"epochs": 2},
                         resources={"ray_address": ray_cluster.get_runtime_context().gcs_address},
                         search={"num_trials": 2, "max_concurrent": 1, "scheduler": "none",
                                 "space": {"train.lr": {"loguniform": [5e-4, 2e-3]}}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    import threading

    controller, terminal = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:  # read while the sweep runs: a full terminal buffer would block its writes
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal side is closed and drained
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    done = subprocess.run([sys.executable, "-m", "tunefleet.cli", "sweep", str(path)], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=terminal, cwd=tmp_path, timeout=600,
                          env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    os.close(terminal)
    reader.join(timeout=30)
    os.close(controller)
    screen = b"".join(chunks)
    assert done.returncode == 0, screen.decode(errors="replace")[-2000:]
    text = screen.decode(errors="replace")
    assert re.search(r"\x1b\[\d*A", text), "no cursor-up: the view was printed line after line"
    assert "\x1b[2K" in text  # lines erased and redrawn
    assert "2/2 done (2 completed, 0 stopped early, 0 failed)" in text
    assert json.loads(done.stdout.decode().strip().splitlines()[-1])["trials"]["completed"] == 2
