"""One fine-tuning run on Ray Train, from a validated spec to test metrics.

The driver reads and tokenizes the data once, puts the arrays in Ray's object store (every worker,
and every trial of a sweep, reads them from there without copying or re-tokenizing), checks that the
cluster can host the run *before* launching it, fits a `TorchTrainer` over `train_loop_per_worker`
and finally scores the best checkpoint on the test split.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._checkpoint import load_for_inference
from ._models import load_tokenizer, resolve_precision
from ._tokenized import tokenize_splits
from .data import DataSplits, load_data
from .spec import Spec
from .tasks import TokenizedSplit, get_task
from .train_loop import evaluate, train_loop_per_worker

log = logging.getLogger("tunefleet")


class PlanError(RuntimeError):
    """The cluster cannot host what the spec asks for; raised before anything is launched (Ray would
    otherwise wait forever for resources that never come)."""


@dataclass(frozen=True)
class PreparedData:
    splits: DataSplits
    tokenized: dict[str, TokenizedSplit]
    from_cache: bool

    def arrays(self) -> dict[str, dict[str, Any]]:
        return {name: split.to_arrays() for name, split in self.tokenized.items()}


def prepare_data(spec: Spec) -> PreparedData:
    """Read, validate and tokenize the spec's data (tokenization cached on disk)."""
    splits = load_data(spec.data, spec.task)
    tokenizer = load_tokenizer(spec.model.name_or_path)
    tokenized, from_cache = tokenize_splits(splits, tokenizer, spec.model.max_length)
    return PreparedData(splits, tokenized, from_cache)


def start_ray(spec: Spec) -> None:
    """Join the spec's cluster, or start a local one (see `init_ray`)."""
    init_ray(spec.resources.ray_address or os.environ.get("RAY_ADDRESS"))


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (address None) or join a Ray cluster, set up for Ray Train's placement-group cleaner.

    The cleaner frees the workers of a trial that ASHA stopped. It asks the State API, which the
    dashboard serves, so the dashboard stays on (bound to loopback, never exposed). The State API
    finds its cluster through RAY_ADDRESS and, without it, gives up as soon as a second Ray instance
    runs on the machine; every worker is therefore told its cluster's address. A new local
    cluster's GCS port is chosen here so that the address is known before the workers start.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    env_vars = {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"} | train_controller_env(local=not address)
    if address:
        # Joining: Ray refuses dashboard and CPU settings for an existing cluster.
        local: dict[str, Any] = {}
        if address not in ("auto", "local") and "://" not in address:
            env_vars["RAY_ADDRESS"] = address
    else:
        from ray._private.services import get_node_ip_address

        port = free_port()
        os.environ["RAY_GCS_SERVER_PORT"] = str(port)  # read by the GCS this ray.init starts
        env_vars["RAY_ADDRESS"] = f"{get_node_ip_address()}:{port}"
        local = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "num_cpus": num_cpus}
        # "local": a new cluster even when `ray start` left one on this machine, which a bare
        # ray.init() would silently join.
        address = "local"
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True,
                 runtime_env={"env_vars": env_vars}, **local)
    finally:
        os.environ.pop("RAY_GCS_SERVER_PORT", None)


# Ray Train's controller polls its workers this often (Ray's default: 2 s). Every run waits for
# several polls (workers up, each report, workers done), so on a sweep of minute-long trials the
# default cost about 3 s per trial (benchmarks/RESULTS.md); a poll is one cheap call per worker.
TRAIN_POLL_INTERVAL_S = "0.5"


