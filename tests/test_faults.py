"""Faults injected for real, and what survives them:

- a trial whose loss turns NaN ends as failed with its reason; the sweep goes on and the healthy trial
  wins;
- a process killed (SIGKILL) while writing a checkpoint leaves nothing that the registry, a sweep's
  best-trial pick or a loader would use, and the next save publishes normally;
- the MLflow server going away mid-sweep: training goes on, the sweep's summary is intact (exit 1 and
  one error line saying what MLflow missed), and `--resume` once the server is back registers the best
  model without training again.

A Train worker killed mid-epoch is `tests/test_search.py::test_a_killed_worker_recovers_from_its_checkpoint`,
the sweep's driver killed (resume, searcher memory, one MLflow child run per trial) is
`tests/test_search.py::test_resume_after_the_driver_is_killed`;
the tracking store unreachable at start is `tests/test_tracking.py::
test_unreachable_server_is_one_line_and_exit_2_before_any_training`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import free_port, start_mlflow_server, stop_process_group, tiny_spec_dict
from tunefleet import cli
from tunefleet.tracking import runs as tracking
from tunefleet.search.sweep import TrialRecord, pick_best, run_sweep, sweep_name
from tunefleet.spec import load_spec, spec_from_dict

LR = {"train.lr": {"loguniform": [5.0e-4, 2.0e-3]}}


# ---- a diverging trial ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nan_model(tiny_model, tmp_path_factory) -> str:
    """The tiny BERT with NaN weights in one layer: every forward pass gives a NaN loss."""
    import torch
    from transformers import AutoTokenizer, BertModel

    folder = tmp_path_factory.mktemp("nan-bert")
    model = BertModel.from_pretrained(tiny_model)
    with torch.no_grad():
        model.encoder.layer[0].output.dense.weight.fill_(float("nan"))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return str(folder)


@pytest.mark.slow
def test_a_diverging_trial_fails_with_its_reason_and_the_sweep_goes_on(tiny_model, nan_model, tmp_path, ray_cluster):
    spec = spec_from_dict(tiny_spec_dict(
        tiny_model, tmp_path / "runs", train={"epochs": 2},
        search={"algorithm": "grid", "scheduler": "none", "space": {"model.name_or_path": {"grid": [nan_model, tiny_model]}}}))
    summary = run_sweep(spec)
    assert summary["trials"] == {"total": 2, "completed": 1, "stopped_early": 0, "failed": 1}
    trials = {t["config"]["model.name_or_path"]: t for t in json.loads((Path(summary["storage"]) / "trials.json").read_text())}
    diverged, healthy = trials[nan_model], trials[tiny_model]
    assert diverged["status"] == "failed" and "non-finite loss" in diverged["error"] and "epoch 1" in diverged["error"]
    assert diverged["best_value"] is None and diverged["checkpoint"] is None
    assert healthy["status"] == "completed" and healthy["epochs_run"] == 2
    assert summary["best"]["trial_id"] == healthy["trial_id"]
    assert 0.0 <= summary["best"]["metrics"]["test"]["accuracy"] <= 1.0


# ---- a crash while writing a checkpoint -----------------------------------------------------------

STALLED_SAVE = """
import sys, time
from pathlib import Path
from tunefleet.train.checkpoint import save_checkpoint
from tunefleet.tasks import get_task
from tunefleet.train.models import build_model, load_tokenizer

tiny, target, marker = sys.argv[1:4]
model = build_model(get_task("text-classification"), tiny, ["negative", "positive"], None)
tokenizer = load_tokenizer(tiny)

class StallingTokenizer:
    # The weights are on disk when the tokenizer is saved: stall there until the test kills us.
    def save_pretrained(self, folder):
        tokenizer.save_pretrained(folder)
        Path(marker).touch()
        time.sleep(600)

meta = {"task": "text-classification", "model_class": "AutoModelForSequenceClassification",
        "label_names": ["negative", "positive"], "base_model": tiny, "max_length": 32, "metric": "accuracy",
        "epoch": 1.0, "validation": {"accuracy": 0.9}, "spec": {}}
