"""Sweeps on a real local Ray: Optuna + ASHA over the Ray Train loop, resources planned before launch,
stopped trials cleaned up, the best trial's own weights registered, trials proposed by the configured
sampler, resume after the driver dies (with the searcher's memory), a killed worker recovered from
checkpoint. Every search algorithm and scheduler alone is checked in tests/contracts/test_searchers.py."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_spec_dict
from tunefleet.cluster import PlanError
from tunefleet.search.space import first_point, seed_point, tune_space
from tunefleet.search.sweep import (SweepExistsError, build_scheduler, build_search_alg, run_sweep, sweep_name,
                                    trains_in_trial)
from tunefleet.spec import spec_from_dict

SPACE = {"train.lr": {"loguniform": [1.0e-4, 3.0e-3]}, "train.dropout": {"uniform": [0.0, 0.3]},
         "train.epochs": {"choice": [3]}}


def make_spec(tiny_model, tmp_path, **sections):
    return spec_from_dict(tiny_spec_dict(tiny_model, tmp_path / "runs", **sections), source=str(tmp_path / "spec.yaml"))


def gcs_address() -> str:
    # Other Ray instances may run on this machine: always name ours to the State API.
    import ray

    return ray.get_runtime_context().gcs_address


def live_placement_groups():
    from ray.util.state import list_placement_groups

    return [pg for pg in list_placement_groups(address=gcs_address(), limit=1000) if pg.state != "REMOVED"]


# ---- pure parts -----------------------------------------------------------------------------------

def test_space_becomes_tune_distributions(tiny_model, tmp_path):
    from ray.tune.search.sample import Categorical, Float, Integer

    spec = make_spec(tiny_model, tmp_path, search={"space": {**SPACE, "train.batch_size": {"int": [8, 16]}}})
    space = tune_space(spec)
    assert isinstance(space["train.lr"], Float) and space["train.lr"].lower == 1e-4
    assert isinstance(space["train.epochs"], Categorical) and space["train.epochs"].categories == [3]
    assert isinstance(space["train.batch_size"], Integer) and space["train.batch_size"].upper == 17  # inclusive
    grid = make_spec(tiny_model, tmp_path, search={"algorithm": "grid", "space": {"train.epochs": {"grid": [1, 2]}}})
    assert tune_space(grid)["train.epochs"] == {"grid_search": [1, 2]}


def test_seed_point_is_the_spec_when_inside_the_space(tiny_model, tmp_path):
    spec = make_spec(tiny_model, tmp_path, search={"space": SPACE})
    assert seed_point(spec) == {"train.lr": 1e-3, "train.dropout": 0.1, "train.epochs": 3}
    outside = make_spec(tiny_model, tmp_path, train={"lr": 0.5}, search={"space": SPACE})
    assert seed_point(outside) is None


def test_first_trial_can_take_the_champions_hyperparameters(tiny_model, tmp_path):
    """seed_with_champion: the registered champion named after the spec records the spec that trained
    it, and the next sweep starts from its values; without a usable champion, from the spec's."""
    import transformers

    from tunefleet.train.checkpoint import save_checkpoint
    from tunefleet.tracking.registry import register_checkpoint

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = make_spec(tiny_model, tmp_path, tracking={"enabled": True, "uri": uri},
                     search={"space": SPACE, "seed_with_champion": True})
    assert first_point(spec) == seed_point(spec)  # no champion yet: the spec's own values

    trained = spec.to_dict()
    trained["train"] |= {"lr": 2.0e-3, "dropout": 0.25}
    model = transformers.BertForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    meta = {"task": "text-classification", "model_class": "BertForSequenceClassification",
            "label_names": ["negative", "positive"], "base_model": tiny_model, "max_length": 32,
            "metric": "accuracy", "epoch": 3.0, "validation": {"accuracy": 0.8}, "spec": trained}
    folder = save_checkpoint(tmp_path / "ckpt", model, transformers.AutoTokenizer.from_pretrained(tiny_model), meta, None)
    assert register_checkpoint(str(folder), spec.name, {"accuracy": 0.8}, tracking_uri=uri)["promoted"]["promoted"]

    champion = {"train.lr": 2.0e-3, "train.dropout": 0.25, "train.epochs": 3}
    assert first_point(spec) == champion
    # What Optuna tries first: the champion's values, then two Latin-hypercube points (3 start-up trials).
    tried_first = build_search_alg(spec)._points_to_evaluate
    assert tried_first[0] == champion and len(tried_first) == 3
    narrower = make_spec(tiny_model, tmp_path, tracking={"enabled": True, "uri": uri},
                         search={"space": {**SPACE, "train.lr": {"loguniform": [1.0e-4, 1.0e-3]}}, "seed_with_champion": True})
    assert first_point(narrower) == seed_point(narrower)  # the champion's lr lies outside: the spec's values


