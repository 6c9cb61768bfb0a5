"""MLflow tracking: one parent run per sweep with a nested child run per trial, or one run per `train`.

Where runs go: the spec's `tracking.uri`, else `$MLFLOW_TRACKING_URI`, else the embedded default,
`sqlite:///<cwd>/mlflow.db` with artifacts in `<cwd>/mlartifacts` (no server to start). Any store
MLflow speaks works: SQLite, PostgreSQL, or an `mlflow server` over HTTP.

How the runs are made, and why:
- Every call names its run by id through `MlflowClient`; nothing relies on `mlflow.start_run`'s
  thread-local active run, which is wrong the moment trials run on other processes and nodes.
- The driver creates the sweep's parent run and stores its id in `<sweep_dir>/mlflow.json`, so
  `--resume` keeps logging into the same parent. Each trial creates (or, on resume, finds again by
  its `tunefleet.trial_id` tag) its child run, tagged `mlflow.parentRunId`, and hands the id to its
  Train workers; rank 0 alone logs, through `RunLogger` (batched, from a background thread).
- A trial that ASHA stops is killed and cannot mark itself, so the driver sets every child's end
  state after the sweep: FINISHED, KILLED with `tunefleet.end_state=stopped_early`, or FAILED.
- A tracking store that cannot be reached is reported in one line before any training starts.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..train.runlog import RunLogger
from ..spec import Spec

log = logging.getLogger("tunefleet.tracking")

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
TRIAL_TAG = "tunefleet.trial_id"
END_STATE_TAG = "tunefleet.end_state"
# The end state of a trial's run that its sweep lost track of (started just before the driver died).
ORPHANED = "orphaned"
PARENT_TAG = "mlflow.parentRunId"
# MLflow's limit on a param value; longer ones (a big search space) are cut, the full text is an artifact.
MAX_PARAM = 6000
_END_STATUS = {"completed": "FINISHED", "stopped_early": "KILLED", "failed": "FAILED"}

__all__ = ["RunLogger", "TrackingError", "TrackingTarget", "tracking_uri", "check_reachable", "client_for",
           "ensure_experiment", "start_sweep_run", "start_child_run", "start_single_run", "finish_sweep",
           "finish_single_run", "end_run", "local_store_path"]


class TrackingError(ValueError):
    """The tracking store cannot be used (unreachable server, unwritable database); bad input, exit 2."""


@dataclass(frozen=True)
class TrackingTarget:
    """Where one run logs: what the driver keeps and (as `to_config()`) what it hands to workers."""

    tracking_uri: str
    experiment: str
    experiment_id: str
    run_id: str

    def to_config(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "experiment_id": self.experiment_id, "run_id": self.run_id}

    def summary(self, key: str = "run_id") -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment, key: self.run_id}


# ---- the store ------------------------------------------------------------------------------------

def tracking_uri(configured: str | None = None) -> str:
    """The spec's URI, else `$MLFLOW_TRACKING_URI`, else SQLite `mlflow.db` in the working folder."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd().resolve() / DEFAULT_DB}"


