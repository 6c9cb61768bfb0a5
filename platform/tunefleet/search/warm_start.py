"""Warm start: a new sweep begins from what earlier sweeps of the same work already measured.

Every finished sweep writes, in its `summary.json`, the fingerprint of the work it searched: task,
model, data (the content of every split and the label set) and validation metric. A new sweep with
`search.warm_start: auto` reads the `trials.json` of every earlier sweep under the same storage
folder whose fingerprint equals its own, and hands their trials to Optuna as already-evaluated
points: a completed trial as COMPLETE with its best value, a trial a scheduler stopped as PRUNED
with its per-epoch values (how Optuna records a pruned trial of its own). TPE then models them from
its first proposal, and counts them towards its random start-up trials.

A point is used only where it means the same thing in the new sweep: its hyperparameters are
exactly the new space's, each inside the new range or among the new choices (a point outside would
make Optuna model a region the user no longer searches). Failed trials teach nothing and are left
out. Sweeps of other work (another model, other data, another metric) are never used by `auto`; a
sweep named in `search.warm_start` is used whatever its fingerprint, because the user asked.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import plugins
from ..spec import Spec
from .results import finite
from .space import value_inside

log = logging.getLogger("tunefleet.search")


@dataclass(frozen=True)
class EarlierTrial:
    """One trial of an earlier sweep, as Optuna is told about it."""

    params: dict[str, Any]
    value: float
    pruned: bool
    curve: list[float]  # its validation metric after each evaluation (Optuna's intermediate values)
    sweep: str


@dataclass
class WarmStart:
    """What a sweep takes from earlier sweeps, and what it left out and why (for the summary)."""

    trials: list[EarlierTrial] = field(default_factory=list)
    sweeps: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> trials

    def summary(self) -> dict[str, Any]:
        return {"trials_used": len(self.trials), "from": self.sweeps, "skipped": self.skipped}

    def _skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count


def fingerprint(spec: Spec, data_fingerprint: str) -> dict[str, str]:
    """What makes two sweeps' results comparable: the same task, model, data and metric."""
    return {"task": spec.task, "model": spec.model.name_or_path, "data": data_fingerprint,
            "metric": f"val_{spec.train.metric}"}


def earlier_trials(spec: Spec, sweep_dir: Path, own: dict[str, str]) -> WarmStart:
    """The earlier sweeps' trials a new sweep in `sweep_dir` starts from (`search.warm_start`).

    Args:
        own: this sweep's `fingerprint`.
    """
    setting = spec.search.warm_start
    found = WarmStart()
    if setting == "off" or not plugins.takes_earlier_trials(spec.search.algorithm):
        return found
    storage = sweep_dir.parent
    if setting == "auto":
        folders = [p.parent for p in sorted(storage.glob("*/summary.json")) if p.parent != sweep_dir]
    else:
        folders = [storage / name if not Path(name).is_absolute() else Path(name) for name in setting]
    for folder in folders:
        summary = _read_json(folder / "summary.json")
        trials = _read_json(folder / "trials.json")
        if summary is None or trials is None:
            if setting != "auto":
                raise FileNotFoundError(f"{spec.source}: search.warm_start names {folder.name}, but "
                                        f"{folder} holds no finished sweep (summary.json and trials.json); name "
                                        "a finished sweep's folder under resources.storage_path, or use auto")
            continue
        if setting == "auto" and summary.get("fingerprint") != own:
            found._skip("other task, model, data or metric", len(trials))
            continue
        used = 0
        for trial in trials:
            earlier = as_point(trial, spec, folder.name, found)
            if earlier is not None:
                found.trials.append(earlier)
                used += 1
        if used:
            found.sweeps.append(folder.name)
    if found.trials or found.skipped:
        log.info("search: warm start from %d earlier trial(s) of %s; skipped %s", len(found.trials),
                 ", ".join(found.sweeps) or "no sweep", found.skipped or "none")
    return found


def as_point(trial: dict[str, Any], spec: Spec, sweep: str, found: WarmStart) -> EarlierTrial | None:
    metric = f"val_{spec.train.metric}"
    value = trial.get("best_value")
    if trial.get("status") not in ("completed", "stopped_early") or not finite(value):
        found._skip("failed or never evaluated")
        return None
    space = spec.search.space
    params = trial.get("config") or {}
    if set(params) != set(space):
        found._skip("other hyperparameters searched")
        return None
    if not all(value_inside(space[path], params[path]) for path in space):
        found._skip("outside the space")
        return None
    curve = [h[metric] for h in trial.get("history", []) if finite(h.get(metric))]
    return EarlierTrial(params=params, value=float(value), pruned=trial["status"] == "stopped_early",
                        curve=curve, sweep=sweep)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