def test_tpe_samples_at_random_for_a_quarter_of_the_budget(tiny_model, tmp_path):
    for trials, startup in ((8, 3), (16, 4), (40, 10), (100, 10)):
        spec = make_spec(tiny_model, tmp_path, search={"space": SPACE, "num_trials": trials})
        assert build_search_alg(spec)._sampler._n_startup_trials == startup


def test_the_start_up_design_puts_one_point_in_each_slice_of_every_dimension():
    import math

    from tunefleet.search.space import start_up_design

    space = {"train.lr": {"loguniform": [1.0e-5, 1.0e-2]}, "train.dropout": {"uniform": [0.0, 0.3]},
             "train.epochs": {"choice": [1, 2, 3]}, "train.batch_size": {"int": [1, 6]}}
    for seed in range(20):
        points = start_up_design(space, 3, seed)
        assert len(points) == 3 and all(set(point) == set(space) for point in points)
        # Thirds of each range: decades of the learning rate (1e-5, 1e-4, 1e-3, 1e-2), tenths of dropout.
        assert sorted(math.floor(math.log10(p["train.lr"])) for p in points) == [-5, -4, -3]
        assert sorted(math.floor(p["train.dropout"] / 0.1) for p in points) == [0, 1, 2]
        assert sorted(p["train.epochs"] for p in points) == [1, 2, 3]
        assert sorted((p["train.batch_size"] + 1) // 2 for p in points) == [1, 2, 3]  # {1,2}, {3,4}, {5,6}
    assert start_up_design(space, 3, 0) == start_up_design(space, 3, 0)  # seeded
    assert start_up_design(space, 3, 0) != start_up_design(space, 3, 1)
    assert start_up_design(space, 0, 0) == []
    assert start_up_design({**space, "train.epochs": {"grid": [1, 2]}}, 3, 0) == []  # a grid tries every value anyway


def test_tpe_starts_with_a_latin_hypercube_for_the_start_up_trials_left(tiny_model, tmp_path):
    """8 trials: 3 start-up trials, of which a seeded first point or earlier sweeps' trials take their
    share; `start_up_design: random` adds none (TPE draws them itself)."""
    import math

    from tunefleet.search.warm_start import EarlierTrial

    spec = make_spec(tiny_model, tmp_path, search={"space": SPACE, "num_trials": 8})
    points = build_search_alg(spec)._points_to_evaluate
    assert points[0] == seed_point(spec) and len(points) == 3
    low, high = SPACE["train.lr"]["loguniform"]
    halves = {math.floor(2 * math.log(p["train.lr"] / low) / math.log(high / low)) for p in points[1:]}
    assert halves == {0, 1}  # one learning rate in each half of the log range
    unseeded = make_spec(tiny_model, tmp_path, search={"space": SPACE, "num_trials": 8, "seed_with_spec": False})
    assert len(build_search_alg(unseeded)._points_to_evaluate) == 3
    random = make_spec(tiny_model, tmp_path, search={"space": SPACE, "num_trials": 8, "start_up_design": "random"})
    assert build_search_alg(random)._points_to_evaluate == [seed_point(spec)]
    earlier = EarlierTrial(params={"train.lr": 1e-3, "train.dropout": 0.1, "train.epochs": 3}, value=0.5,
                           pruned=False, curve=[0.5], sweep="earlier")
    assert len(build_search_alg(unseeded, earlier=[earlier] * 2)._points_to_evaluate) == 1
    assert not build_search_alg(unseeded, earlier=[earlier] * 3)._points_to_evaluate
    # Never more points than the sweep runs: one left over would wait in the study for an extension.
    two = make_spec(tiny_model, tmp_path, search={"space": SPACE, "num_trials": 2})
    assert len(build_search_alg(two)._points_to_evaluate) == 2


def test_scheduler_uses_epochs_as_time(tiny_model, tmp_path):
    spec = make_spec(tiny_model, tmp_path, search={"space": {"train.epochs": {"choice": [2, 5]}}, "grace_period": 2})
    asha = build_scheduler(spec)
    assert asha._time_attr == "epoch" and asha._max_t == 5
    milestones = sorted(rung[0] for rung in asha._brackets[0]._rungs)
    assert milestones[0] == 2  # nobody is stopped before the grace period


def annealing_trainable():
    """A trial's validation score per epoch as a linear-decay schedule shapes it, without a model: 0.5
    + 0.1 per epoch, +0.2 at its planned last epoch (annealed); a learning rate of 1e-7 stays at 0.1.
    Built in a closure so that Ray ships the function by value (workers cannot import test modules)."""

    def trainable(config):
        from ray import tune

        epochs, learns = config["train.epochs"], config["train.lr"] > 1e-6
        for epoch in range(1, epochs + 1):
            tune.report({"epoch": epoch, "val_f1": 0.5 + 0.1 * epoch + 0.2 * (epoch == epochs) if learns else 0.1})

    return trainable


@pytest.mark.parametrize("by_length", [True, False])
def test_asha_compares_a_trial_only_with_trials_planned_as_long(by_length, tiny_model, tmp_path, ray_cluster):
    """One trial at a time: a one-epoch trial scores 0.8 after its (annealed) epoch; a three-epoch one
    with the same learning rate 0.6 after its first, then 0.7 and 1.0; a three-epoch one that cannot
    learn 0.1. By length (`search.rungs_by_length`), the three-epoch learner is the first of its length at the
    first rung and runs to 1.0, and the one that cannot learn is stopped there (0.1 < 0.6). Shared
    rungs (the default, Ray's ASHA) stop the learner at epoch 1 (0.6 < 0.8) and the other too
    (0.1 < the median of 0.8 and 0.6)."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    spec = make_spec(tiny_model, tmp_path, search={
        "scheduler": "asha", "grace_period": 1, "reduction_factor": 2, "rungs_by_length": by_length,
        "space": {"train.lr": {"loguniform": [1e-7, 1e-3]}, "train.epochs": {"choice": [1, 3]}}})
    points = [{"train.lr": 1e-3, "train.epochs": 1}, {"train.lr": 1e-3, "train.epochs": 3},
              {"train.lr": 1e-7, "train.epochs": 3}]
    tuner = tune.Tuner(
        # All four of the suite cluster's CPUs per trial: one trial at a time, in the points' order
        # (a variant generator takes no max_concurrent_trials).
        tune.with_resources(annealing_trainable(), {"cpu": 4}),
        param_space={"train.lr": tune.loguniform(1e-7, 1e-3), "train.epochs": tune.choice([1, 3])},
        tune_config=tune.TuneConfig(metric="val_f1", mode="max", num_samples=3,
                                    search_alg=BasicVariantGenerator(points_to_evaluate=points),
                                    scheduler=build_scheduler(spec)),
        run_config=tune.RunConfig(name="rungs", storage_path=str(tmp_path / "tune"), verbose=0))
    ran = [(r.config["train.lr"], r.config["train.epochs"], r.metrics["epoch"], r.metrics["val_f1"])
           for r in tuner.fit()]
    ran.sort(key=lambda row: (row[1], -row[0]))
    if by_length:
        assert [row[2:] for row in ran] == [(1, pytest.approx(0.8)), (3, pytest.approx(1.0)), (1, 0.1)], ran
    else:
        assert [row[2:] for row in ran] == [(1, pytest.approx(0.8)), (1, pytest.approx(0.6)), (1, 0.1)], ran


def test_every_ray_worker_gets_the_train_serve_and_mlflow_settings(monkeypatch, ray_cluster):
    import ray

    from tunefleet.cluster import train_controller_env

    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", raising=False)
    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", raising=False)
    assert train_controller_env(local=True) == {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
                                                "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    # A joined cluster may have spot nodes: the watcher stays at Ray's default there.
    assert train_controller_env(local=False) == {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "3")  # the user's own setting wins
    assert train_controller_env(local=False) == {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "3"}

    # The suite's local cluster hands both to every Ray worker (Train controllers among them), and
    # Serve's controller the minute its HTTP proxy may take to start on a busy machine (Ray's 5 s x 3
    # killed it in a loaded run of this suite).
    @ray.remote(num_cpus=0)
    def seen() -> tuple:
        return (os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"), os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"),
                os.environ.get("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"), os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))

    # And MLflow's retries bounded to ~15 s a call (its default, ~4 minutes, stalled every trial of a
    # sweep whose tracking server went away).
    assert ray.get(seen.remote()) == ("0.5", "0", "60", "4")


def test_sweep_name_is_deterministic(tiny_model, tmp_path):
    a = make_spec(tiny_model, tmp_path, search={"space": SPACE})
    assert sweep_name(a) == sweep_name(make_spec(tiny_model, tmp_path, search={"space": SPACE}))
    assert sweep_name(a) != sweep_name(make_spec(tiny_model, tmp_path, train={"lr": 2e-3}, search={"space": SPACE}))


def test_infeasible_plan_is_an_error_not_a_hang(tiny_model, tmp_path, ray_cluster):
    spec = make_spec(tiny_model, tmp_path, resources={"workers": 3, "cpus_per_worker": 2}, search={"space": SPACE})
    with pytest.raises(PlanError, match="6 CPUs .* but the cluster has 4"):
        run_sweep(spec)
    too_many = make_spec(tiny_model, tmp_path, search={"space": SPACE, "max_concurrent": 9})
    with pytest.raises(PlanError, match="max_concurrent is 9 but the cluster fits 4"):
        run_sweep(too_many)


# ---- real sweeps ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_asha_stops_trials_reuses_their_process_and_leaves_nothing_behind(tiny_model, tmp_path, ray_cluster):
    # One at a time, seeded, so every trial meets rungs already filled by earlier ones: ranked on
    # validation loss (which, unlike a tiny model's accuracy, does not tie between learning and
    # frozen trials), the worse half is cut. Deterministic: this setup stops two of the four.
    spec = make_spec(tiny_model, tmp_path, data={"format": "synthetic", "synthetic_size": 600},
                     train={"epochs": 3, "metric": "loss", "dropout": 0.0},
                     search={"algorithm": "grid", "max_concurrent": 1, "grace_period": 1, "reduction_factor": 2,
                             "space": {"train.lr": {"grid": [3.0e-3, 1.0e-7, 1.0e-7, 1.0e-7]}}})
    summary = run_sweep(spec)
    trials = json.loads((Path(summary["storage"]) / "trials.json").read_text())
    counts = summary["trials"]
    assert counts["total"] == 4 == len(trials)
    assert counts["completed"] + counts["stopped_early"] + counts["failed"] == 4
    assert counts["stopped_early"] >= 2 and counts["failed"] == 0
    # ASHA stopped trials that could not learn, and only those: the learning rate that learns ran
    # every epoch, each stopped trial is one that cannot learn and reported fewer epochs than it.
    (learner,) = [t for t in trials if t["config"]["train.lr"] == 3.0e-3]
    assert learner["status"] == "completed" and learner["epochs_run"] == 3 and len(learner["history"]) == 3
    stopped = [t for t in trials if t["status"] == "stopped_early"]
    assert all(t["config"]["train.lr"] == 1.0e-7 for t in stopped), [t["config"] for t in stopped]
    assert all(t["epochs_run"] < 3 and len(t["history"]) < 3 for t in stopped)
    assert summary["trial_epochs"] < 4 * 3  # early stopping saved compute
    # One worker per trial: every trial trained in the trial process itself, and a trial ASHA stopped
    # handed its process on to the next (Tune's own `pid` of each report), with no Train run.
    assert trains_in_trial(spec)
    assert len({h["pid"] for t in trials for h in t["history"]}) == 1, [[h["pid"] for h in t["history"]] for t in trials]
    assert not (Path(summary["storage"]) / "train").exists()
    best = min(t["best_value"] for t in trials if t["best_value"] is not None)
    assert summary["best"]["trial_id"] == learner["trial_id"] and learner["best_value"] == best
    assert summary["best"]["metrics"]["validation"]["loss"] == pytest.approx(best)
    assert 0.0 <= summary["best"]["metrics"]["test"]["accuracy"] <= 1.0
    # Every trial ended and released its workers: no placement group is left.
    deadline = time.time() + 30
    while live_placement_groups() and time.time() < deadline:
        time.sleep(1)
    assert live_placement_groups() == []
    # Disk stays bounded: only the best trial keeps a checkpoint.
    kept = sorted(p.parent.name for p in Path(summary["storage"]).glob("*/checkpoint_*") if p.is_dir())
    assert kept == [summary["best"]["trial_id"]]
    for plot in ("optimization_history", "parallel_coordinates", "param_importance", "learning_curves"):
        assert (Path(summary["storage"]) / f"{plot}.png").stat().st_size > 1000
    with pytest.raises(SweepExistsError, match="--resume"):
        run_sweep(spec)


@pytest.mark.slow
def test_the_best_trials_own_weights_are_registered(tiny_model, tmp_path, ray_cluster):
    """The registered version carries the very weights the best trial checkpointed. Each trial's
    weights are hashed as they are reported (before the janitor deletes the loser's), and the best
    trial is picked here from the raw reports, not from what the sweep wrote about itself."""
    from ray.tune import Callback

    from tunefleet.tracking.registry import resolve_model

    class WeightsReported(Callback):
        def __init__(self) -> None:
            self.by_trial: dict[str, tuple[float, str]] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            # Where the checkpoint was written: a Train run names it, a trial in its own process gave
            # it to Tune, which put it in the trial's folder.
            if result.get("checkpoint_dir_name"):
                folder = Path(trial.path) / result["checkpoint_dir_name"]
                self.by_trial[trial.trial_id] = (result["val_loss"], weights_digest(str(folder)))

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Learning rates far apart, so the trials end with different weights and losses (validation loss
    # does not tie as a tiny model's accuracy does). With these, the best trial runs second (1e-2
    # and 3e-3 overshoot in one epoch), so neither the first nor the last trial's checkpoint is right.
    spec = make_spec(tiny_model, tmp_path, data={"format": "synthetic", "synthetic_size": 600},
                     train={"epochs": 1, "metric": "loss", "dropout": 0.0}, tracking={"enabled": True, "uri": uri},
                     search={"algorithm": "grid", "scheduler": "none", "max_concurrent": 1,
                             "space": {"train.lr": {"grid": [1.0e-2, 3.0e-4, 3.0e-3]}}})
    reported = WeightsReported()
    summary = run_sweep(spec, callbacks=[reported])
    order = sorted(reported.by_trial)  # grid search numbers its trial ids in the order it creates them
    assert len(order) == 3, reported.by_trial
    best = min(order, key=lambda trial_id: reported.by_trial[trial_id][0])
    assert best == order[1], f"the setup meant the middle trial to be best; pick other learning rates: {reported.by_trial}"
    best_loss, best_weights = reported.by_trial[best]
    assert all(loss > best_loss and weights != best_weights
               for trial_id, (loss, weights) in reported.by_trial.items() if trial_id != best), reported.by_trial
    version = summary["registered"]["version"]
    registered = resolve_model(f"{spec.name}/{version}", tracking_uri=uri)
    assert weights_digest(registered.checkpoint) == best_weights
    # The sweep's own account agrees: its best trial, and that trial's checkpoint folder.
    assert summary["best"]["trial_id"] == best and weights_digest(summary["best"]["checkpoint"]) == best_weights
    # The losers' checkpoints are gone: the janitor read Tune's own saved state, which records them ended.
    sweep_dir = Path(summary["storage"])
    assert [t for t in order if list((sweep_dir / t).glob("checkpoint_*"))] == [best]


def weights_digest(checkpoint: str) -> str:
    return hashlib.sha256((Path(checkpoint) / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
def test_trials_are_proposed_by_the_configured_seeded_sampler(tiny_model, tmp_path, ray_cluster, monkeypatch):
    """An Optuna sweep's trials are what its searcher seeded with `search.seed` proposes (here its two
    Latin-hypercube start-up points, none left waiting): the study that ran them uses TPE, and a fresh
    searcher built from the same spec proposes the same points in the same order, while one seeded
    differently does not."""
    from optuna.samplers import TPESampler
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    from tunefleet.search import sweep

    built = []
    monkeypatch.setattr(sweep, "build_search_alg", lambda spec, n=0, earlier=(): built.append(build_search_alg(spec, n, earlier)) or built[-1])
    spec = make_spec(tiny_model, tmp_path, train={"epochs": 1},
                     search={"algorithm": "optuna", "scheduler": "none", "num_trials": 2, "max_concurrent": 1,
                             "seed": 11, "seed_with_spec": False,
                             "space": {"train.lr": {"loguniform": [1.0e-4, 3.0e-3]}, "train.dropout": {"uniform": [0.0, 0.3]}}})
    summary = run_sweep(spec)
    (searcher,) = built
    assert isinstance(searcher, OptunaSearch) and isinstance(searcher._ot_study.sampler, TPESampler)
    study = searcher._ot_study.trials
    assert [t.state for t in study] == [TrialState.COMPLETE] * 2
    # Each trial of the sweep ran the point its study trial proposed.
    trials = json.loads((Path(summary["storage"]) / "trials.json").read_text())
    assert len(trials) == 2
    for trial in trials:
        assert trial["config"] == study[searcher._ot_trials[trial["trial_id"]].number].params

    def proposals(seed: int) -> list[dict]:
        fresh = build_search_alg(spec.model_copy(update={"search": spec.search.model_copy(update={"seed": seed})}))
        fresh.set_search_properties(f"val_{spec.train.metric}", spec.metric_mode(), tune_space(spec))
        return [fresh.suggest(f"replay-{i}") for i in range(2)]

    assert proposals(11) == [t.params for t in study]
    assert proposals(12) != [t.params for t in study]


@pytest.mark.slow
def test_sweep_ends_early_at_the_target_or_on_a_plateau(tiny_model, tmp_path, ray_cluster):
    search = {"algorithm": "random", "scheduler": "none", "num_trials": 8, "max_concurrent": 1,
              "space": {"train.lr": {"loguniform": [5e-4, 2e-3]}}}
    # No trial can beat the first by more than 1.0 accuracy: two more trials end, then the sweep.
    plateau = make_spec(tiny_model, tmp_path / "plateau", train={"epochs": 1},
                        search=search | {"stop_on_plateau": 2, "plateau_min_delta": 1.0})
    summary = run_sweep(plateau)
    ran = [t for t in json.loads((Path(summary["storage"]) / "trials.json").read_text()) if t["history"]]
    assert len(ran) == 3, [t["trial_id"] for t in ran]
    assert summary["trial_epochs"] == 3
    # Every accuracy reaches 0.0: the first epoch of the first trial ends the sweep.
    target = make_spec(tiny_model, tmp_path / "target", train={"epochs": 2}, search=search | {"stop_at_metric": 0.0})
    summary = run_sweep(target)
    ran = [t for t in json.loads((Path(summary["storage"]) / "trials.json").read_text()) if t["history"]]
    assert len(ran) == 1 and ran[0]["epochs_run"] == 1


@pytest.mark.slow
def test_two_workers_per_trial(tiny_model, tmp_path, ray_cluster):
    spec = make_spec(tiny_model, tmp_path, resources={"workers": 2, "cpus_per_worker": 1}, train={"epochs": 2},
                     search={"num_trials": 1, "scheduler": "none", "space": {"train.lr": {"loguniform": [5e-4, 2e-3]}}})
    summary = run_sweep(spec)
    assert summary["trials"] == {"total": 1, "completed": 1, "stopped_early": 0, "failed": 0}
    trials = json.loads((Path(summary["storage"]) / "trials.json").read_text())
    assert all(h["workers"] == 2 for t in trials for h in t["history"])
    # Several workers: each trial ran a Train run, whose checkpoints live under the sweep's train/.
    assert not trains_in_trial(spec) and (Path(summary["storage"]) / "train").is_dir()
    # On a local cluster the Train runs started no preemption watcher (nothing here can be drained).
    # Only this job's actors count: other tests join the suite's cluster from subprocesses.
    import ray
    from ray.util.state import list_actors

    job = ray.get_runtime_context().get_job_id()
    # A limit above the suite's actor count: the State API may filter after truncating.
    assert list_actors(address=gcs_address(), limit=10000,
                       filters=[("class_name", "=", "PreemptionWatcher"), ("job_id", "=", job)]) == []


def test_a_beaten_trials_checkpoint_stays_until_tunes_saved_state_says_it_ended(tmp_path):
    """The driver can die after a trial ended but before Tune next saved its state; `--resume` then
    restores that trial from its latest checkpoint. So the janitor removes a beaten trial's
    checkpoint only once the saved state (what a resume reads) records the trial as ended."""
    from types import SimpleNamespace

    from tunefleet.search.janitor import checkpoint_janitor

    def save_state(statuses: dict[str, str], at: float) -> None:
        # Tune's layout: "trial_data", a list of [the trial's JSON state, its run metadata].
        path = tmp_path / "experiment_state-2026-12-02_10-00-00.json"
        path.write_text(json.dumps({"trial_data": [[json.dumps({"trial_id": t, "status": s}), "{}"]
                                                   for t, s in statuses.items()]}))
        os.utime(path, (at, at))  # a new save, whatever the file system's clock resolution

    def has_checkpoint(trial_id: str) -> bool:
        return (tmp_path / trial_id / "checkpoint_000000").is_dir()

    for name in "ab":
        (tmp_path / name / "checkpoint_000000").mkdir(parents=True)
    janitor = checkpoint_janitor(tmp_path, "val_accuracy", "max", keep_stopped=False)
    save_state({"a": "RUNNING", "b": "RUNNING"}, at=1000.0)
    for name, value in (("a", 0.9), ("b", 0.5)):  # b ends beaten by a
        result = {"val_accuracy": value, "best_val_accuracy": value, "epoch": 1, "planned_epochs": 1}
        janitor.on_trial_complete(0, [], SimpleNamespace(trial_id=name, last_result=result, config={}))
    janitor.on_step_end(0, [])
    assert has_checkpoint("a") and has_checkpoint("b"), "b's checkpoint went while the saved state had b running"
    save_state({"a": "TERMINATED", "b": "RUNNING"}, at=1001.0)
    janitor.on_step_end(1, [])
    assert has_checkpoint("b")
    save_state({"a": "TERMINATED", "b": "TERMINATED"}, at=1002.0)
    janitor.on_step_end(2, [])
    assert has_checkpoint("a") and not has_checkpoint("b")


@pytest.mark.slow
def test_resume_after_the_driver_is_killed(tiny_model, tmp_path, ray_cluster, monkeypatch):
    """--resume finishes the sweep without re-running finished trials; the search algorithm resumes
    with its memory (the restored Optuna study holds the trials the first driver finished); and MLflow
    keeps one parent run and one child run per trial, the finished ones' metrics logged once per epoch.
    (One sweep checks all three: killing and resuming a sweep is the suite's dearest setup.)"""
    from collections import Counter

    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    from tunefleet.tracking import runs as tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = tiny_spec_dict(tiny_model, tmp_path / "runs", name="resumed", train={"epochs": 2},
                         tracking={"uri": uri, "enabled": True},
                         resources={"ray_address": ray_cluster.get_runtime_context().gcs_address},
                         search={"num_trials": 4, "max_concurrent": 1, "scheduler": "none",
                                 "space": {"train.lr": {"loguniform": [5e-4, 2e-3]}}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    driver = subprocess.Popen([sys.executable, "-m", "tunefleet.cli", "sweep", str(path)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    from tunefleet.spec import load_spec

    spec = load_spec(path)
    sweep_dir = tmp_path / "runs" / sweep_name(spec)
    try:
        finished_before = _wait_for_finished_trials(sweep_dir, 2, driver)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    parent_id = json.loads((sweep_dir / "mlflow.json").read_text())["parent_run_id"]

    # What the searcher knows the moment Tune restores it, before the resumed sweep asks it anything.
    restored: list[dict[str, tuple]] = []
    restore = OptunaSearch.restore

    def remember(self, checkpoint_path):
        restore(self, checkpoint_path)
        study = self._ot_study.trials
        restored.append({trial_id: (study[ot.number].state, study[ot.number].params)
                         for trial_id, ot in self._ot_trials.items()})

    monkeypatch.setattr(OptunaSearch, "restore", remember)
    summary = run_sweep(spec, resume=True)
    assert len(restored) == 1, "the resumed sweep did not restore its searcher"
    for trial_id in finished_before:
        assert trial_id in restored[0], f"the restored searcher has no record of finished trial {trial_id}"
        state, params = restored[0][trial_id]
        config = json.loads((sweep_dir / trial_id / "params.json").read_text())
        assert state == TrialState.COMPLETE and params == config, (trial_id, state, params, config)

    assert summary["trials"]["total"] == 4
    assert summary["trials"]["failed"] == 0
    trials = {t["trial_id"]: t for t in json.loads((sweep_dir / "trials.json").read_text())}
    for trial_id, before in finished_before.items():
        # A completed trial is kept, not re-run: it reported nothing after the resume.
        assert trial_id in trials
        assert (sweep_dir / trial_id / "result.json").read_text() == before

    # MLflow: the same parent run, one child per trial, the finished trials' epochs logged once each.
    assert summary["mlflow"]["parent_run_id"] == parent_id
    client = tracking.client_for(uri)
    experiment = client.get_experiment_by_name("resumed").experiment_id
    sweeps = client.search_runs([experiment], "tags.`tunefleet.kind` = 'sweep'")
    assert [r.info.run_id for r in sweeps] == [parent_id] and sweeps[0].info.status == "FINISHED"
    children = client.search_runs([experiment], f"tags.`{tracking.PARENT_TAG}` = '{parent_id}'")
    # A trial the first driver started after Tune last saved its state is unknown to the resumed sweep,
    # which runs another in its place: its run is kept, ended KILLED and tagged orphaned.
    orphans = [c for c in children if c.data.tags.get(tracking.END_STATE_TAG) == tracking.ORPHANED]
    assert all(c.info.status == "KILLED" and c.data.tags[tracking.TRIAL_TAG] not in trials for c in orphans)
    children = [c for c in children if c not in orphans]
    assert Counter(c.data.tags[tracking.TRIAL_TAG] for c in children) == Counter(list(trials))  # one child each
    by_trial = {c.data.tags[tracking.TRIAL_TAG]: c for c in children}
    for trial_id in finished_before:
        history = client.get_metric_history(by_trial[trial_id].info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == sorted({m.step for m in history}) and len(history) == 2
    assert all(c.info.status == "FINISHED" for c in children)
    assert summary["registered"]["version"] == 1


def _wait_for_finished_trials(sweep_dir: Path, count: int, driver: subprocess.Popen) -> dict[str, str]:
    """Trials that Tune's saved state calls terminated and the saved searcher state has been told
    of: what a resume must not run again, and what the resumed searcher must remember."""
    deadline = time.time() + 240
    while time.time() < deadline:
        assert driver.poll() is None, "the sweep ended before it could be interrupted"
        state_files = sorted(sweep_dir.glob("experiment_state-*.json"))
        if state_files:
            try:
                text = state_files[-1].read_text()
            except OSError:
                text = ""
            told = _told_searcher(sweep_dir)
            finished = [d for d in sweep_dir.iterdir()
                        if d.is_dir() and (d / "result.json").exists() and d.name in text
                        and _trial_terminated(text, d.name) and d.name in told]
            if len(finished) >= count:
                return {d.name: (d / "result.json").read_text() for d in finished}
        time.sleep(0.5)
    raise AssertionError("trials did not finish in time")


def _told_searcher(sweep_dir: Path) -> set[str]:
    """Trial ids whose result the saved Optuna searcher state has recorded (COMPLETE in its study)."""
    from optuna.trial import TrialState

    saved = sorted(sweep_dir.glob("searcher-state-*.pkl"))
    try:
        state = pickle.loads(saved[-1].read_bytes()) if saved else {}
    except Exception:  # noqa: BLE001 - caught mid-copy, any unpickling error: ask again next round
        return set()
    study = state["_ot_study"].trials if state.get("_ot_study") else []
    return {trial_id for trial_id, ot in state.get("_ot_trials", {}).items()
            if ot.number < len(study) and study[ot.number].state == TrialState.COMPLETE}


def _trial_terminated(state_text: str, trial_id: str) -> bool:
    state = json.loads(state_text)
    for entry in state.get("trial_data", []):
        trial_json = entry[0] if isinstance(entry, list) else entry
        info = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        if info.get("trial_id") == trial_id:
            return info.get("status") == "TERMINATED"
    return False


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["in_trial", "ray_train"])
def test_a_killed_worker_recovers_from_its_checkpoint(runner, tiny_model, tmp_path, ray_cluster):
    """Killed after its first checkpoint, the process that trains (the trial's own, or its Train
    run's worker) is replaced and the run goes on from that checkpoint."""
    import ray

    spec = make_spec(tiny_model, tmp_path, data={"format": "synthetic", "synthetic_size": 1200},
                     train={"epochs": 4, "early_stopping_patience": None},
                     search={"num_trials": 1, "scheduler": "none", "trial_runner": runner,
                             "space": {"train.lr": {"choice": [1e-3]}}})
    sweep_dir = tmp_path / "runs" / sweep_name(spec)
    # Read here: the killer thread must not touch Ray's context (after the sweep it would start one).
    job, address = ray.get_runtime_context().get_job_id(), gcs_address()
    killed: list[int] = []
    done = threading.Event()

    def process_that_trains() -> int | None:
        """The pid to kill once the first checkpoint exists: the trial's own process (Tune writes it
        with every result), or the Train worker (from the State API, which may time out when busy)."""
        if runner == "in_trial":
            for results in sweep_dir.glob("*/result.json"):
                if list(results.parent.glob("checkpoint_*")):
                    lines = results.read_text().splitlines()
                    return json.loads(lines[0])["pid"] if lines else None
            return None
        if not list(sweep_dir.glob("train/*/checkpoint_*")):
            return None
        from ray.util.state import list_actors

        try:
            actors = list_actors(address=address, limit=10000, filters=[
                ("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE"), ("job_id", "=", job)])
        except Exception:  # noqa: BLE001 - ask again
            return None
        return actors[0].pid if actors else None

    def kill_a_worker_after_first_checkpoint():
        deadline = time.time() + 240
        while time.time() < deadline and not killed and not done.is_set():
            pid = process_that_trains()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_worker_after_first_checkpoint, daemon=True)
    killer.start()
    try:
        summary = run_sweep(spec)
    finally:
        done.set()
        killer.join(timeout=5)
    assert killed, "no worker was killed: the test did not inject its fault"
    assert summary["trials"] == {"total": 1, "completed": 1, "stopped_early": 0, "failed": 0}
    trial = json.loads((Path(summary["storage"]) / "trials.json").read_text())[0]
    epochs = [h["epoch"] for h in trial["history"]]
    # The restarted worker resumed after the checkpointed epoch: epoch 1 was never trained twice.
    assert epochs.count(1.0) == 1 and max(epochs) == 4.0
