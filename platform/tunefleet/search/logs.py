"""A sweep's messages go to files in its folder, not over the user's terminal.

- `<sweep>/logs/<trial id>.log`: everything a trial's process writes while it runs the trial: the
  loop's per-epoch lines, transformers' and Ray Train's messages, tracebacks. Redirected at the file
  descriptor level, so that C extensions and child threads land there too, and copied to what the
  descriptors were before (Ray's own worker log), so nothing is lost from there either.
- `<sweep>/logs/driver.log`: the driver's Python logging (tunefleet, Ray, Tune) at INFO.
The console shows a trial's messages only with `tunefleet -v` (Ray forwards worker output to the
driver only then, `cluster.init_ray(log_to_driver=...)`); without it, Ray's console handler shows
errors only, the progress view (`progress.py`) says what happens, and a failed trial's last error
line is shown with the path of its full log.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOGS = "logs"
# What the descriptors 1 and 2 were before any trial of this process redirected them. A process
# that runs several trials (Tune reuses it) always restores these, so that a trial Tune abandoned
# inside `report` (it never reaches its `finally`) cannot leave the next trial writing into its log.
_ORIGINAL: tuple[int, int] | None = None


@contextmanager
def trial_log(sweep_dir: Path, trial_id: str) -> Iterator[Path]:
    """Everything this process writes to stdout and stderr, into `<sweep>/logs/<trial_id>.log`
    (appended: a retried or resumed trial adds to its log) and to where it went before."""
    global _ORIGINAL
    path = Path(sweep_dir) / LOGS / f"{trial_id}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    if _ORIGINAL is None:
        _ORIGINAL = (os.dup(1), os.dup(2))
    read_end, write_end = os.pipe()
    copier = threading.Thread(target=_copy, args=(read_end, path, _ORIGINAL[1]), daemon=True, name="tunefleet-trial-log")
    copier.start()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # Pointing 1 and 2 back closes the pipe's last write ends: the copier reads to the end, stops.
        os.dup2(_ORIGINAL[0], 1)
        os.dup2(_ORIGINAL[1], 2)
        copier.join(timeout=10)


def _copy(read_end: int, path: Path, also: int) -> None:
    with open(path, "ab", buffering=0) as log:
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            log.write(chunk)
            try:
                os.write(also, chunk)
            except OSError:
                pass
    os.close(read_end)


class _Interrupted(logging.Filter):
    """Notices Tune's "Stop signal received" (the user pressed Ctrl-C) and drops Tune's hint to call
    `Tuner.restore(...)`: the sweep says what to run instead (`tunefleet sweep SPEC --resume`)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Stop signal received"):
            self.seen = True
            return False
        return "Tuner.restore(" not in message


class _OwnInfoOnly(logging.Filter):
    """On the console during a sweep: tunefleet's own INFO lines, and only warnings from others
    (MLflow's and its database migrations' INFO lines go to driver.log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith("tunefleet")


@contextmanager
def driver_log(sweep_dir: Path, verbose: bool = False) -> Iterator[_Interrupted]:
    """The driver's logging into `<sweep>/logs/driver.log` while the sweep runs; Ray's console
    handler shows only errors unless `verbose`. Yields the filter that tells whether the user
    interrupted the sweep."""
    path = Path(sweep_dir) / LOGS / "driver.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    interrupted = _Interrupted()
    tune_logger = logging.getLogger("ray.tune.tune")
    tune_logger.addFilter(interrupted)
    # Ray's and MLflow's loggers have console handlers of their own and do not propagate to the root.
    own_consoles = [logging.getLogger("ray"), logging.getLogger("mlflow")]
    loggers = [logging.getLogger(), *own_consoles]
    quieted = [] if verbose else [(h, h.level) for logger in own_consoles for h in logger.handlers if _console(h)]
    own_only = _OwnInfoOnly()
    consoles = [] if verbose else [h for h in logging.getLogger().handlers if _console(h)]
    levels = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    for console, _ in quieted:
        console.setLevel(logging.ERROR)
    # Ray Tune's console output (its experiment box and trial table) is replaced by the progress view;
    # the switch is read when a Tune run starts.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for console in consoles:
        console.addFilter(own_only)
    try:
        yield interrupted
    finally:
        for logger, level in levels:
            logger.removeHandler(handler)
            logger.setLevel(level)
        for console, level in quieted:
            console.setLevel(level)
        for console in consoles:
            console.removeFilter(own_only)
        tune_logger.removeFilter(interrupted)
        handler.close()


def _console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


@contextmanager
def sigint_restored() -> Iterator[None]:
    """Around a Tune run: Ctrl-C afterwards means what it meant before.

    Tune installs its own SIGINT handler for the run (first Ctrl-C: stop and save) and restores the
    previous one only when that handler fires; after a run that ended normally it stays installed, and
    a Ctrl-C while the sweep scores, registers or writes its report would be swallowed."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
