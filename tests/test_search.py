"""Sweeps on a real local Ray: Optuna + ASHA over the Ray Train loop, resources planned before launch,
stopped trials cleaned up, resume after the driver dies, a killed worker recovered from checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_spec_dict
from tunefleet.search.sweep import (
    PlanError, SweepExistsError, build_scheduler, run_sweep, seed_point, sweep_name, tune_space,
)
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
    from tunefleet.search.sweep import build_search_alg, first_point

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
    assert build_search_alg(spec)._points_to_evaluate == [champion]  # what Optuna tries first
    narrower = make_spec(tiny_model, tmp_path, tracking={"enabled": True, "uri": uri},
                         search={"space": {**SPACE, "train.lr": {"loguniform": [1.0e-4, 1.0e-3]}}, "seed_with_champion": True})
    assert first_point(narrower) == seed_point(narrower)  # the champion's lr lies outside: the spec's values


def test_tpe_samples_at_random_for_a_quarter_of_the_budget(tiny_model, tmp_path):
    from tunefleet.search.sweep import build_search_alg

    for trials, startup in ((8, 3), (16, 4), (40, 10), (100, 10)):
        spec = make_spec(tiny_model, tmp_path, search={"space": SPACE, "num_trials": trials})
        assert build_search_alg(spec)._sampler._n_startup_trials == startup


def test_scheduler_uses_epochs_as_time(tiny_model, tmp_path):
    spec = make_spec(tiny_model, tmp_path, search={"space": {"train.epochs": {"choice": [2, 5]}}, "grace_period": 2})
    asha = build_scheduler(spec)
    assert asha._time_attr == "epoch" and asha._max_t == 5
    milestones = sorted(rung[0] for rung in asha._brackets[0]._rungs)
    assert milestones[0] == 2  # nobody is stopped before the grace period


def test_train_runs_poll_often_and_skip_the_preemption_watcher_locally(monkeypatch, ray_cluster):
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

    # The suite's local cluster hands both to every Ray worker (Train controllers among them).
    @ray.remote(num_cpus=0)
    def seen() -> tuple:
        return os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"), os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")

    assert ray.get(seen.remote()) == ("0.5", "0")


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
def test_asha_stops_trials_and_leaves_nothing_behind(tiny_model, tmp_path, ray_cluster):
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
    assert all(t["epochs_run"] < 3 for t in trials if t["status"] == "stopped_early")
    assert summary["trial_epochs"] < 4 * 3  # early stopping saved compute
    best = min(t["best_value"] for t in trials if t["best_value"] is not None)
    assert summary["best"]["metrics"]["validation"]["loss"] == pytest.approx(best)
    assert 0.0 <= summary["best"]["metrics"]["test"]["accuracy"] <= 1.0
    # Every trial ended and released its workers: no placement group is left.
    deadline = time.time() + 30
    while live_placement_groups() and time.time() < deadline:
        time.sleep(1)
    assert live_placement_groups() == []
    # On a local cluster this sweep's Train runs started no preemption watcher (nothing here can be
    # drained). Only this job's actors count: other tests join the suite's cluster from subprocesses.
    import ray
    from ray.util.state import list_actors

    job = ray.get_runtime_context().get_job_id()
    assert list_actors(address=gcs_address(), limit=100,
                       filters=[("class_name", "=", "PreemptionWatcher"), ("job_id", "=", job)]) == []
    # Disk stays bounded: only the best trial keeps a checkpoint.
    kept = sorted(p.parent.name for p in (Path(summary["storage"]) / "train").glob("*/checkpoint_*") if p.is_dir())
    assert kept == [summary["best"]["trial_id"]]
    for plot in ("optimization_history", "parallel_coordinates", "param_importance", "learning_curves"):
        assert (Path(summary["storage"]) / f"{plot}.png").stat().st_size > 1000
    with pytest.raises(SweepExistsError, match="--resume"):
        run_sweep(spec)


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
                     search={"num_trials": 2, "scheduler": "none", "space": {"train.lr": {"loguniform": [5e-4, 2e-3]}}})
    summary = run_sweep(spec)
    assert summary["trials"] == {"total": 2, "completed": 2, "stopped_early": 0, "failed": 0}
    trials = json.loads((Path(summary["storage"]) / "trials.json").read_text())
    assert all(h["workers"] == 2 for t in trials for h in t["history"])


@pytest.mark.slow
def test_resume_after_the_driver_is_killed(tiny_model, tmp_path, ray_cluster):
    raw = tiny_spec_dict(tiny_model, tmp_path / "runs", train={"epochs": 2},
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
    finished_before = _wait_for_finished_trials(sweep_dir, 2, driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    summary = run_sweep(spec, resume=True)
    assert summary["trials"]["total"] == 4
    assert summary["trials"]["failed"] == 0
    trials = {t["trial_id"]: t for t in json.loads((sweep_dir / "trials.json").read_text())}
    for trial_id, before in finished_before.items():
        # A completed trial is kept, not re-run: it reported nothing after the resume.
        assert trial_id in trials
        assert (sweep_dir / trial_id / "result.json").read_text() == before


def _wait_for_finished_trials(sweep_dir: Path, count: int, driver: subprocess.Popen) -> dict[str, str]:
    deadline = time.time() + 240
    while time.time() < deadline:
        assert driver.poll() is None, "the sweep ended before it could be interrupted"
        state_files = sorted(sweep_dir.glob("experiment_state-*.json"))
        if state_files:
            try:
                text = state_files[-1].read_text()
            except OSError:
                text = ""
            finished = [d for d in sweep_dir.iterdir()
                        if d.is_dir() and (d / "result.json").exists() and d.name in text
                        and _trial_terminated(text, d.name)]
            if len(finished) >= count:
                return {d.name: (d / "result.json").read_text() for d in finished}
        time.sleep(0.5)
    raise AssertionError("trials did not finish in time")


def _trial_terminated(state_text: str, trial_id: str) -> bool:
    state = json.loads(state_text)
    for entry in state.get("trial_data", []):
        trial_json = entry[0] if isinstance(entry, list) else entry
        info = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        if info.get("trial_id") == trial_id:
            return info.get("status") == "TERMINATED"
    return False


@pytest.mark.slow
def test_a_killed_worker_recovers_from_its_checkpoint(tiny_model, tmp_path, ray_cluster):
    spec = make_spec(tiny_model, tmp_path, data={"format": "synthetic", "synthetic_size": 1200},
                     train={"epochs": 4, "early_stopping_patience": None},
                     search={"num_trials": 1, "scheduler": "none", "space": {"train.lr": {"choice": [1e-3]}}})
    train_dir = tmp_path / "runs" / sweep_name(spec) / "train"
    killed: list[int] = []

    def kill_a_worker_after_first_checkpoint():
        from ray.util.state import list_actors

        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            if list(train_dir.glob("*/checkpoint_*")):
                for actor in list_actors(address=gcs_address(),
                                         filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]):
                    os.kill(actor.pid, signal.SIGKILL)
                    killed.append(actor.pid)
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_worker_after_first_checkpoint, daemon=True)
    killer.start()
    summary = run_sweep(spec)
    killer.join(timeout=5)
    assert killed, "no worker was killed: the test did not inject its fault"
    assert summary["trials"] == {"total": 1, "completed": 1, "stopped_early": 0, "failed": 0}
    trial = json.loads((Path(summary["storage"]) / "trials.json").read_text())[0]
    epochs = [h["epoch"] for h in trial["history"]]
    # The restarted worker resumed after the checkpointed epoch: epoch 1 was never trained twice.
    assert epochs.count(1.0) == 1 and max(epochs) == 4.0
