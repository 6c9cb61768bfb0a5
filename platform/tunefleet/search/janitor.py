"""Keeps a sweep's disk use bounded while it runs: a trial a scheduler stopped loses its
checkpoints at once (unless `search.keep_stopped_checkpoints`), and of the trials that completed only
the best so far keeps its checkpoints. A Tune callback on the driver, built lazily so that importing
this module does not import Ray."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any


def checkpoint_janitor(sweep_dir: Path, metric: str, mode: str, keep_stopped: bool,
                       constraints: dict[str, float] | None = None) -> Any:
    """The `ray.tune.Callback` for `RunConfig(callbacks=...)`.

    Args:
        sweep_dir: the sweep's folder; trial `T`'s checkpoints are `sweep_dir/T/checkpoint_*` when it
            trained in its own process, `sweep_dir/train/T/checkpoint_*` when it ran a Train run.
        metric: the validation metric; a trial reports its best so far as `best_<metric>`.
        keep_stopped: keep the checkpoints of trials a scheduler stopped (to inspect them).
        constraints: upper bounds on second objectives (`search.constraints`): "the best so far" is
            the best among trials within them (the one the sweep can register); a trial outside them
            is never registered and loses its checkpoint like a beaten one.
    """
    from .pareto import within
    from ray.tune import Callback

    class _Janitor(Callback):
        def __init__(self) -> None:
            self.best: tuple[float, str] | None = None
            self.objectives: dict[str, dict[str, float]] = {}  # per trial, of its latest kept checkpoint

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            # The loop reports second objectives only with an evaluation that improved (one that
            # published a checkpoint), so the latest ones describe the checkpoint the trial keeps.
            measured = {k: result[k] for k in (constraints or {}) if isinstance(result.get(k), (int, float))}
            if measured:
                self.objectives[trial.trial_id] = measured

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            result = trial.last_result or {}
            value = result.get(f"best_{metric}")
            epochs = (trial.config or {}).get("train.epochs")
            planned = epochs if epochs is not None else result.get("planned_epochs")
            # Fewer epochs than planned, without its own early stopping: a scheduler stopped it.
            stopped_by_scheduler = planned is not None and result.get("epoch", planned) < planned \
                and not result.get("early_stopped")
            if stopped_by_scheduler:
                if not keep_stopped:
                    self._drop(trial.trial_id)
                return
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                return
            if constraints and not within(_Measured(self.objectives.get(trial.trial_id, {})), constraints):
                self._drop(trial.trial_id)
                return
            better = self.best is None or (value > self.best[0] if mode == "max" else value < self.best[0])
            if better:
                if self.best is not None:
                    self._drop(self.best[1])
                self.best = (value, trial.trial_id)
            else:
                self._drop(trial.trial_id)

        def _drop(self, trial_id: str) -> None:
            for owner in (sweep_dir / trial_id, sweep_dir / "train" / trial_id):
                for folder in owner.glob("checkpoint_*"):
                    if folder.is_dir():  # not Ray's checkpoint_manager_snapshot.json
                        shutil.rmtree(folder, ignore_errors=True)

    return _Janitor()


class _Measured:
    """What `pareto.within` reads of a trial: its measured objectives."""

    def __init__(self, objectives: dict[str, float]):
        self.objectives = objectives