save_checkpoint(Path(target), model, StallingTokenizer(), meta, {"next_epoch": 1})
"""


def test_a_crash_while_writing_a_checkpoint_leaves_nothing_usable(tiny_model, tmp_path, monkeypatch):
    from tunefleet.train.checkpoint import IncompleteCheckpointError, load_for_inference, read_meta, save_checkpoint
    from tunefleet.tasks import get_task
    from tunefleet.train.models import build_model, load_tokenizer
    from tunefleet.tracking.registry import register_checkpoint

    target, marker = tmp_path / "checkpoint_000001" / "model", tmp_path / "stalled"
    writer = subprocess.Popen([sys.executable, "-c", STALLED_SAVE, tiny_model, str(target), str(marker)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert writer.poll() is None, writer.stderr.read()
        assert time.monotonic() < deadline, "the writer never reached the middle of its save"
        time.sleep(0.1)
    writer.send_signal(signal.SIGKILL)  # dies with weights and tokenizer written, metadata not
    writer.wait(timeout=30)

    partial = target.with_name(".model.partial")
    assert (partial / "model.safetensors").is_file() and not (partial / "tunefleet.json").exists()
    assert not target.exists(), "a half-written checkpoint was published"
    # A copy under the published name (as a careless sync tool might leave it) is refused the same way.
    looks_published = tmp_path / "copied" / "model"
    import shutil

    shutil.copytree(partial, looks_published)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for folder in (partial, target, looks_published):
        with pytest.raises(IncompleteCheckpointError, match="not a complete tunefleet checkpoint"):
            register_checkpoint(str(folder), "crashed", {"accuracy": 0.99}, tracking_uri=uri)
        with pytest.raises(IncompleteCheckpointError):
            load_for_inference(folder)
    client = tracking.client_for(uri)
    assert client.search_registered_models() == []

    # The next save of that trial cleans the leftover staging folder and publishes a complete one.
    model = build_model(get_task("text-classification"), tiny_model, ["negative", "positive"], None)
    meta = {"task": "text-classification", "model_class": "AutoModelForSequenceClassification",
            "label_names": ["negative", "positive"], "base_model": tiny_model, "max_length": 32,
            "metric": "accuracy", "epoch": 2.0, "validation": {"accuracy": 0.6}, "spec": {}}
    save_checkpoint(target, model, load_tokenizer(tiny_model), meta, {"next_epoch": 2})
    assert read_meta(target)["epoch"] == 2.0
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]

    # A sweep never picks a half-written checkpoint as its best, however good its reported metric.
    trials = [TrialRecord("torn", {}, "completed", best_value=0.99, checkpoint=str(looks_published)),
              TrialRecord("whole", {}, "completed", best_value=0.60, checkpoint=str(target))]
    assert pick_best(trials, "max").trial_id == "whole"
    assert pick_best(trials[:1], "max") is None
    registered = register_checkpoint(str(target), "crashed", {"accuracy": 0.6}, tracking_uri=uri)
    assert registered["version"] == 1


# ---- the driver killed, with MLflow tracking ------------------------------------------------------

# ---- the MLflow server going away mid-sweep -------------------------------------------------------

@pytest.mark.slow
def test_the_tracking_server_going_away_mid_sweep_costs_no_result(tiny_model, tmp_path, ray_cluster, capsys):
    folder, port = tmp_path / "mlflow", free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(f"sqlite:///{folder / 'mlflow.db'}", folder, port)
    try:
        # The server goes down as soon as the first trial has its MLflow run: that trial then trains
        # and reports with the server gone, and the second can only start once the first has ended.
        # (Waiting for the first report instead raced with fast trials: by the time Tune wrote it, the
        # second trial could already have opened its run.)
        raw = tiny_spec_dict(tiny_model, tmp_path / "runs", name="outage", train={"epochs": 4},
                             tracking={"uri": uri, "enabled": True},
                             search={"algorithm": "random", "num_trials": 2, "max_concurrent": 1, "scheduler": "none",
                                     "seed_with_spec": False, "space": LR})
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(raw))
        sweep_dir = tmp_path / "runs" / sweep_name(load_spec(path))
        killed = threading.Event()

        def first_trial_run_exists() -> bool:
            client = tracking.client_for(uri)
            experiments = [e.experiment_id for e in client.search_experiments()]
            return any(tracking.PARENT_TAG in run.data.tags for run in client.search_runs(experiments))

        def stop_the_server_once_the_first_trial_is_tracked():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if first_trial_run_exists():
                    stop_process_group(server)
                    killed.set()
                    return
                time.sleep(0.1)

        watcher = threading.Thread(target=stop_the_server_once_the_first_trial_is_tracked, daemon=True)
        watcher.start()
        code = cli.main(["sweep", str(path)])
        watcher.join(timeout=5)
        assert killed.is_set(), "the server was never stopped: the test did not inject its fault"
        captured = capsys.readouterr()

        # Training went on: both trials completed, the summary is whole and on disk, MLflow's part says
        # what went wrong, the command exits 1 with one line saying so.
        assert code == cli.EXIT_TRACKING_INCOMPLETE
        summary = json.loads(captured.out.strip().splitlines()[-1])
        assert summary == json.loads((sweep_dir / "summary.json").read_text())
        assert summary["trials"] == {"total": 2, "completed": 2, "stopped_early": 0, "failed": 0}
        assert 0.0 <= summary["best"]["metrics"]["test"]["accuracy"] <= 1.0
        assert Path(summary["best"]["checkpoint"], "tunefleet.json").is_file()
        assert "cannot use the MLflow tracking store" in summary["mlflow"]["error"] and "--resume" in summary["mlflow"]["error"]
        assert summary["registered"] == {"error": summary["mlflow"]["error"]}
        errors = [line for line in captured.err.splitlines() if line.startswith("tunefleet:")]
        assert errors == [f"tunefleet: error: {summary['mlflow']['error']}"]

        # The server comes back: --resume trains nothing again, logs the end states and registers.
        server = start_mlflow_server(f"sqlite:///{folder / 'mlflow.db'}", folder, port)
        resumed = run_sweep(load_spec(path), resume=True)
        assert resumed["trial_epochs"] == summary["trial_epochs"] and resumed["best"]["trial_id"] == summary["best"]["trial_id"]
        assert resumed["registered"]["version"] == 1 and resumed["registered"]["aliases"] == ["champion"]
        client = tracking.client_for(uri)
        parent = client.get_run(resumed["mlflow"]["parent_run_id"])
        assert parent.info.status == "FINISHED" and parent.info.run_id == summary["mlflow"]["parent_run_id"]
        children = client.search_runs([parent.info.experiment_id], f"tags.`{tracking.PARENT_TAG}` = '{parent.info.run_id}'")
        # The first trial started while the server was up: its run exists, ended by the resume. The
        # second started while it was down and trained untracked (the policy: never fail a trial for MLflow).
        assert len(children) == 1 and children[0].info.status == "FINISHED"
    finally:
        stop_process_group(server)


# ---- never more trials at once than planned -------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["random", "grid", "optuna"])
def test_every_search_algorithm_keeps_to_the_planned_concurrency(algorithm, tiny_model, tmp_path):
    """Tune applies `max_concurrent_trials` only to a `Searcher` (Optuna); random and grid search would
    silently start every trial at once, each waiting on workers the cluster does not have."""
    from ray.tune.search import ConcurrencyLimiter, Searcher

    from tunefleet.search.sweep import build_search_alg

    space = {"train.lr": {"grid": [1e-4, 1e-3]}} if algorithm == "grid" else LR
    spec = spec_from_dict(tiny_spec_dict(tiny_model, tmp_path, search={"algorithm": algorithm, "space": space}))
    search = build_search_alg(spec, 2)
    if isinstance(search, Searcher):
        assert not isinstance(search, ConcurrencyLimiter)  # Tune wraps it with max_concurrent_trials
    else:
        assert search.max_concurrent == 2
