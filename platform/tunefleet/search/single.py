"""`tunefleet train`: one run with the spec's fixed hyperparameters, tracked as one MLflow run.

The smallest search there is: the spec's own point, trained once and tracked: in one Ray task for
one worker, on Ray Train for several (`train.launch`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..tracking import runs as tracking
from ..cluster import plan_resources, start_ray
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
    run_name = run_name or f"{spec.name}-train-{time.strftime('%Y%m%d-%H%M%S')}"
    # Bad input (an unreachable store, bad data, a plan the cluster cannot host) is refused before
    # anything is written to MLflow; only then the run is created.
    if spec.tracking.enabled:
        tracking.check_reachable(tracking.tracking_uri(spec.tracking.uri))
    prepared = prepare_data(spec)
    log.info("data: %s", {k: len(v) for k, v in prepared.tokenized.items()})
    start_ray(spec)
    plan_resources(spec)
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