def local_store_path(uri: str) -> Path | None:
    """The database file (SQLite) or folder (file store) of a store on this machine, else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).resolve() if uri != "sqlite:///:memory:" else None
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://")).resolve()
    if "://" not in uri:
        return Path(uri).resolve()
    return None


def client_for(uri: str) -> Any:
    """An `MlflowClient` for tracking and registry at `uri`.

    A new SQLite database is created (and migrated) under a file lock: two processes opening a fresh
    `mlflow.db` at once would otherwise both run the schema migrations and one would fail.
    """
    from mlflow import MlflowClient

    database = local_store_path(uri) if uri.startswith("sqlite:///") else None
    if database is None or uri in _READY_STORES:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    import fcntl

    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.parent / f".{database.name}.init-lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_experiments(max_results=1)  # builds (and migrates) the tracking store
            client.search_registered_models(max_results=1)  # and the registry store
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _READY_STORES.add(uri)
    return client


_READY_STORES: set[str] = set()


def check_reachable(uri: str, timeout: float = 5.0, busy_timeout: float = 60.0) -> None:
    """One cheap call with a short timeout and no retries, so a wrong URI fails in seconds, not minutes.

    A server that took the connection but answered too slowly is not a wrong URI: a busy machine, or
    a server building its database on first use, can take longer than `timeout`. It gets one more
    call of `busy_timeout` seconds; a refused connection or an unknown host fails at once.

    Raises:
        TrackingError: one line naming the URI, the reason and the fix.
    """
    for wait in (timeout, busy_timeout):
        try:
            _probe(uri, wait)
            return
        except Exception as exc:  # noqa: BLE001 - any failure here means the store is unusable
            failure = exc
        busy = "read timed out" in str(failure).lower()
        if not busy:
            break
        log.info("tracking: %s took over %.0fs to answer", uri, wait)
    if busy:
        reason = f"it took the connection but did not answer within {busy_timeout:.0f}s"
    else:
        reason = (str(failure).strip().splitlines() or [type(failure).__name__])[0][:300]
    raise TrackingError(f"tracking: cannot use the MLflow tracking store {uri} ({reason}); start the server "
                        "or fix tracking.uri / MLFLOW_TRACKING_URI, or set tracking.enabled=false") from None


def _probe(uri: str, timeout: float) -> None:
    """`search_experiments` with no retries and `timeout` seconds (whole seconds, as MLflow reads it)."""
    overrides = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, round(timeout)))}
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        client_for(uri).search_experiments(max_results=1)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ensure_experiment(client: Any, uri: str, name: str) -> str:
    """The experiment's id, created if missing. On a store on this machine its artifact location is
    set explicitly beside the database, so artifacts never land in whatever folder MLflow guesses."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    store = local_store_path(uri)
    location = None
    if store is not None:
        root = store.parent if store.suffix == ".db" or uri.startswith("sqlite") else store
        location = (root / DEFAULT_ARTIFACTS / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it a moment ago
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


# ---- runs -----------------------------------------------------------------------------------------

def _open_experiment(spec: Spec) -> tuple[str, Any, str, str]:
    """(tracking URI, client, experiment name, experiment id) for the spec, the store checked
    reachable first so that an outage fails before any training."""
    uri = tracking_uri(spec.tracking.uri)
    check_reachable(uri)
    client = client_for(uri)
    experiment = spec.tracking.experiment or spec.name
    return uri, client, experiment, ensure_experiment(client, uri, experiment)


def start_sweep_run(spec: Spec, sweep_name: str, sweep_dir: Path, resume: bool) -> TrackingTarget | None:
    """The sweep's parent run: reused from `<sweep_dir>/mlflow.json` on resume, else created.

    Returns:
        None when `tracking.enabled` is false.

    Raises:
        TrackingError: the store is unreachable (checked before any training).
    """
    if not spec.tracking.enabled:
        return None
    uri, client, experiment, experiment_id = _open_experiment(spec)
    state_file = Path(sweep_dir) / "mlflow.json"
    if resume and state_file.is_file():
        saved = json.loads(state_file.read_text())
        if saved.get("tracking_uri") == uri:
            client.update_run(saved["parent_run_id"], status="RUNNING")
            return TrackingTarget(uri, experiment, saved["experiment_id"], saved["parent_run_id"])
    tags = {"mlflow.runName": sweep_name, "tunefleet.kind": "sweep", "tunefleet.sweep": sweep_name,
            **_finetuning_tags(spec), **_context_tags()}
    run = client.create_run(experiment_id, run_name=sweep_name, tags=tags)
    target = TrackingTarget(uri, experiment, experiment_id, run.info.run_id)
    params = _flat_params(spec) | {"search.space": json.dumps(spec.search.space, sort_keys=True)[:MAX_PARAM]}
    _log_params(client, target.run_id, params)
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"tracking_uri": uri, "experiment_id": experiment_id,
                                      "parent_run_id": target.run_id}, indent=2))
    return target


