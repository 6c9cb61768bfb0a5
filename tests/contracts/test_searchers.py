"""Every search algorithm and trial scheduler in `tunefleet.plugins` meets one contract, the way Optuna
tests every sampler alike: a new entry in `SEARCHERS` or `SCHEDULERS` is run here without a new test.

The runs are real Ray Tune runs with a trivial function trainable (no model): each trial reports a
deterministic validation score per epoch, the way the training loop does, so a whole run takes seconds.
"""

from __future__ import annotations

import math

import pytest

from tunefleet import plugins
from tunefleet.spec import SpecError, spec_from_dict

METRIC, MODE = "val_accuracy", "max"
GOOD_LR, BAD_LR = 1.0e-3, 1.0e-7

# Every kind of distribution a spec can name; grid search takes only listed values.
SAMPLED_SPACE = {"train.lr": {"loguniform": [1.0e-4, 1.0e-2]}, "train.dropout": {"uniform": [0.0, 0.3]},
                 "train.batch_size": {"int": [8, 16]}, "train.warmup_ratio": {"choice": [0.0, 0.1]}}
LISTED_SPACE = {"train.lr": {"grid": [1.0e-4, 1.0e-3, 1.0e-2]}, "train.warmup_ratio": {"choice": [0.0, 0.1]}}
# Searchers that try every combination of listed values once, instead of `num_trials` samples.
EXHAUSTIVE = {"grid"}
# Schedulers that halve a bracket only once all its trials reached the milestone, so they must run
# side by side. Ray's HyperBand also puts every new trial into its first bracket (which never halves)
# while that bracket has room, i.e. whenever fewer trials run at once than the bracket holds
# (round(log(max_t) / log(reduction_factor)) + 1): with a low concurrency it stops nothing.
SYNCHRONOUS = {"hyperband"}
# Schedulers that never stop a trial; every other one must stop a trial that cannot learn.
STOPS_NOTHING = {"none"}


def make_spec(tmp_path, **search):
    return spec_from_dict({
        "name": "contract", "task": "text-classification", "data": {"format": "synthetic"},
        "model": {"name_or_path": "bundled-minilm"},
        "train": {"epochs": 2, "lr": GOOD_LR, "metric": "accuracy"},
        "resources": {"storage_path": str(tmp_path)}, "tracking": {"enabled": False},
        "search": {"seed": 7, **search},
    })


def score_by_epoch(epochs: int):
    """A function trainable: a config's score per epoch, deterministic, without a model.

    Built in a closure so that Ray ships the function by value (workers cannot import test modules).
    A learning rate of 1e-6 or less cannot learn: it stays at 0.1 while a good one climbs from 0.6.
    """

    def trainable(config):
        import json
        import os
        import tempfile

        from ray import tune

        # A trial paused by a synchronous scheduler (HyperBand) restarts from its latest checkpoint, as
        # the training loop does; one without checkpoints would replay epoch 1 and reach the
        # milestone again, to be paused again, forever.
        start = 1
        if (checkpoint := tune.get_checkpoint()) is not None:
            with checkpoint.as_directory() as folder, open(os.path.join(folder, "epoch.json")) as f:
                start = json.load(f) + 1
        lr = config["train.lr"]
        for epoch in range(start, epochs + 1):
            value = 0.1 if lr <= 1.0e-6 else 0.5 + 0.1 * epoch - abs(math.log10(lr) + 3) / 100
            with tempfile.TemporaryDirectory() as folder:
                with open(os.path.join(folder, "epoch.json"), "w") as f:
                    json.dump(epoch, f)
                tune.report({"epoch": epoch, METRIC: value}, checkpoint=tune.Checkpoint.from_directory(folder))

    return trainable


def run(tmp_path, trainable, space, search_alg=None, scheduler=None, num_samples=1, max_concurrent=None):
    from ray import tune

    tuner = tune.Tuner(
        # A quarter CPU per trial: four trivial trials fit at once on the suite's four logical CPUs.
        tune.with_resources(trainable, {"cpu": 0.25}),
        param_space=space,
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=search_alg, scheduler=scheduler,
                                    num_samples=num_samples, max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(name="contract", storage_path=str(tmp_path / "tune"), verbose=0),
    )
    results = list(tuner.fit())
    assert [r.error for r in results if r.error] == []
    return results


def inside(value, dist) -> bool:
    (kind, args), = dist.items()
    if kind in ("choice", "grid"):
        return value in args
    if kind == "int":
        return float(value).is_integer() and args[0] <= value <= args[1]
    return args[0] <= value <= args[1]


# ---- the registry ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, table", [("search algorithm", plugins.SEARCHERS), ("scheduler", plugins.SCHEDULERS)])
def test_every_registered_name_has_a_builder(kind, table):
    for name in table:
        assert callable(plugins.load(kind, name)), f"{kind} {name!r}: {table[name]} is not a builder"


@pytest.mark.parametrize("field, table", [("algorithm", plugins.SEARCHERS), ("scheduler", plugins.SCHEDULERS)])
def test_an_unknown_name_in_a_spec_lists_the_valid_ones(field, table, tmp_path):
    with pytest.raises(SpecError) as caught:
        make_spec(tmp_path, **{field: "hyperopt-nonexistent"})
    message = str(caught.value)
    assert f"search.{field}:" in message and "'hyperopt-nonexistent'" in message
    assert f"use one of {', '.join(table)}" in message


