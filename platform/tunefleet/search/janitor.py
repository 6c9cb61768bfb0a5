"""Keeps a sweep's disk use bounded while it runs: a trial a scheduler stopped loses its
checkpoints at once (unless `search.keep_stopped_checkpoints`), and of the trials that completed only
the best so far keeps its checkpoints. A Tune callback on the driver, built lazily so that importing
this module does not import Ray.

A checkpoint goes only once Tune's saved experiment state (`experiment_state-*.json` in the sweep's
folder, what `--resume` restores from) records its trial as ended. Tune saves that state every few
seconds: a trial that completed just before the driver died is still RUNNING there, `--resume`
restores it from its latest checkpoint, and had that been removed at once the resumed trial would
fail ("checkpoint does not exist on storage anymore") although it had finished.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

# Trial statuses in Tune's experiment state after which a resume never restores the trial.
ENDED = ("TERMINATED", "ERROR")


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
            self.pending: set[str] = set()  # trials whose checkpoints go once the saved state says they ended
            self.saved = SavedTrialStates(sweep_dir)

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

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            if self.pending:
                self._drop_ended()

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            # Tune saved its state (waiting for it) just before: every trial that ended is in it.
            if self.pending:
                self._drop_ended()

        def _drop(self, trial_id: str) -> None:
            self.pending.add(trial_id)
            self._drop_ended()

        def _drop_ended(self) -> None:
            for trial_id in self.pending & self.saved.ended():
                self.pending.discard(trial_id)
                for owner in (sweep_dir / trial_id, sweep_dir / "train" / trial_id):
                    for folder in owner.glob("checkpoint_*"):
                        if folder.is_dir():  # not Ray's checkpoint_manager_snapshot.json
                            shutil.rmtree(folder, ignore_errors=True)

    return _Janitor()


class SavedTrialStates:
    """Which trials Tune's newest saved experiment state in a folder records as ended. The file is
    read again only when it changed; one caught half written (Tune copies it into the folder) counts
    as unchanged until the next save."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: tuple[float, str] | None = None  # mtime and path of the file last read
        self.last: set[str] = set()

    def ended(self) -> set[str]:
        states = []
        for path in self.folder.glob("experiment_state-*.json"):
            try:
                states.append((path.stat().st_mtime, str(path)))
            except OSError:  # replaced between the listing and the stat
                continue
        newest = max(states, default=None)
        if newest is not None and newest != self.seen:
            try:
                trials = json.loads(Path(newest[1]).read_text())["trial_data"]
                self.last = {t["trial_id"] for t in (json.loads(state) for state, _ in trials)
                             if t.get("status") in ENDED}
                self.seen = newest
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return self.last


class _Measured:
    """What `pareto.within` reads of a trial: its measured objectives."""

    def __init__(self, objectives: dict[str, float]):
        self.objectives = objectives
