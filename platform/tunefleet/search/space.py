"""The search space: the spec's `search.space` as Ray Tune distributions, and the points tried first.

A sweep's first trial can take known-good hyperparameters instead of a sampled point: the registered
champion's (`seed_with_champion`) or the spec's own (`seed_with_spec`), in each case only when every
value lies inside the space, so a seeded trial never leaves the region the user asked to search.
"""

from __future__ import annotations

import logging
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
