"""Tasks by name. An unknown name lists the valid ones."""

from __future__ import annotations

from .base import IGNORE, Task, TokenizedSplit
from .classification import TextClassification
from .ner import TokenClassification, align_labels

TASKS: dict[str, type] = {
    TokenClassification.name: TokenClassification,
    TextClassification.name: TextClassification,
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]()
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None


__all__ = ["IGNORE", "TASKS", "Task", "TokenizedSplit", "TextClassification", "TokenClassification",
           "align_labels", "get_task"]