# ---- search algorithms ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(plugins.SEARCHERS))
def test_searcher_is_a_tune_search_algorithm_that_keeps_to_its_concurrency(name, tmp_path):
    from ray.tune.search import ConcurrencyLimiter, SearchAlgorithm, Searcher

    space = LISTED_SPACE if name in EXHAUSTIVE else SAMPLED_SPACE
    search = plugins.load("search algorithm", name)(make_spec(tmp_path, algorithm=name, space=space), [], 2)
    assert isinstance(search, (Searcher, SearchAlgorithm))
    # The sweep passes `max_concurrent_trials` only for a `Searcher`, which Tune then wraps in a
    # ConcurrencyLimiter; anything else must hold the limit itself or start every trial at once.
    if isinstance(search, Searcher):
        assert not isinstance(search, ConcurrencyLimiter)
    else:
        assert search.max_concurrent == 2


@pytest.mark.parametrize("name", sorted(plugins.SEARCHERS))
def test_searcher_runs_its_trials_inside_the_space_first_point_included(name, tmp_path, ray_cluster):
    from ray.tune.search import Searcher

    from tunefleet.search.space import tune_space

    exhaustive = name in EXHAUSTIVE
    space = LISTED_SPACE if exhaustive else SAMPLED_SPACE
    spec = make_spec(tmp_path, algorithm=name, space=space, num_trials=5)
    point = {"train.lr": 1.0e-3, "train.dropout": 0.1, "train.batch_size": 16, "train.warmup_ratio": 0.1}
    point = {path: point[path] for path in space}
    search = plugins.load("search algorithm", name)(spec, [point], 2)
    results = run(tmp_path, score_by_epoch(2), tune_space(spec), search_alg=search,
                  num_samples=1 if exhaustive else spec.search.num_trials,
                  max_concurrent=2 if isinstance(search, Searcher) else None)

    configs = [{path: r.config[path] for path in space} for r in results]
    grid_size = math.prod(len(next(iter(d.values()))) for d in space.values())
    assert len(results) == (grid_size if exhaustive else spec.search.num_trials)
    if exhaustive:  # every combination, each once
        assert len({tuple(sorted(c.items())) for c in configs}) == grid_size
    for config in configs:
        assert all(inside(config[path], dist) for path, dist in space.items()), config
    assert point in configs, "the point to evaluate first was never tried"
    # Every trial ran its two epochs: nothing but the scheduler may cut a trial short.
    assert all(r.metrics["epoch"] == 2 and r.metrics["training_iteration"] == 2 for r in results)


# ---- schedulers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(plugins.SCHEDULERS))
def test_scheduler_is_a_tune_trial_scheduler_counting_epochs(name, tmp_path):
    from ray.tune.schedulers import TrialScheduler

    scheduler = plugins.load("scheduler", name)(make_spec(tmp_path, scheduler=name))
    assert isinstance(scheduler, TrialScheduler)
    if name not in STOPS_NOTHING:  # one that decides on progress counts it in epochs, not reports
        assert scheduler._time_attr == "epoch"


@pytest.mark.parametrize("name", sorted(plugins.SCHEDULERS))
def test_scheduler_stops_the_trial_that_cannot_learn_and_keeps_the_best(name, tmp_path, ray_cluster):
    """Three trials learn, one cannot (lr 1e-7 stays at 0.1 while the others climb from about 0.6).
    A scheduler that may stop trials stops that one before its last epoch and lets the best trial
    finish (ASHA may also cut a learner that is only slightly worse: halving is its job); "none"
    (FIFO) lets every trial finish."""
    from ray import tune

    spec = make_spec(tmp_path, scheduler=name, grace_period=1, reduction_factor=2)
    scheduler = plugins.load("scheduler", name)(spec)
    # The learners are created first: an asynchronous rule (ASHA, median) judges a trial against
    # those that reached the same epoch before it, so the order must not be left to chance; two at
    # a time, the stuck trial starts only after two learners have finished. A synchronous one
    # (HyperBand) compares a bracket's trials once all reached the milestone: all four run at once.
    space = {"train.lr": tune.grid_search([GOOD_LR, 2.0e-3, 3.0e-3, BAD_LR])}
    results = run(tmp_path, score_by_epoch(spec.train.epochs), space, scheduler=scheduler,
                  max_concurrent=None if name in SYNCHRONOUS else 2)

    # lr -> (epochs run, reports made)
    ran = {r.config["train.lr"]: (r.metrics["epoch"], r.metrics["training_iteration"]) for r in results}
    last = spec.train.epochs
    assert len(results) == 4 and ran[GOOD_LR] == (last, last), ran  # the best trial is never cut
    if name in STOPS_NOTHING:
        assert all(epochs == last for epochs, _ in ran.values()), ran
    else:
        epochs, reports = ran[BAD_LR]
        assert epochs < last and reports == epochs, ran  # stopped after fewer epochs, one report each
