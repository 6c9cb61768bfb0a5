"""The search space: the spec's `search.space` as Ray Tune distributions, and the points tried first.

A sweep's first trial can take known-good hyperparameters instead of a sampled point: the registered
champion's (`seed_with_champion`) or the spec's own (`seed_with_spec`), in each case only when every
value lies inside the space, so a seeded trial never leaves the region the user asked to search.
The start-up trials after it can be spread over the space by a Latin hypercube (`start_up_design`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ..spec import Spec

log = logging.getLogger("tunefleet.search")


def tune_space(spec: Spec) -> dict[str, Any]:
    """The spec's `search.space` as Ray Tune distributions, keyed by dotted spec path."""
    from ray import tune

    space = {}
    for path, dist in spec.search.space.items():
        (kind, args), = dist.items()
        if kind == "loguniform":
            space[path] = tune.loguniform(*args)
        elif kind == "uniform":
            space[path] = tune.uniform(*args)
        elif kind == "int":
            space[path] = tune.randint(int(args[0]), int(args[1]) + 1)  # inclusive upper bound
        elif kind == "choice" and spec.search.algorithm != "grid":
            space[path] = tune.choice(args)
        else:  # grid, or choice under grid search: every value is tried
            space[path] = tune.grid_search(args)
    return space


def max_epochs(spec: Spec) -> int:
    """The most epochs any trial can train: the schedulers' `max_t`."""
    dist = spec.search.space.get("train.epochs")
    if not dist:
        return spec.train.epochs
    (kind, args), = dist.items()
    return int(max(args))


def first_point(spec: Spec) -> dict[str, Any] | None:
    """The first trial's hyperparameters: the champion's (`seed_with_champion`), else the spec's own
    (`seed_with_spec`), else None (the search algorithm picks)."""
    if spec.search.seed_with_champion:
        point = champion_point(spec)
        if point:
            log.info("search: the first trial takes the champion's hyperparameters %s", point)
            return point
    return seed_point(spec) if spec.search.seed_with_spec else None


def seed_point(spec: Spec) -> dict[str, Any] | None:
    """The spec's own fixed hyperparameters as the first trial, where they lie inside the space."""
    return _point_in_space(spec.to_dict(), spec.search.space)


def champion_point(spec: Spec) -> dict[str, Any] | None:
    """The hyperparameters that trained the registered champion named after the spec, where they
    lie inside the space; None (with the reason logged) when there is none to use."""
    from ..tracking.registry import champion_spec

    if not spec.tracking.enabled:
        log.info("search: seed_with_champion needs the registry, and tracking is off; using the spec's values")
        return None
    try:
        trained = champion_spec(spec.name, spec.tracking.uri)  # a missing model or champion is None
    except OSError as exc:
        log.warning("search: cannot read %s@champion (%s); using the spec's values", spec.name, exc)
        return None
    if not trained:
        log.info("search: no champion of %s with recorded hyperparameters; using the spec's values", spec.name)
        return None
    point = _point_in_space(trained, spec.search.space)
    if point is None:
        log.info("search: %s@champion's hyperparameters lie outside the space; using the spec's values", spec.name)
    return point


def _point_in_space(raw: dict[str, Any], space: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """`raw`'s value at every dotted path of `space`, if all are there and inside their ranges."""
    point = {}
    for path, dist in space.items():
        value: Any = raw
        for part in path.split("."):  # `train.lr`, or a nested section's `train.peft.r`
            value = value.get(part) if isinstance(value, dict) else None
        if value is None or not value_inside(dist, value):
            return None
        point[path] = value
    return point or None


def value_inside(dist: dict[str, Any], value: Any) -> bool:
    """Whether `value` is one the distribution (`{"loguniform": [low, high]}`, `{"choice": [...]}`,
    ...) can produce: among the listed values, or a number within the bounds (a whole one for `int`)."""
    (kind, args), = dist.items()
    if kind in ("choice", "grid"):
        return value in args
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return args[0] <= value <= args[1] and (kind != "int" or value == int(value))


def start_up_design(space: dict[str, dict[str, Any]], count: int, seed: int | None) -> list[dict[str, Any]]:
    """`count` points spread over the space by a Latin hypercube: along every dimension, one point
    in each of `count` equal slices (of the log range for `loguniform`, of the value list for
    `choice`), the slices paired at random (seeded).

    Why: TPE's start-up trials are independent random draws, and with the few of a short sweep they
    can all land in one corner. In a benchmarked 8-trial CoNLL sweep (benchmarks/RESULTS.md, TPE
    seed 1), all three drew learning rates of 4e-5 or less and one epoch, TPE modelled from those
    and the sweep never left that corner (best F1 0.76 where other draws reached 0.85). Three
    Latin-hypercube points put one learning rate in each third of the log range and, for
    `epochs: {choice: [1, 2, 3]}`, one trial at each length.

    Returns:
        The points (dotted spec path -> value), or none when a dimension is a `grid` (every grid
        value is tried anyway) or `count` < 1.
    """
    import numpy as np

    if count < 1 or not space or any("grid" in dist for dist in space.values()):
        return []
    rng = np.random.default_rng(seed)
    points: list[dict[str, Any]] = [{} for _ in range(count)]
    for path, dist in space.items():
        (kind, args), = dist.items()
        for point, stratum in zip(points, rng.permutation(count)):
            point[path] = _value_at(kind, args, (stratum + rng.random()) / count)
    return points


def _value_at(kind: str, args: list[Any], u: float) -> Any:
    """The value at quantile `u` (0 <= u < 1) of a space dimension."""
    if kind == "uniform":
        return float(args[0] + u * (args[1] - args[0]))
    if kind == "loguniform":
        return float(math.exp(math.log(args[0]) + u * (math.log(args[1]) - math.log(args[0]))))
    if kind == "int":
        low, high = int(args[0]), int(args[1])
        return min(high, low + int(u * (high - low + 1)))
    return args[min(len(args) - 1, int(u * len(args)))]  # choice
