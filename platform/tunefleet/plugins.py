"""The one registry of plug-ins: tasks, search algorithms and trial schedulers, found by name.

Each entry maps a name to `module:attribute`, imported only when that plug-in is used, so naming a
plug-in costs nothing (the spec validates names against these tables) and a heavy optional library
loads only for the sweep that asks for it. An unknown name lists the valid ones.

Adding a task is one file in `tasks/` and one line in `TASKS`; nothing else in the package names a
task. Searchers and schedulers are builders in `search/searchers.py` and `search/schedulers.py`.
`tests/contracts/` runs one contract test over every entry of each table.

Within tunefleet this module imports nothing at import time.
"""

from __future__ import annotations

import importlib
from typing import Any

TASKS: dict[str, str] = {
    "token-classification": "tunefleet.tasks.ner:TokenClassification",
    "text-classification": "tunefleet.tasks.classification:TextClassification",
    "text-pair-classification": "tunefleet.tasks.pair_classification:TextPairClassification",
    "text-regression": "tunefleet.tasks.regression:TextRegression",
    "multi-label-classification": "tunefleet.tasks.multilabel:MultiLabelClassification",
}

SEARCHERS: dict[str, str] = {
    "optuna": "tunefleet.search.searchers:optuna_tpe",
    "random": "tunefleet.search.searchers:random_search",
    "grid": "tunefleet.search.searchers:grid_search",
}

SCHEDULERS: dict[str, str] = {
    "asha": "tunefleet.search.schedulers:asha",
    "hyperband": "tunefleet.search.schedulers:hyperband",
    "median": "tunefleet.search.schedulers:median_stopping",
    "none": "tunefleet.search.schedulers:fifo",
}

_KINDS = {"task": TASKS, "search algorithm": SEARCHERS, "scheduler": SCHEDULERS}


class UnknownPlugin(ValueError):
    """A name that is not in its table; the message lists the valid names."""


def load(kind: str, name: str) -> Any:
    """The object registered under `name` in the `kind` table ("task", "search algorithm", "scheduler").

    Raises:
        UnknownPlugin: naming the valid names.
    """
    table = _KINDS[kind]
    if name not in table:
        raise UnknownPlugin(f"unknown {kind} {name!r}; use one of {', '.join(table)}")
    module, _, attribute = table[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def takes_earlier_trials(algorithm: str) -> bool:
    """Whether the search algorithm registered under `algorithm` can start from earlier sweeps'
    trials (`search.warm_start`): its builder says so with `takes_earlier_trials = True`."""
    return algorithm in SEARCHERS and getattr(load("search algorithm", algorithm), "takes_earlier_trials", False)
