"""Seeds for the finalists (`search.final_seeds: k`, `search.final_top: n`): after the search, the best
configuration (or the n best) is trained again with k other seeds.

A sweep picks its best trial by one validation score, and the maximum of many noisy scores is
optimistic: the same hyperparameters with another seed often score a point lower (or higher). The
retrained seeds say what a configuration is worth: their mean and spread (sample standard deviation)
are in the summary's `final_seeds`, on the parent MLflow run and on the registered version. With
n > 1 finalists, the one with the best mean over its retrained seeds wins, not the luckiest single
run. The model registered is that finalist's best run by validation score (its search trial or one
of its retrained seeds), with the figures attached.

The retrained runs are a Tune run of their own, `<run>/finalists-<i>/` for finalist i, one trial per
seed with the finalist's hyperparameters fixed (`train.seed` the only thing that varies; seeds are
the spec's seed + 1..k, so a sweep is repeatable). They train exactly like the search's trials
(`run_trial`), log as child runs of the sweep's parent run, and keep their checkpoints until the
winner is known; the others' are then removed.
"""

from __future__ import annotations

import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..spec import Spec
from .results import TrialRecord, collect_trials, finite

RUN_PREFIX = "finalists-"


@dataclass
class Finalist:
    """One finalist configuration: the search trial it came from and its retrained seeds."""

    trial: TrialRecord
    seeds: dict[int, TrialRecord] = field(default_factory=dict)  # seed -> the retrained run

    def values(self) -> list[float]:
        return [t.best_value for t in self.seeds.values() if finite(t.best_value)]

    def mean(self) -> float | None:
        values = self.values()
        return statistics.fmean(values) if values else None

    def spread(self) -> float | None:
        values = self.values()
        return statistics.stdev(values) if len(values) >= 2 else None

    def best_run(self, mode: str) -> TrialRecord | None:
        """Its best run by validation score with a checkpoint: the search trial or a retrained seed;
        None if none has one.

        A checkpoint counts only while its folder is complete on disk: the search's janitor keeps a
        finished trial's checkpoint only while that trial is the best so far, so a finalist other than
        the search's best has a `checkpoint` path whose folder is gone.
        """
        runs = [t for t in (self.trial, *self.seeds.values()) if finite(t.best_value) and _kept(t.checkpoint)]
        return (max if mode == "max" else min)(runs, key=lambda t: t.best_value) if runs else None

    def summary(self, mode: str) -> dict[str, Any]:
        best = self.best_run(mode) or self.trial
        return {"trial_id": self.trial.trial_id, "config": self.trial.config, "search_value": self.trial.best_value,
                "seeds": {str(seed): t.best_value for seed, t in self.seeds.items()},
                "failed_seeds": [seed for seed, t in self.seeds.items() if not finite(t.best_value)],
                "mean": self.mean(), "std": self.spread(), "best_run": best.trial_id,
                "best_value": best.best_value}


def finalist_trials(trials: list[TrialRecord], mode: str, top: int) -> list[TrialRecord]:
    """The `top` best trials by validation score, completed ones first (a trial a scheduler stopped
    was judged on fewer epochs than it would train again)."""
    sign = -1.0 if mode == "max" else 1.0
    scored = [t for t in trials if finite(t.best_value) and t.status != "failed"]
    ranked = sorted(scored, key=lambda t: (t.status != "completed", sign * t.best_value))
    return ranked[:top]


def seeds_for(spec: Spec) -> list[int]:
    """The k retraining seeds: the spec's training seed + 1..k (never the searched trials' own)."""
    return [spec.train.seed + i for i in range(1, spec.search.final_seeds + 1)]


def retrain_finalists(spec: Spec, run_dir: Path, trials: list[TrialRecord], metric: str, mode: str,
                      fit: Callable[[Path, dict[str, Any]], Any]) -> list[Finalist]:
    """Train each finalist again with `seeds_for(spec)`.

    Args:
        run_dir: the sweep's run that just finished (its folder); finalist i runs in
            `run_dir/finalists-<i>`.
        fit: runs one Tune run in the given folder over the given `param_space` and returns its
            ResultGrid (the sweep's own trainable, resources and tracking: `sweep._fit_finalist`).
    """
    from ray import tune

    finalists = []
    for number, trial in enumerate(finalist_trials(trials, mode, spec.search.final_top), start=1):
        folder = run_dir / f"{RUN_PREFIX}{number}"
        shutil.rmtree(folder, ignore_errors=True)  # a previous attempt that did not finish: start again
        fixed = {key: value for key, value in trial.config.items() if key != "train.seed"}
        grid = fit(folder, {**fixed, "train.seed": tune.grid_search(seeds_for(spec))})
        retrained = collect_trials(grid, spec, metric, mode)
        finalists.append(Finalist(trial, {int(t.config["train.seed"]): t for t in retrained}))
    return finalists


def choose(finalists: list[Finalist], mode: str) -> Finalist | None:
    """The finalist with the best mean over its retrained seeds."""
    measured = [f for f in finalists if f.mean() is not None]
    if not measured:
        return None
    return (max if mode == "max" else min)(measured, key=lambda f: f.mean())


def drop_other_checkpoints(finalists: list[Finalist], keep: TrialRecord) -> None:
    """Disk stays bounded: of all the retrained runs only the registered one keeps its checkpoint."""
    for finalist in finalists:
        for run in finalist.seeds.values():
            if run is not keep and run.checkpoint and Path(run.checkpoint).is_dir():
                shutil.rmtree(run.checkpoint, ignore_errors=True)


def _kept(checkpoint: str | None) -> bool:
    """A checkpoint folder still there with its metadata (`pick_best` asks the same)."""
    from ..train.checkpoint import META_FILE

    return bool(checkpoint) and (Path(checkpoint) / META_FILE).is_file()
