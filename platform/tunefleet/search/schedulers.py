"""Trial schedulers: one builder per name in `tunefleet.plugins.SCHEDULERS`.

A builder takes the validated spec and returns a `ray.tune.schedulers.TrialScheduler`, which answers
CONTINUE, PAUSE or STOP on every result a trial reports. Time is counted in epochs (the `epoch` each
report carries), never in Tune's `training_iteration`, so rungs and grace periods mean the same thing
whatever the report cadence. Metric and mode reach the scheduler through `TuneConfig`. Ray is imported
inside the builder.

Adding a scheduler is a builder here and a line in `plugins.SCHEDULERS`;
`tests/contracts/test_searchers.py` then runs it like every other.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..spec import Spec
from .space import max_epochs

TIME_ATTR = "epoch"


class SchedulerBuilder(Protocol):
    def __call__(self, spec: Spec) -> Any:
        """The trial scheduler for `spec.search`."""


def asha(spec: Spec) -> Any:
    """Asynchronous successive halving: at each rung, a trial in the worse part is stopped at once.

    With `search.rungs_by_length` and `train.epochs` in the space, each planned length has rungs of
    its own (`asha.py`): after its first epoch a trial planned for three has not annealed as a
    one-epoch trial has, and shared rungs stop it for that.
    """
    from ray.tune.schedulers import ASHAScheduler

    # Rungs at grace_period x reduction_factor^k epochs, up to the longest trial the space allows.
    options = dict(time_attr=TIME_ATTR, max_t=max_epochs(spec), grace_period=spec.search.grace_period,
                   reduction_factor=spec.search.reduction_factor)
    if spec.search.rungs_by_length and "train.epochs" in spec.search.space:
        from .asha import RungsByLength

        return RungsByLength(**options)
    return ASHAScheduler(**options)


def hyperband(spec: Spec) -> Any:
    """Synchronous HyperBand: trials pause at each milestone until their bracket can be halved.

    Ray puts each new trial into the current bracket while it has room, and its first bracket never
    halves: with fewer trials at once than that bracket holds (round(log(max_t) / log(reduction_factor))
    + 1), every trial lands there and none is stopped. ASHA has no such floor.
    """
    from ray.tune.schedulers import HyperBandScheduler

    return HyperBandScheduler(time_attr=TIME_ATTR, max_t=max_epochs(spec),
                              reduction_factor=spec.search.reduction_factor)


def median_stopping(spec: Spec) -> Any:
    """Stops a trial whose best result by epoch t is worse than the median of the other trials'
    running averages up to epoch t."""
    from ray.tune.schedulers import MedianStoppingRule

    # Two other trials suffice to compare against: sweeps here are often only a handful of trials.
    return MedianStoppingRule(time_attr=TIME_ATTR, grace_period=spec.search.grace_period, min_samples_required=2)


def fifo(spec: Spec) -> Any:
    """No early stopping: every trial trains all its epochs."""
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()
