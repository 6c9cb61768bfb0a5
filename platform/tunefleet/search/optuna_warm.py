"""Ray's `OptunaSearch`, told about earlier sweeps' trials before its first proposal.

A module of its own, imported by the optuna builder only: it imports Ray and Optuna, and the class
must live at module level, where pickle finds it again when Tune saves and restores the searcher.
"""

from __future__ import annotations

from typing import Any, Sequence

from ray.tune.search.optuna import OptunaSearch

from .warm_start import EarlierTrial


class WarmStartedOptunaSearch(OptunaSearch):
    """`OptunaSearch` whose study starts with `earlier` as finished trials (COMPLETE, or PRUNED with
    their curves for trials a scheduler stopped), so that TPE models them from its first proposal."""

    def __init__(self, *args: Any, earlier: Sequence[EarlierTrial] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._earlier = list(earlier)

    def set_search_properties(self, metric: Any, mode: Any, config: dict, **spec: Any) -> bool:
        # The study and its distributions exist only once Tune has handed over the space.
        if not super().set_search_properties(metric, mode, config, **spec):
            return False
        for trial in self._earlier:
            self.add_evaluated_point(trial.params, trial.value, pruned=trial.pruned,
                                     intermediate_values=trial.curve or None)
        return True

    def known_trials(self) -> int:
        """How many finished trials (complete or pruned) the study holds: the earlier sweeps' it was
        given and, once restored from a sweep's saved state (`extend.py`), that sweep's own."""
        from optuna.trial import TrialState

        study = getattr(self, "_ot_study", None)
        if study is None:
            return 0
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