def start_child_run(tracking: dict[str, Any] | None, trial_id: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """A trial's child run under the sweep's parent, found again if it exists (retried or resumed
    trial), so no trial is logged twice. Runs wherever the trial runs; everything is by explicit id.

    Returns:
        `{"tracking_uri", "run_id"}` for the trial's Train workers, or None when untracked.
    """
    if not tracking:
        return None
    client = client_for(tracking["tracking_uri"])
    parent = tracking["run_id"]
    existing = client.search_runs(
        [tracking["experiment_id"]],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{TRIAL_TAG}` = '{trial_id}'", max_results=1)
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run = client.create_run(tracking["experiment_id"], run_name=trial_id,
                                tags={PARENT_TAG: parent, TRIAL_TAG: trial_id, "tunefleet.kind": "trial"})
        run_id = run.info.run_id
        _log_params(client, run_id, {k: v for k, v in config.items()})
    return {"tracking_uri": tracking["tracking_uri"], "run_id": run_id}


def start_single_run(spec: Spec, run_name: str) -> TrackingTarget | None:
    """`tunefleet train`'s run (None when tracking is disabled); checked reachable before training."""
    if not spec.tracking.enabled:
        return None
    uri, client, experiment, experiment_id = _open_experiment(spec)
    run = client.create_run(experiment_id, run_name=run_name,
                            tags={"mlflow.runName": run_name, "tunefleet.kind": "train", **_finetuning_tags(spec),
                                  **_context_tags()})
    target = TrackingTarget(uri, experiment, experiment_id, run.info.run_id)
    _log_params(client, target.run_id, _flat_params(spec))
    return target


def end_run(target: TrackingTarget | None, status: str) -> None:
    """Mark a run FINISHED / FAILED / KILLED; never raises (it runs on error paths)."""
    if target is None:
        return
    try:
        client_for(target.tracking_uri).set_terminated(target.run_id, status)
    except Exception as exc:  # noqa: BLE001
        log.warning("mlflow: could not mark run %s %s: %s", target.run_id, status, exc)


def finish_sweep(target: TrackingTarget | None, spec: Spec, sweep_dir: Path, trials: list[Any],
                 best: dict[str, Any] | None, tags: dict[str, str] | None = None) -> dict[str, Any] | None:
    """After the sweep: set every child's end state and log the parent's artifacts and best metrics.

    Args:
        trials: the sweep's `TrialRecord`s.
        best: the summary's `best` entry (trial id, checkpoint, validation and test metrics) or None.
        tags: more tags for the parent run (e.g. what the sweep warm-started from).

    Returns:
        `{"tracking_uri", "experiment", "parent_run_id"}` for the sweep's summary, or None untracked.
    """
    if target is None:
        return None
    client = client_for(target.tracking_uri)
    children = {run.data.tags.get(TRIAL_TAG): run for run in client.search_runs(
        [target.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{target.run_id}'", max_results=5000)}
    for trial in trials:
        run = children.pop(trial.trial_id, None)
        if run is None:
            continue
        client.set_tag(run.info.run_id, END_STATE_TAG, trial.status)
        if trial.error:
            client.set_tag(run.info.run_id, "tunefleet.error", trial.error[:5000])
        client.set_terminated(run.info.run_id, _END_STATUS.get(trial.status, "FINISHED"))
    for run in children.values():
        # A trial the killed driver had started after Tune last saved its state: the resumed sweep
        # never heard of it and ran another in its place. Its run stays visible, marked as such.
        client.set_tag(run.info.run_id, END_STATE_TAG, ORPHANED)
        client.set_terminated(run.info.run_id, "KILLED")
    for key, value in (_cluster_shape() | (tags or {})).items():
        client.set_tag(target.run_id, key, value)
    with _staging() as folder:
        (folder / "spec.yaml").write_text(_spec_yaml(spec))
        _write_trials_csv(folder / "trials.csv", trials)
        for name in ("spec.yaml", "trials.csv"):
            client.log_artifact(target.run_id, str(folder / name))
        for plot in sorted(Path(sweep_dir).glob("*.png")):
            client.log_artifact(target.run_id, str(plot), "plots")
        if best is not None:
            test = best["metrics"]["test"]
            (folder / "test_report.json").write_text(json.dumps(test, indent=2, default=str))
            client.log_artifact(target.run_id, str(folder / "test_report.json"))
            client.set_tag(target.run_id, "tunefleet.best_trial", best["trial_id"])
            _log_metrics(client, target.run_id, {f"test_{k}": v for k, v in test.items()}
                         | {f"val_{k}": v for k, v in best["metrics"]["validation"].items()})
    return target.summary("parent_run_id")


def finish_single_run(target: TrackingTarget | None, summary: dict[str, Any], spec: Spec) -> dict[str, Any] | None:
    """`tunefleet train`'s end: test metrics, the test report and the spec; the run ends FINISHED."""
    if target is None:
        return None
    client = client_for(target.tracking_uri)
    test = summary["metrics"]["test"]
    _log_metrics(client, target.run_id, {f"test_{k}": v for k, v in test.items()}
                 | {"train_seconds": summary.get("train_seconds")})
    with _staging() as folder:
        (folder / "test_report.json").write_text(json.dumps(test, indent=2, default=str))
        (folder / "spec.yaml").write_text(_spec_yaml(spec))
        for name in ("test_report.json", "spec.yaml"):
            client.log_artifact(target.run_id, str(folder / name))
    client.set_tag(target.run_id, "tunefleet.checkpoint", str(summary.get("checkpoint")))
    client.set_terminated(target.run_id, "FINISHED")
    return target.summary()


# ---- helpers --------------------------------------------------------------------------------------

def _flat_params(spec: Spec) -> dict[str, Any]:
    """The spec as dotted params (`train.lr`, and nested sections too: `train.peft.r`); the search
    space is logged whole, apart."""
    raw = spec.to_dict()
    raw["search"] = {k: v for k, v in raw["search"].items() if k != "space"}
    flat: dict[str, Any] = {}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                add(f"{prefix}.{key}" if prefix else key, inner)
        else:
            flat[prefix] = value

    add("", raw)
    return flat


def _finetuning_tags(spec: Spec) -> dict[str, str]:
    """How the run trains: `full` (every weight) or `lora`, with LoRA's settings in one readable tag."""
    lora = spec.train.peft
    if lora is None:
        return {"tunefleet.finetuning": "full"}
    targets = ",".join(lora.target_modules) if lora.target_modules else "default"
    return {"tunefleet.finetuning": lora.method,
            "tunefleet.peft": f"r={lora.r} alpha={lora.alpha:g} dropout={lora.dropout:g} target_modules={targets}"}


def _log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(str(k), str(v)[:MAX_PARAM]) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[start:start + 100])


def _log_metrics(client: Any, run_id: str, metrics: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if items:
        client.log_batch(run_id, metrics=items)


def _context_tags() -> dict[str, str]:
    """Git commit and library versions: what it takes to reproduce a run."""
    from importlib.metadata import PackageNotFoundError, version

    tags = {}
    for package in ("tunefleet", "torch", "transformers", "ray", "mlflow", "optuna"):
        try:
            tags[f"tunefleet.version.{package}"] = version(package)
        except PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5)
        if commit.returncode == 0:
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return tags


def _cluster_shape() -> dict[str, str]:
    try:
        import ray

        if not ray.is_initialized():
            return {}
        total = ray.cluster_resources()
        return {"tunefleet.cluster.nodes": str(len([n for n in ray.nodes() if n.get("Alive")])),
                "tunefleet.cluster.cpus": f"{total.get('CPU', 0):g}", "tunefleet.cluster.gpus": f"{total.get('GPU', 0):g}"}
    except Exception:  # noqa: BLE001 - a tag is not worth failing the sweep
        return {}


def _spec_yaml(spec: Spec) -> str:
    import yaml

    return yaml.safe_dump(spec.to_dict(), sort_keys=False)


def _write_trials_csv(path: Path, trials: list[Any]) -> None:
    keys = sorted({k for t in trials for k in t.config})
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial_id", "status", "best_value", "epochs_run", "train_seconds", "error", *keys])
        for t in trials:
            writer.writerow([t.trial_id, t.status, t.best_value, t.epochs_run, t.train_seconds, t.error or "",
                             *(t.config.get(k, "") for k in keys)])


@contextlib.contextmanager
def _staging() -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tunefleet-mlflow-") as folder:
        yield Path(folder)
