"""Tasks: everything task-specific, one module per task, found by name in `tunefleet.plugins.TASKS`.

The protocol every task implements is `base.Task`. Nothing outside this package (and the registry)
names a task: the data readers, the training loop, `Predictor`, the pyfunc and the Serve app ask the
task object instead.
"""

from __future__ import annotations

from .. import plugins
from .base import IGNORE, PAIR, TEXT, TEXT_OR_PAIR, WORDS, Task, TokenizedSplit


def get_task(name: str) -> Task:
    """The task registered under `name`.

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    return plugins.load("task", name)()


__all__ = ["IGNORE", "PAIR", "TEXT", "TEXT_OR_PAIR", "WORDS", "Task", "TokenizedSplit", "get_task"]
