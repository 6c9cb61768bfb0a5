"""`tunefleet train`: one run with the spec's fixed hyperparameters, tracked as one MLflow run.

The smallest search there is: the spec's own point, trained once and tracked: in one Ray task for
one worker, on Ray Train for several (`train.launch`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..tracking import runs as tracking
from ..cluster import plan_resources, start_ray, storage_uri
from ..spec import Spec
from ..train.launch import fit_and_score, prepare_data

log = logging.getLogger("tunefleet")


def run_train(spec: Spec, run_name: str | None = None) -> dict[str, Any]:
    """`tunefleet train`: one run with the spec's fixed hyperparameters, tracked as one MLflow run.

    Returns:
        The summary printed as the command's last line (task, model, metrics, checkpoint, `mlflow`).

    Raises:
        TrackingError: the tracking store is unreachable (before any training).
    """
    # Bad input (an unreachable store, bad data, a plan the cluster cannot host) is refused before
    # anything is written to MLflow; only then the run is created.
    if spec.tracking.enabled:
        tracking.check_reachable(tracking.tracking_uri(spec.tracking.uri))
    prepared = prepare_data(spec)
    log.info("data: %s", {k: len(v) for k, v in prepared.tokenized.items()})
    start_ray(spec)
    plan_resources(spec)
    run_name = run_name or claim_run_name(spec)
    target = tracking.start_single_run(spec, run_name)
    try:
        summary = fit_and_score(spec, prepared, run_name, target.to_config() if target else None)
    except BaseException:
        tracking.end_run(target, "FAILED")
        raise
    try:
        summary["mlflow"] = tracking.finish_single_run(target, summary, spec)
    except Exception as exc:  # noqa: BLE001 - the store went away: the trained checkpoint still stands
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        summary["mlflow"] = target.summary() | {"error": f"tracking: could not finish run {target.run_id} "
                                                          f"({reason}); the checkpoint is {summary['checkpoint']}"}
    return summary


def claim_run_name(spec: Spec) -> str:
    """A new run's name, `<spec name>-train-<YYYYmmdd-HHMMSS>`, and (storage in a folder) its folder.

    Runs are named by the second, so two runs of one spec started in the same second (a scheduler,
    a shell loop) would share a folder, and the second would find the first's checkpoint. Creating
    the folder claims the name atomically; a name already taken gets `-2`, `-3`, ... A URI storage
    path (s3://, gs://) cannot be claimed so, and keeps the plain name.
    """
    base = f"{spec.name}-train-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = storage_uri(spec)
    if "://" in storage:
        return base
    Path(storage).mkdir(parents=True, exist_ok=True)
    name, attempt = base, 1
    while True:
        try:
            (Path(storage) / name).mkdir()
            return name
        except FileExistsError:
            attempt += 1
            name = f"{base}-{attempt}"