def train_controller_env(local: bool) -> dict[str, str]:
    """Ray Train settings for every run on this cluster, unless the user's environment sets them.

    The preemption watcher (one more actor per Train run, about 1 CPU-second to start) watches for
    nodes being drained, as spot instances are; a local cluster on this machine has none, so it is
    off there and left at Ray's default on a cluster that tunefleet joins.
    """
    env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
                                                               TRAIN_POLL_INTERVAL_S)}
    if local:
        env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, on `host`."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def plan_resources(spec: Spec, trial_cpus: float = 0.0, concurrent: int = 1) -> int:
    """Check that `concurrent` runs of this spec fit the cluster; return how many fit at most.

    Args:
        spec: the run's resources section.
        trial_cpus: CPUs a Tune trial's own driver holds on top of its Train workers.
        concurrent: how many runs must fit side by side.

    Raises:
        PlanError: naming what is missing and how to fix it.
    """
    import ray

    total = ray.cluster_resources()
    res = spec.resources
    need_cpu = res.workers * res.cpus_per_worker + trial_cpus
    need_gpu = res.workers * res.gpus_per_worker
    have_cpu, have_gpu = total.get("CPU", 0.0), total.get("GPU", 0.0)
    problems = []
    if need_cpu * concurrent > have_cpu:
        problems.append(f"{need_cpu * concurrent:g} CPUs ({concurrent} run(s) x ({res.workers} workers x "
                        f"{res.cpus_per_worker:g} CPUs + {trial_cpus:g} for the trial driver)) but the cluster has "
                        f"{have_cpu:g}; lower resources.workers or resources.cpus_per_worker, or add nodes")
    if need_gpu * concurrent > have_gpu:
        problems.append(f"{need_gpu * concurrent:g} GPUs but the cluster has {have_gpu:g}; set "
                        "resources.gpus_per_worker=0 or add GPU nodes")
    if problems:
        raise PlanError(f"{spec.source}: resources: the run needs " + "; ".join(problems))
    fit = have_cpu // need_cpu if need_cpu else concurrent
    if need_gpu:
        fit = min(fit, have_gpu // need_gpu)
    return max(1, int(fit))


def storage_uri(spec: Spec) -> str:
    """Ray wants an absolute path or a URI; a relative folder is taken from the working folder."""
    path = spec.resources.storage_path
    return path if "://" in path else str(Path(path).resolve())


def build_trainer(spec: Spec, data: Any, label_names: list[str], run_name: str,
                  callbacks: list[Any] | None = None, tracking: dict[str, Any] | None = None) -> Any:
    """A TorchTrainer for one run of the loop (not yet fitted); `tracking` (`{"tracking_uri",
    "run_id"}` or None) is the MLflow run its rank 0 logs metrics into."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    res = spec.resources
    use_gpu = res.gpus_per_worker > 0
    resources = {"CPU": res.cpus_per_worker} | ({"GPU": res.gpus_per_worker} if use_gpu else {})
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec.to_dict(), "data": data, "label_names": label_names, "tracking": tracking},
        scaling_config=ScalingConfig(num_workers=res.workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_uri(spec),
            failure_config=FailureConfig(max_failures=res.max_failures),
            # The loop publishes a checkpoint only when the metric improves, so the latest is the best.
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=callbacks or [],
        ),
    )


def score_checkpoint(folder: str, split: TokenizedSplit, batch_size: int = 64) -> dict[str, Any]:
    """Task metrics of a checkpoint on a tokenized split, in this process."""
    import torch

    model, tokenizer, meta = load_for_inference(folder)
    task = get_task(meta["task"])
    device = torch.device("cpu")
    precision = resolve_precision("auto", "cpu")
    return evaluate(model, split, task, meta["label_names"], batch_size, device, precision, tokenizer.pad_token_id)


def run_train(spec: Spec, run_name: str | None = None) -> dict[str, Any]:
    """`tunefleet train`: one run with the spec's fixed hyperparameters, tracked as one MLflow run.

    Returns:
        The summary printed as the command's last line (task, model, metrics, checkpoint, `mlflow`).

    Raises:
        TrackingError: the tracking store is unreachable (before any training).
    """
    from . import tracking

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
        summary = _fit_and_score(spec, prepared, run_name, target.to_config() if target else None)
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


def _fit_and_score(spec: Spec, prepared: PreparedData, run_name: str, tracking: dict[str, Any] | None) -> dict[str, Any]:
    import ray

    data_ref = ray.put(prepared.arrays())
    started = time.perf_counter()
    result = build_trainer(spec, data_ref, prepared.splits.label_names, run_name, tracking=tracking).fit()
    train_seconds = time.perf_counter() - started
    summary = result.return_value or {}
    if summary.get("diverged"):
        raise TrainingDiverged(f"{spec.name}: training diverged: {summary['diverged']}")
    if result.checkpoint is None:
        raise RuntimeError(f"{spec.name}: the run published no checkpoint; see the worker logs above")
    with result.checkpoint.as_directory() as folder:
        test = score_checkpoint(folder, prepared.tokenized["test"], spec.train.batch_size * 2)
        from ._checkpoint import read_meta

        validation = read_meta(folder)["validation"]
    history = summary.get("history", [])
    rates = [h["tokens_per_second"] for h in history if h.get("tokens_per_second")]
    return {
        "task": spec.task,
        "model": spec.model.name_or_path,
        "metrics": {"validation": validation, "test": test},
        "checkpoint": result.checkpoint.path,
        "epochs_run": max((h["epoch"] for h in history), default=0),
        "train_seconds": round(train_seconds, 2),
        "train_tokens_per_second": round(sum(rates) / len(rates), 1) if rates else None,
    }


class TrainingDiverged(RuntimeError):
    pass
