"""ASHA whose rungs compare trials that train on the same schedule.

ASHA stops a trial at a rung (epoch 1, 2, 4, ...) when its score there is in the worse part of the
scores other trials had at that rung. That assumes a trial's first epochs are the same whatever its
length. When the space searches `train.epochs` they are not: the learning rate warms up over a share
of all the trial's steps and decays to zero at its last, so after epoch 1 a one-epoch trial has
annealed, a two-epoch one is at 56% of its peak rate and a three-epoch one at 74% (warmup 0.1, linear
decay), still a third into its warmup. The longer schedules look worse at the first rung because they
are not done, and ASHA stops them, and the searcher is told their stopped scores. In the issue-13
sweep on CoNLL-2003 (TPE seed 3, epochs {1, 2, 3}) the one three-epoch trial of the start-up design
(lr 7.7e-5) scored 0.655 after its first epoch against a two-epoch trial's 0.794 and was stopped
there (with rungs by length it ran on to 0.818, below that trial's 0.854; benchmarks/RESULTS.md).

Here each planned length has its own rungs: a trial is compared at a rung only with trials planned
for as many epochs, whose schedules match step for step. A spec that does not search `train.epochs`
has one length, and this is Ray's ASHA exactly.

It is `search.rungs_by_length`, off by default: on the issue-13 sweep (8 trials, epochs {1, 2, 3},
TPE seeds 0-3, fp32) it found the same best model as shared rungs on seeds 1-3, and on seed 0 a
better one on validation only (0.8623 against 0.8590; test 0.8030 against 0.8079): its last trial,
three epochs, ran on where shared rungs had stopped it at epoch 2 against a two-epoch trial's final
score. The same sweep also ran a hopeless three-epoch trial (lr 1e-5, 0.002 after its first epoch)
to its end and passed 0.8516 two evaluations later: the first trial of each length has nothing to
be compared with, so it always passes the first rung. With three lengths in eight trials that is
three free passes; a sweep with many trials per length pays it once per length.
"""

from __future__ import annotations

import copy
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler

EPOCHS = "train.epochs"  # the trial config's key for its planned epochs (a dotted spec path)


class RungsByLength(AsyncHyperBandScheduler):
    """`AsyncHyperBandScheduler` (one bracket) with a bracket per value of the trial config's `train.epochs`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(brackets=1, **kwargs)
        self._by_length: dict[Any, Any] = {}

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)  # checks metric and mode
        length = trial.config.get(EPOCHS)
        if length not in self._by_length:
            # Ray's own bracket never records a result (every trial is routed away from it below),
            # so a copy of it is an empty bracket with the same rungs.
            self._by_length[length] = copy.deepcopy(self._brackets[0])
        self._trial_info[trial.trial_id] = self._by_length[length]

    def debug_string(self) -> str:
        return "\n".join([f"Using ASHA with rungs by planned epochs: num_stopped={self._num_stopped}"]
                         + [f"epochs {length}: {bracket.debug_str()}" for length, bracket in self._by_length.items()])
