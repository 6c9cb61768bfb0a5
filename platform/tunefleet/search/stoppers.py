"""What ends a sweep before its trials run out: a trial reaching `search.stop_at_metric`, or
`search.stop_on_plateau` trials in a row ending without beating the best by `plateau_min_delta`.

Both live on the driver. The target is a Tune `Stopper` (it sees every result). The plateau counts
*ended* trials, and only a Tune `Callback` hears that a trial ended, including one a scheduler stopped;
so the stopper owns a callback (`stopper.plateau`) that the sweep registers beside it, and asks it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ..spec import Spec

log = logging.getLogger("tunefleet.search")


def sweep_stopper(spec: Spec, metric: str, mode: str) -> Any:
    """The sweep's `ray.tune.stopper.Stopper`, or None when neither stop condition is set.

    Its `plateau` attribute (None without `stop_on_plateau`) is a `ray.tune.Callback` that must be
    passed in `RunConfig(callbacks=...)` for the plateau rule to see trials end.
    """
    target, patience = spec.search.stop_at_metric, spec.search.stop_on_plateau
    if target is None and patience is None:
        return None
    from ray.tune import Callback
    from ray.tune.stopper import Stopper

    keep_best = max if mode == "max" else min

    class _Plateau(Callback):
        """Counts ended trials since the last one that beat the best ended trial by more than
        `plateau_min_delta`."""

        def __init__(self) -> None:
            self.best: float | None = None
            self.without_improvement = 0
            self._trial_best: dict[str, float] = {}

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            value = result.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                seen = self._trial_best.get(trial.trial_id)
                self._trial_best[trial.trial_id] = value if seen is None else keep_best(seen, value)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._ended(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._ended(trial)

        def _ended(self, trial: Any) -> None:
            value = self._trial_best.pop(trial.trial_id, None)  # None: it never reported the metric
            delta = spec.search.plateau_min_delta
            if value is None:
                gain = -math.inf
            elif self.best is None:
                gain = math.inf
            else:
                gain = value - self.best if mode == "max" else self.best - value
            if gain > 0:
                self.best = value
            self.without_improvement = 0 if gain > delta else self.without_improvement + 1
            if self.reached:
                log.info("search: %d trials in a row ended without beating %s=%s by more than %g; "
                         "ending the sweep", self.without_improvement, metric,
                         "none" if self.best is None else f"{self.best:.4f}", delta)

        @property
        def reached(self) -> bool:
            return self.without_improvement >= patience

    class _SweepStopper(Stopper):
        def __init__(self) -> None:
            self.reached = False
            self.plateau = _Plateau() if patience is not None else None

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            value = result.get(metric)
            if target is not None and value is not None and (value >= target if mode == "max" else value <= target):
                self.reached = True
            return self.reached

        def stop_all(self) -> bool:
            return self.reached or (self.plateau is not None and self.plateau.reached)

    return _SweepStopper()
