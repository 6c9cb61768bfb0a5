"""Ray start-up and resource planning: where every run and sweep gets its cluster.

`start_ray(spec)` joins the spec's cluster or starts a local one; `plan_resources` checks, before
anything is launched, that the cluster can host what the spec asks for (Ray would otherwise wait
forever for resources that never come).

Within tunefleet this module imports only `tunefleet.spec`.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from .spec import Spec


class PlanError(RuntimeError):
    """The cluster cannot host what the spec asks for; raised before anything is launched (Ray would
    otherwise wait forever for resources that never come)."""


def start_ray(spec: Spec, log_to_driver: bool = True) -> None:
    """Join the spec's cluster, or start a local one (see `init_ray`)."""
    init_ray(spec.resources.ray_address or os.environ.get("RAY_ADDRESS"), log_to_driver=log_to_driver)


def init_ray(address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = True) -> None:
    """Start (address None) or join a Ray cluster, set up for Ray Train's placement-group cleaner.

    The cleaner frees the workers of a trial that ASHA stopped. It asks the State API, which the
    dashboard serves, so the dashboard stays on (bound to loopback, never exposed). The State API
    finds its cluster through RAY_ADDRESS and, without it, gives up as soon as a second Ray instance
    runs on the machine; every worker is therefore told its cluster's address. A new local
    cluster's GCS port is chosen here so that the address is known before the workers start.

    `log_to_driver=False` keeps the workers' output off this process's console (a sweep writes it
    to its log files instead, `search/logs.py`); Ray still keeps it in its own session logs.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    env_vars = {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore",
                # How long Tune waits for a stopped trial's function to return before reusing its
                # process for the next trial (Ray's default: 2 s). Unwinding the loop flushes the
                # trial's queued MLflow metrics, which can take longer; a reuse that times out fails
                # the next trial.
                "TUNE_FUNCTION_THREAD_TIMEOUT_S": os.environ.get("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60"),
                } | train_controller_env(local=not address) | training_env()
    if not address:
        env_vars |= serve_controller_env()
    # The driver and every trial talk to MLflow with the same bounded retries.
    mlflow_env = mlflow_client_env()
    os.environ.update(mlflow_env)
    env_vars |= mlflow_env
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
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=log_to_driver,
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


# Read by train/allocator.py, in the training processes (named here: a stage imports only earlier ones).
KEEP_FREED_MEMORY = "TUNEFLEET_KEEP_FREED_MEMORY"


def training_env() -> dict[str, str]:
    """The training processes' switches that the user set in this environment, for every worker.

    Workers on this machine inherit the driver's environment; on a cluster that tunefleet joins, the
    other nodes' workers see only what the runtime environment hands them. So far one switch:
    `TUNEFLEET_KEEP_FREED_MEMORY` (train/allocator.py).
    """
    return {KEEP_FREED_MEMORY: os.environ[KEEP_FREED_MEMORY]} if KEEP_FREED_MEMORY in os.environ else {}


def mlflow_client_env() -> dict[str, str]:
    """How long an MLflow call keeps retrying an unreachable tracking server, unless the user's
    environment says otherwise.

    MLflow's defaults (7 retries, backoff factor 2, 120 s timeout) make one call wait about four
    minutes before failing, and a sweep makes several per trial: with the server down, each trial
    sat idle for minutes before training on untracked. tunefleet's own callers retry on top
    (`train/runlog.py` per metric batch; the sweep logs every trial's end state again at the end and
    on `--resume`), so retrying for about 15 s per call (4 retries, 0 + 2 + 4 + 8 s apart) is enough to
    ride out a server restart.
    """
    defaults = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    return {key: os.environ.get(key, value) for key, value in defaults.items()}


def serve_controller_env() -> dict[str, str]:
    """Ray Serve settings for a local cluster, unless the user's environment sets them.

    Serve's controller gives a new HTTP proxy 5 s to report ready, three times, then kills it. On a
    busy machine (2 cores shared with a sweep, or a test suite) the proxy's process takes longer to
    start, and `tunefleet serve` fails with ActorDiedError; a longer wait costs nothing when the
    proxy is fast.
    """
    return {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": os.environ.get("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")}


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, on `host`."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def plan_resources(spec: Spec, trial_cpus: float = 0.0, concurrent: int = 1) -> int:
    """Check that `concurrent` runs of this spec fit the cluster; return how many fit at most.

    GPUs are counted per device: a worker's fraction of a GPU (`gpus_per_worker` 0.5, 0.25) must fit
    on one GPU, so a GPU holds floor(1 / fraction) such workers, and two 0.6 workers need two GPUs.

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
    have_cpu, have_gpu = total.get("CPU", 0.0), total.get("GPU", 0.0)
    problems = []
    if need_cpu * concurrent > have_cpu + _EPS:
        problems.append(f"{need_cpu * concurrent:g} CPUs ({concurrent} run(s) x ({res.workers} workers x "
                        f"{res.cpus_per_worker:g} CPUs + {trial_cpus:g} for the trial driver)) but the cluster has "
                        f"{have_cpu:g}; lower resources.workers or resources.cpus_per_worker, or add nodes")
    fit = math.floor(have_cpu / need_cpu + _EPS) if need_cpu else concurrent
    gpus = res.gpus_per_worker
    if gpus > 1 and gpus != int(gpus):
        # Ray shares a GPU only between workers that each take a fraction of one.
        problems.append(f"resources.gpus_per_worker is {gpus:g}; a worker takes a fraction of one GPU (0.5, "
                        "0.25) or whole GPUs (1, 2, ...); round it")
    elif gpus:
        slots = gpu_worker_slots(gpus, _node_gpus())
        fit = min(fit, slots // res.workers)
        if res.workers * concurrent > slots:
            problems.append(_gpu_shortfall(res.workers, concurrent, gpus, have_gpu, slots))
    if problems:
        raise PlanError(f"{spec.source}: resources: the run needs " + "; ".join(problems))
    return max(1, int(fit))


# Fractions like 0.1 are not exact in binary: 1 / 0.1 must count as 10 workers, not 9.
_EPS = 1e-6


def gpu_worker_slots(gpus_per_worker: float, node_gpus: list[float]) -> int:
    """How many workers of `gpus_per_worker` GPUs these nodes hold: a fraction must fit on one GPU
    (floor(1 / fraction) per GPU), a whole number on one node."""
    if gpus_per_worker < 1:
        return sum(math.floor(n + _EPS) for n in node_gpus) * math.floor(1 / gpus_per_worker + _EPS)
    return sum(math.floor(n / gpus_per_worker + _EPS) for n in node_gpus)


def _node_gpus() -> list[float]:
    import ray

    return [node["Resources"].get("GPU", 0.0) for node in ray.nodes() if node.get("Alive")]


def _gpu_shortfall(workers: int, concurrent: int, gpus: float, have_gpu: float, slots: int) -> str:
    need = f"{concurrent} run(s) x {workers} workers x {gpus:g} GPU"
    if have_gpu < 1:
        return (f"{need} but the cluster has no GPU; set resources.gpus_per_worker: 0 to train on CPUs, or add "
                "GPU nodes")
    fix = "lower resources.workers"
    per_gpu = math.ceil(workers * concurrent / math.floor(have_gpu + _EPS))
    if gpus < 1 or per_gpu > 1:
        # The largest fraction that packs every worker onto the GPUs there are.
        fix += f", or set resources.gpus_per_worker to at most {math.floor(1000 / per_gpu) / 1000:g}"
    return (f"{need}, and the cluster's {have_gpu:g} GPU(s) hold {slots} such worker(s) (a worker's share of a "
            f"GPU cannot span two GPUs); {fix}, or add GPU nodes")


def storage_uri(spec: Spec) -> str:
    """Ray wants an absolute path or a URI; a relative folder is taken from the working folder."""
    path = spec.resources.storage_path
    return path if "://" in path else str(Path(path).resolve())
