"""MLflow tracking against real stores: a SQLite file, and a real `mlflow server` over HTTP with the
sweep's trials running on Ray workers."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import free_port, tiny_spec_dict
from tunefleet.tracking import runs as tracking
from tunefleet.search.sweep import TrialRecord
from tunefleet.spec import spec_from_dict

TEXTS = ["great value, works as described", "broke after a week, avoid", "it is fine"]


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_run_logger_batches_and_never_raises(tmp_path, monkeypatch):
    uri = _sqlite(tmp_path)
    client = tracking.client_for(uri)
    run_id = client.create_run(tracking.ensure_experiment(client, uri, "logger")).info.run_id
    logger = tracking.RunLogger(uri, run_id)
    for step in (1, 2, 3):
        logger.log_metrics({"train_loss": 1.0 / step, "epoch": step, "note": "not a number", "bad": float("nan")}, step)
    logger.close()
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train_loss")] == \
        [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert set(client.get_run(run_id).data.metrics) == {"train_loss", "epoch"}

    # A server that is gone: logging never sends from the caller's thread nor waits for the sender,
    # closing drops what could not be sent, nothing raises. Each send is held until log_metrics has
    # returned: had log_metrics waited for it, the hold would have run out instead of being released.
    from mlflow import MlflowClient

    released, sends = threading.Event(), []

    def held_log_batch(self, *args, **kwargs):
        sends.append({"caller's thread": threading.current_thread() is threading.main_thread(),
                      "released": released.wait(timeout=120)})
        raise ConnectionError("the server is gone")

    monkeypatch.setattr(MlflowClient, "log_batch", held_log_batch)
    dead = tracking.RunLogger(f"http://127.0.0.1:{free_port()}", "0" * 32, retries=2, backoff=0.01)
    dead.log_metrics({"train_loss": 1.0}, 1)
    released.set()
    deadline = time.monotonic() + 60
    while dead.dropped == 0 and time.monotonic() < deadline:  # not closing: every attempt is made
        time.sleep(0.01)
    dead.close(timeout=120)
    assert sends == [{"caller's thread": False, "released": True}] * 2  # two attempts, then dropped
    assert dead.dropped == 1

    # Closing, a failed send is not retried, and what is queued behind it is dropped with it: a
    # trial whose server is gone ends at once. A retry here would wait 60 s, then be held again
    # until close() gave up at 120 s, with two sends made.
    sends.clear()
    released.clear()
    closing = tracking.RunLogger(f"http://127.0.0.1:{free_port()}", "0" * 32, retries=5, backoff=60)
    closing.log_metrics({"train_loss": 1.0}, 1)
    closing.log_metrics({"train_loss": 0.5}, 2)
    threading.Timer(0.5, released.set).start()  # the send fails only once close() is waiting on it
    closing.close(timeout=120)
    assert sends == [{"caller's thread": False, "released": True}]
    assert closing.dropped == 2


def test_unreachable_server_is_one_line_and_exit_2_before_any_training(tmp_path, tiny_model, capsys):
    from tunefleet.cli import main

    spec = tiny_spec_dict(tiny_model, tmp_path / "runs", tracking={"uri": f"http://127.0.0.1:{free_port()}", "enabled": True})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    for command in ("train", "sweep"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot use the MLflow tracking store http://127.0.0.1" in err[0], err
        assert "tracking.enabled=false" in err[0]
    assert not (tmp_path / "runs").exists()  # nothing was trained


class _SlowMlflow:
    """A real HTTP server on loopback that answers MLflow's experiment search after `delay` seconds:
    a server that took the connection but is busy."""

    def __init__(self, delay: float) -> None:
        import http.server
        import time

        outer = self
        self.calls = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.calls += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay)
                body = b'{"experiments": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_slow_server_is_waited_for_and_a_silent_one_named(monkeypatch):
    """The reachability check gives up on a wrong address at once, but a server that took the
    connection and answers after the short timeout is busy, not wrong: it gets the longer wait."""
    import time

    monkeypatch.setattr(tracking, "_READY_STORES", set())
    slow = _SlowMlflow(delay=2.5)
    try:
        tracking.check_reachable(slow.uri, timeout=1, busy_timeout=10)  # answered at 2.5 s: no error
        assert slow.calls == 2  # the 1 s call timed out, the 10 s one was answered
    finally:
        slow.close()
    silent = _SlowMlflow(delay=30)
    try:
        started = time.monotonic()
        with pytest.raises(tracking.TrackingError, match=f"cannot use the MLflow tracking store {silent.uri} .it took the connection but did not answer within 2s"):
            tracking.check_reachable(silent.uri, timeout=1, busy_timeout=2)
        assert time.monotonic() - started < 10 and silent.calls == 2
    finally:
        silent.close()


def test_child_end_states_orphans_artifacts_and_resume_are_idempotent(tmp_path):
    uri = _sqlite(tmp_path)
    spec = spec_from_dict({"name": "states", "task": "text-classification", "data": {"format": "synthetic"},
                           "tracking": {"uri": uri},
                           "search": {"space": {"train.lr": {"loguniform": [1e-5, 1e-3]}}}})
    sweep_dir = tmp_path / "sweep"
    parent = tracking.start_sweep_run(spec, "states-1234", sweep_dir, resume=False)
    assert json.loads((sweep_dir / "mlflow.json").read_text())["parent_run_id"] == parent.run_id
    # "d": a trial a killed driver started after Tune's last state save; the resumed sweep never
    # heard of it, so it is not among the trials below.
    children = {t: tracking.start_child_run(parent.to_config(), t, {"train.lr": 1e-4})["run_id"] for t in "abcd"}
    (sweep_dir / "curves.png").write_bytes(b"\x89PNG\r\n")
    trials = [TrialRecord("a", {"train.lr": 1e-4}, "completed", best_value=0.9),
              TrialRecord("b", {"train.lr": 1e-4}, "stopped_early", best_value=0.5),
              TrialRecord("c", {"train.lr": 1e-4}, "failed", error="boom")]
    best = {"trial_id": "a", "metrics": {"validation": {"accuracy": 0.9},
                                         "test": {"accuracy": 0.8, "report": {"positive": {"f1-score": 0.8}}}}}
    info = tracking.finish_sweep(parent, spec, sweep_dir, trials, best)
    tracking.end_run(parent, "FINISHED")
    assert info == {"tracking_uri": uri, "experiment": "states", "parent_run_id": parent.run_id}

    client = tracking.client_for(uri)
    runs = {t: client.get_run(r) for t, r in children.items()}
    assert {t: (r.info.status, r.data.tags[tracking.END_STATE_TAG]) for t, r in runs.items()} == {
        "a": ("FINISHED", "completed"), "b": ("KILLED", "stopped_early"), "c": ("FAILED", "failed"),
        "d": ("KILLED", tracking.ORPHANED)}
    assert runs["c"].data.tags["tunefleet.error"] == "boom"
    assert all(r.data.tags[tracking.PARENT_TAG] == parent.run_id for r in runs.values())
    assert runs["a"].data.params == {"train.lr": "0.0001"}
    top = client.get_run(parent.run_id)
    assert top.data.params["train.lr"] and "train.lr" in top.data.params["search.space"]
    assert top.data.metrics["test_accuracy"] == 0.8 and "tunefleet.version.mlflow" in top.data.tags
    names = {a.path for a in client.list_artifacts(parent.run_id)} | \
        {a.path for a in client.list_artifacts(parent.run_id, "plots")}
    assert {"spec.yaml", "trials.csv", "test_report.json", "plots/curves.png"} <= names

    # --resume: the same parent, and a trial that runs again finds its child instead of a new one.
    again = tracking.start_sweep_run(spec, "states-1234", sweep_dir, resume=True)
    assert again.run_id == parent.run_id
    assert tracking.start_child_run(again.to_config(), "b", {"train.lr": 1e-4})["run_id"] == children["b"]
    assert len(client.search_runs([parent.experiment_id], f"tags.`{tracking.PARENT_TAG}` = '{parent.run_id}'")) == 4

    off = spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"enabled": False})})
    assert tracking.start_sweep_run(off, "x", tmp_path / "off", resume=False) is None
    assert not (tmp_path / "off").exists()


@pytest.mark.slow
def test_train_logs_one_run(tmp_path, tiny_model, ray_cluster):
    from tunefleet.search.single import run_train

    uri = _sqlite(tmp_path)
    spec = spec_from_dict(tiny_spec_dict(tiny_model, tmp_path / "runs", name="single", tracking={"uri": uri, "enabled": True},
                                         train={"epochs": 2}))
    summary = run_train(spec)
    run = tracking.client_for(uri).get_run(summary["mlflow"]["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["tunefleet.kind"] == "train"
    assert run.data.params["train.epochs"] == "2"
    assert run.data.metrics["test_accuracy"] == pytest.approx(summary["metrics"]["test"]["accuracy"])
    history = tracking.client_for(uri).get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == sorted(m.step for m in history) and len(history) == 2
    assert {"train_loss", "lr", "tokens_per_second", "val_loss"} <= set(run.data.metrics)
    assert {"test_report.json", "spec.yaml"} <= {a.path for a in tracking.client_for(uri).list_artifacts(run.info.run_id)}


@pytest.mark.slow
def test_sweep_over_http_with_ray_workers(tmp_path, tiny_model, ray_cluster, mlflow_server, monkeypatch):
    import mlflow.pyfunc
    import pandas as pd

    from tunefleet.train.predict import Predictor
    from tunefleet.search.sweep import run_sweep

    spec = spec_from_dict(tiny_spec_dict(
        tiny_model, tmp_path / "runs", name="tracked-sweep", tracking={"uri": mlflow_server, "enabled": True},
        train={"epochs": 2},
        search={"algorithm": "random", "scheduler": "none", "num_trials": 2, "seed_with_spec": False,
                "space": {"train.lr": {"loguniform": [3.0e-4, 3.0e-3]}}}))
    summary = run_sweep(spec)
    parent_id = summary["mlflow"]["parent_run_id"]
    assert summary["mlflow"] == {"tracking_uri": mlflow_server, "experiment": "tracked-sweep", "parent_run_id": parent_id}
    registered = summary["registered"]
    assert registered["name"] == "tracked-sweep" and registered["version"] == 1
    assert registered["aliases"] == ["champion"] and registered["promoted"]["promoted"] is True
    # The best model's per-example test results, kept for the paired promotion gate: their
    # accuracy, counted by hand, is the test accuracy the summary reports.
    record = json.loads((Path(summary["storage"]) / "test_predictions.json").read_text())
    hits = [p == g for p, g in zip(record["predicted"], record["gold"])]
    assert len(hits) == record["examples"] > 0
    assert sum(hits) / len(hits) == pytest.approx(summary["best"]["metrics"]["test"]["accuracy"])

    client = tracking.client_for(mlflow_server)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["tunefleet.best_trial"] == summary["best"]["trial_id"]
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"spec.yaml", "trials.csv", "test_report.json", "model"} <= artifacts
    children = client.search_runs([parent.info.experiment_id], f"tags.`{tracking.PARENT_TAG}` = '{parent_id}'")
    trials = json.loads((Path(summary["storage"]) / "trials.json").read_text())
    assert sorted(c.data.tags[tracking.TRIAL_TAG] for c in children) == sorted(t["trial_id"] for t in trials)
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags[tracking.END_STATE_TAG] == "completed"
        assert "train.lr" in child.data.params
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert len(history) == 2, "one validation point per epoch"
        assert {"train_loss", "lr", "tokens_per_second", "epoch"} <= set(child.data.metrics)

    # The registered pyfunc answers like the checkpoint it came from.
    # Not mlflow.set_tracking_uri: it outlives the test (a global, and $MLFLOW_TRACKING_URI too).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    model = mlflow.pyfunc.load_model("models:/tracked-sweep@champion")
    got = model.predict(pd.DataFrame({"text": TEXTS}))
    want = Predictor(summary["best"]["checkpoint"]).predict(TEXTS)
    assert got["label"].tolist() == [w["label"] for w in want]

    # --resume logs nothing twice: same parent, same children.
    resumed = run_sweep(spec, resume=True)
    assert resumed["mlflow"]["parent_run_id"] == parent_id
    assert len(client.search_runs([parent.info.experiment_id], f"tags.`{tracking.PARENT_TAG}` = '{parent_id}'")) == 2
    # It registered the same model again: on the same test examples with the same predictions, the
    # paired gate sees no advantage at all, and the first version stays champion.
    again = resumed["registered"]
    assert again["version"] == 2 and again["promoted"]["promoted"] is False
    assert again["promoted"]["paired"]["advantage"] == 0.0 and again["promoted"]["paired"]["interval"] == [0.0, 0.0]
    assert client.get_model_version("tracked-sweep", "2").tags["tunefleet.test_examples"] == str(record["examples"])
