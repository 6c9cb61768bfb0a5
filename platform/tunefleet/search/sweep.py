"""Sweeps: Ray Tune explores the spec's search space, each trial one Ray Train run of the loop.

The shape follows Ray Train V2's documented pattern: a Tune *function* trial builds and fits a
`TorchTrainer`, and `TuneReportCallback` forwards every `ray.train.report` to Tune, where the search
algorithm (Optuna TPE, random, grid) and the scheduler (ASHA, HyperBand, median stopping) see it.

What makes it reliable on a small machine:
- resources are planned before launch: the trial function itself holds no CPU (it only waits on
  `fit()`), its Train workers hold `workers x cpus_per_worker`, and Tune never runs more trials at
  once than the cluster can host, so a worker group never waits for resources that will not come;
- the data is tokenized once by the sweep's driver and handed to every trial through the object store;
- trials stopped by ASHA lose their checkpoints (unless `keep_stopped_checkpoints`), and a finished
  trial's checkpoint survives only while it is the best so far, so disk use stays bounded;
- the sweep's name is derived from the spec, so `--resume` finds it again and Tune finishes only the
  trials that had not completed (an unfinished trial's Train run resumes from its own checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .plots import save_sweep_plots
from ..spec import Spec, parse_duration, spec_from_dict
from ..cluster import PlanError, plan_resources, start_ray, storage_uri
from ..train.launch import prepare_data, score_checkpoint

log = logging.getLogger("tunefleet.search")

TRIAL_DRIVER_MEMORY = 256 * 2**20
SCHEDULERS = ("asha", "hyperband", "median", "none")
ALGORITHMS = ("optuna", "random", "grid")


class SweepExistsError(RuntimeError):
    """A sweep of this name already has results; the user must choose to resume or restart it."""


@dataclass
class TrialRecord:
    """One trial as the sweep's summary, plots and tracking see it."""

    trial_id: str
    config: dict[str, Any]
    status: str  # completed | stopped_early | failed
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    epochs_run: float = 0.0
    error: str | None = None
    checkpoint: str | None = None
    train_seconds: float = 0.0


# ---- the trial ------------------------------------------------------------------------------------

def run_trial(config: dict[str, Any], base_spec: dict[str, Any], data_ref: Any, label_names: list[str],
              train_storage: str, tracking: dict[str, Any] | None = None) -> None:
    """One trial: the base spec with this trial's hyperparameters, fitted as a Ray Train run.

    The Train run is named after the trial, so a retried or resumed trial finds its own run and Ray
    Train resumes it from its latest checkpoint instead of starting over. With `tracking` (the sweep's
    parent run), the trial logs into its own child run, created here by explicit parent id (or found
    again when the trial is retried or resumed).
    """
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from ..tracking.runs import check_reachable, start_child_run
    from ..train.launch import build_trainer

    spec = spec_from_dict(base_spec).with_overrides(config)
    spec = spec.model_copy(update={"resources": spec.resources.model_copy(update={"storage_path": train_storage})})
    trial_id = tune.get_context().get_trial_id()
    try:
        if tracking:
            check_reachable(tracking["tracking_uri"])  # seconds, not MLflow's minutes of retries
        child = start_child_run(tracking, trial_id, config)
    except Exception as exc:  # noqa: BLE001 - the store went away mid-sweep: train anyway, untracked
        log.warning("mlflow: trial %s trains untracked, the tracking store is unusable: %s", trial_id,
                    (str(exc).splitlines() or [type(exc).__name__])[0][:300])
        child = None
    trainer = build_trainer(spec, data_ref, label_names, run_name=trial_id, callbacks=[TuneReportCallback()],
                            tracking=child)
    trainer.fit()


# ---- search space ---------------------------------------------------------------------------------

def tune_space(spec: Spec) -> dict[str, Any]:
    """The spec's `search.space` as Ray Tune distributions, keyed by dotted spec path."""
    from ray import tune

    space = {}
    for path, dist in spec.search.space.items():
        (kind, args), = dist.items()
        if kind == "loguniform":
            space[path] = tune.loguniform(*args)
        elif kind == "uniform":
            space[path] = tune.uniform(*args)
        elif kind == "int":
            space[path] = tune.randint(int(args[0]), int(args[1]) + 1)  # inclusive upper bound
        elif kind == "choice" and spec.search.algorithm != "grid":
            space[path] = tune.choice(args)
        else:  # grid, or choice under grid search: every value is tried
            space[path] = tune.grid_search(args)
    return space


def first_point(spec: Spec) -> dict[str, Any] | None:
    """The first trial's hyperparameters: the champion's (`seed_with_champion`), else the spec's own
    (`seed_with_spec`), else None (the search algorithm picks)."""
    if spec.search.seed_with_champion:
        point = champion_point(spec)
        if point:
            log.info("search: the first trial takes the champion's hyperparameters %s", point)
            return point
    return seed_point(spec) if spec.search.seed_with_spec else None


def seed_point(spec: Spec) -> dict[str, Any] | None:
    """The spec's own fixed hyperparameters as the first trial, where they lie inside the space."""
    return _point_in_space(spec.to_dict(), spec.search.space)


def champion_point(spec: Spec) -> dict[str, Any] | None:
    """The hyperparameters that trained the registered champion named after the spec, where they
    lie inside the space; None (with the reason logged) when there is none to use."""
    from ..tracking.registry import champion_spec

    if not spec.tracking.enabled:
        log.info("search: seed_with_champion needs the registry, and tracking is off; using the spec's values")
        return None
    try:
        trained = champion_spec(spec.name, spec.tracking.uri)  # a missing model or champion is None
    except OSError as exc:
        log.warning("search: cannot read %s@champion (%s); using the spec's values", spec.name, exc)
        return None
    if not trained:
        log.info("search: no champion of %s with recorded hyperparameters; using the spec's values", spec.name)
        return None
    point = _point_in_space(trained, spec.search.space)
    if point is None:
        log.info("search: %s@champion's hyperparameters lie outside the space; using the spec's values", spec.name)
    return point


def _point_in_space(raw: dict[str, Any], space: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """`raw`'s value at every dotted path of `space`, if all are there and inside their ranges."""
    point = {}
    for path, dist in space.items():
        section, name = path.split(".", 1)
        value = (raw.get(section) or {}).get(name)
        (kind, args), = dist.items()
        if value is None:
            return None
        inside = value in args if kind in ("choice", "grid") else (args[0] <= value <= args[1])
        if not inside:
            return None
        point[path] = value
    return point or None


def build_search_alg(spec: Spec, max_concurrent: int = 0) -> Any:
    """The search algorithm; metric and mode reach it through TuneConfig.

    Args:
        max_concurrent: most trials at once (0: no limit). Random and grid search must limit
            themselves: Tune ignores `max_concurrent_trials` for them (it only wraps a `Searcher`).
    """
    from ray.tune.search.basic_variant import BasicVariantGenerator

    point = first_point(spec)
    points = [point] if point else []
    if spec.search.algorithm == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # TPE samples at random until it has n_startup_trials results; Optuna's default of 10 would
        # leave a 16-trial sweep mostly random. A quarter of the budget (3 to 10) lets TPE steer.
        startup = min(10, max(3, spec.search.num_trials // 4))
        sampler = optuna.samplers.TPESampler(seed=spec.search.seed, n_startup_trials=startup)
        return OptunaSearch(sampler=sampler, points_to_evaluate=points or None)
    if spec.search.algorithm == "random":
        return BasicVariantGenerator(random_state=spec.search.seed, points_to_evaluate=points or None,
                                     max_concurrent=max_concurrent)
    return BasicVariantGenerator(random_state=spec.search.seed, max_concurrent=max_concurrent)


def build_scheduler(spec: Spec) -> Any:
    """The trial scheduler; metric and mode reach it through TuneConfig."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, MedianStoppingRule

    max_t = max_epochs(spec)
    name = spec.search.scheduler
    if name == "asha":
        # time_attr "epoch": rungs at grace_period x reduction_factor^k epochs, whatever the report cadence.
        return ASHAScheduler(time_attr="epoch", max_t=max_t,
                             grace_period=spec.search.grace_period, reduction_factor=spec.search.reduction_factor)
    if name == "hyperband":
        return HyperBandScheduler(time_attr="epoch", max_t=max_t,
                                  reduction_factor=spec.search.reduction_factor)
    if name == "median":
        return MedianStoppingRule(time_attr="epoch", grace_period=spec.search.grace_period, min_samples_required=2)
    return FIFOScheduler()


def _can_reuse_trial_actors(spec: Spec) -> bool:
    """Whether the next trial may run in the process of the one that just finished.

    Reuse skips starting and importing a fresh trial process (about 1 s of a trial's start-up in a
    Ray timeline on the 2-core machine; end to end the gain was within run-to-run noise, see
    benchmarks/RESULTS.md). Tune can only reuse a process once the trial's function
    has returned. A trial that a scheduler stops early is still inside `fit()`, and reusing its
    process would fail the *next* trial. So reuse is on only when no scheduler can stop a trial.
    """
    return spec.search.scheduler == "none"


def max_epochs(spec: Spec) -> int:
    dist = spec.search.space.get("train.epochs")
    if not dist:
        return spec.train.epochs
    (kind, args), = dist.items()
    return int(max(args))


# ---- the sweep ------------------------------------------------------------------------------------

def sweep_name(spec: Spec) -> str:
    """Deterministic: the same spec (and overrides) always names the same sweep, so --resume finds it."""
    raw = spec.to_dict()
    raw.pop("source", None)
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:8]
    return f"{spec.name}-{digest}"


def run_sweep(spec: Spec, resume: bool = False, restart: bool = False, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """`tunefleet sweep`: run (or resume) the spec's sweep and summarise it.

    Returns:
        The summary printed as the command's last line (sweep, storage, best, trials, ...).

    Raises:
        SweepExistsError: results exist and neither resume nor restart was asked for.
        PlanError: the cluster cannot host one trial, or the requested concurrency.
    """
    import ray
    from ray import tune

    started = time.perf_counter()
    name = sweep_name(spec)
    storage = storage_uri(spec)
    sweep_dir = Path(storage) / name
    _check_existing(sweep_dir, name, spec, resume, restart)
    from ..tracking import runs as tracking

    # Everything that can be wrong with the input is checked before anything is written to MLflow:
    # the store answers (seconds), the data reads, the cluster fits; only then the parent run is made.
    if spec.tracking.enabled:
        tracking.check_reachable(tracking.tracking_uri(spec.tracking.uri))
    prepared = prepare_data(spec)
    log.info("data: %s (tokenization %s)", {k: len(v) for k, v in prepared.tokenized.items()},
             "from cache" if prepared.from_cache else "done, cached")
    start_ray(spec)
    concurrency = _concurrency(spec)
    parent = tracking.start_sweep_run(spec, name, sweep_dir, resume)  # None when tracking is off
    metric, mode = f"val_{spec.train.metric}", spec.metric_mode()
    data_ref = ray.put(prepared.arrays())
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base_spec=spec.to_dict(), data_ref=data_ref,
                             label_names=prepared.splits.label_names, train_storage=str(sweep_dir / "train"),
                             tracking=parent.to_config() if parent else None),
        # The trial function only waits on fit(); its Train workers hold the CPUs. Ray refuses an
        # empty placement group, so the trial reserves the memory its process needs instead of a CPU.
        {"cpu": 0, "memory": TRIAL_DRIVER_MEMORY},
    )
    stopper = _stopper(spec, metric, mode)
    housekeeping = _CheckpointJanitor(sweep_dir / "train", metric, mode, spec.search.keep_stopped_checkpoints)
    run_config = tune.RunConfig(
        name=name, storage_path=storage,
        # A trial's Train run already retries worker failures; this retries the trial itself (its
        # function died, e.g. with its node), which then resumes its Train run from checkpoint.
        failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
        stop=stopper,
        callbacks=[housekeeping, *([stopper.plateau] if stopper and stopper.plateau else []), *(callbacks or [])],
        verbose=1,
    )
    if resume:
        log.info("resuming sweep %s from %s", name, sweep_dir)
        tuner = tune.Tuner.restore(str(sweep_dir), trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=tune_space(spec),
            tune_config=tune.TuneConfig(
                metric=metric, mode=mode,
                search_alg=build_search_alg(spec, concurrency),
                scheduler=build_scheduler(spec),
                num_samples=spec.search.num_trials if spec.search.algorithm != "grid" else 1,
                # Optuna is wrapped in a ConcurrencyLimiter by Tune; the others limit themselves.
                max_concurrent_trials=concurrency if spec.search.algorithm == "optuna" else None,
                time_budget_s=parse_duration(spec.search.time_budget) if spec.search.time_budget else None,
                trial_dirname_creator=lambda trial: trial.trial_id,
                reuse_actors=_can_reuse_trial_actors(spec),
            ),
            run_config=run_config,
        )
    try:
        grid = tuner.fit()
    except BaseException:
        tracking.end_run(parent, "FAILED")
        raise
    trials = collect_trials(grid, spec, metric, mode)
    save_sweep_plots(trials, spec.search.space, metric, mode, sweep_dir)
    best = pick_best(trials, mode)
    summary = _summarise(spec, name, sweep_dir, trials, best, prepared, metric, time.perf_counter() - started)
    # Written before MLflow is touched again: the sweep's result stands whatever the store does.
    (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    summary |= _finish_tracking(parent, spec, name, sweep_dir, trials, summary["best"])
    (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _finish_tracking(parent: Any, spec: Spec, name: str, sweep_dir: Path, trials: list[TrialRecord],
                     best: dict[str, Any] | None) -> dict[str, Any]:
    """MLflow's part of the summary: children's end states, the parent's artifacts, and the best
    model registered under the spec's name behind the champion gate.

    A store that went away during the sweep does not cost its result: `mlflow` and `registered` then
    carry `{"error": ...}` (the CLI exits 1), the parent run stays RUNNING, and `--resume` once the
    store is back logs the end states and registers the best model without training again."""
    from ..tracking import runs as tracking
    from ..tracking.registry import register_checkpoint

    if parent is None:
        return {"mlflow": None, "registered": None}
    try:
        tracking.check_reachable(parent.tracking_uri)  # seconds, not MLflow's minutes of retries
    except tracking.TrackingError as exc:
        return _tracking_failed(parent, best, str(exc))
    try:
        mlflow_info = tracking.finish_sweep(parent, spec, sweep_dir, trials, best)
        registered = None if best is None else register_checkpoint(
            best["checkpoint"], spec.name, best["metrics"]["test"], tracking_uri=parent.tracking_uri,
            run_id=parent.run_id, margin=spec.tracking.promotion_margin, source_sweep=name)
    except Exception as exc:  # noqa: BLE001 - the store failed half-way; the sweep's result stands
        tracking.end_run(parent, "FAILED")
        return _tracking_failed(parent, best, f"tracking: {type(exc).__name__}: {_one_line(exc)}")
    tracking.end_run(parent, "FINISHED")
    return {"mlflow": mlflow_info, "registered": registered}


def _tracking_failed(parent: Any, best: dict[str, Any] | None, reason: str) -> dict[str, Any]:
    reason = f"{reason.splitlines()[0]}; the sweep's results are in summary.json; run the sweep again with " \
             "--resume once the store is back to log and register them"
    log.error("%s", reason)
    return {"mlflow": parent.summary("parent_run_id") | {"error": reason},
            "registered": None if best is None else {"error": reason}}


def _check_existing(sweep_dir: Path, name: str, spec: Spec, resume: bool, restart: bool) -> None:
    exists = (sweep_dir / "tuner.pkl").exists() or any(sweep_dir.glob("experiment_state-*.json"))
    if resume and not exists:
        raise SweepExistsError(f"{spec.source}: no sweep {name} under {sweep_dir.parent} to resume; "
                               "run without --resume to start it")
    if exists and not resume:
        if not restart:
            raise SweepExistsError(f"{spec.source}: sweep {name} already has results in {sweep_dir}; "
                                   "pass --resume to continue it or --restart to start over")
        # Nothing is deleted: the old results move aside.
        sweep_dir.rename(sweep_dir.with_name(f"{name}.old-{time.strftime('%Y%m%d-%H%M%S')}"))


def _concurrency(spec: Spec) -> int:
    fits = plan_resources(spec, trial_cpus=0.0)
    wanted = spec.search.max_concurrent
    if wanted == "auto":
        return min(fits, spec.search.num_trials)
    if wanted > fits:
        raise PlanError(f"{spec.source}: search.max_concurrent is {wanted} but the cluster fits {fits} "
                        f"trial(s) of {spec.resources.workers} worker(s) x {spec.resources.cpus_per_worker:g} CPUs; "
                        "lower it, use 'auto', or add nodes")
    return wanted


def _stopper(spec: Spec, metric: str, mode: str) -> Any:
    """What ends the sweep before its trials run out: a trial reaching `stop_at_metric`, or
    `stop_on_plateau` trials in a row ending without improvement. None when neither is set."""
    target, patience = spec.search.stop_at_metric, spec.search.stop_on_plateau
    if target is None and patience is None:
        return None
    from ray.tune import Callback
    from ray.tune.stopper import Stopper

    keep_best = max if mode == "max" else min

    class _Plateau(Callback):
        """Counts ended trials since the last one that beat the best ended trial by more than
        `plateau_min_delta`. A callback, because only callbacks hear that a trial ended, including
        one that ASHA stopped."""

        def __init__(self) -> None:
            self.best: float | None = None
            self.without_improvement = 0
            self._trial_best: dict[str, float] = {}

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            value = result.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                seen = self._trial_best.get(trial.trial_id)
                self._trial_best[trial.trial_id] = value if seen is None else keep_best(seen, value)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._ended(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._ended(trial)

        def _ended(self, trial: Any) -> None:
            value = self._trial_best.pop(trial.trial_id, None)  # None: it never reported the metric
            delta = spec.search.plateau_min_delta
            if value is None:
                gain = -math.inf
            elif self.best is None:
                gain = math.inf
            else:
                gain = value - self.best if mode == "max" else self.best - value
            if gain > 0:
                self.best = value
            self.without_improvement = 0 if gain > delta else self.without_improvement + 1
            if self.reached:
                log.info("search: %d trials in a row ended without beating %s=%s by more than %g; "
                         "ending the sweep", self.without_improvement, metric,
                         "none" if self.best is None else f"{self.best:.4f}", delta)

        @property
        def reached(self) -> bool:
            return self.without_improvement >= patience

    class _SweepStopper(Stopper):
        def __init__(self) -> None:
            self.reached = False
            self.plateau = _Plateau() if patience is not None else None

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            value = result.get(metric)
            if target is not None and value is not None and (value >= target if mode == "max" else value <= target):
                self.reached = True
            return self.reached

        def stop_all(self) -> bool:
            return self.reached or (self.plateau is not None and self.plateau.reached)

    return _SweepStopper()


# ---- results --------------------------------------------------------------------------------------

def collect_trials(grid: Any, spec: Spec, metric: str, mode: str) -> list[TrialRecord]:
    trials = []
    for result in grid:
        config = {k: v for k, v in (result.config or {}).items()}
        frame = result.metrics_dataframe
        history = [] if frame is None else [
            {k: _plain(v) for k, v in row.items() if not str(k).startswith("config/")}
            for row in frame.to_dict("records")
        ]
        evaluations = [h for h in history if h.get(metric) is not None and not h.get("diverged")]
        values = [h[metric] for h in evaluations if _finite(h[metric])]
        best_value = (max(values) if mode == "max" else min(values)) if values else None
        epochs_run = max((h.get("epoch", 0) for h in history), default=0.0)
        planned = config.get("train.epochs", spec.train.epochs)
        diverged = next((h.get("diverged_reason") for h in history if h.get("diverged")), None)
        patience_stop = bool(evaluations) and _patience_hit(evaluations, metric, mode, spec.train.early_stopping_patience)
        if result.error is not None or diverged:
            status, error = "failed", diverged or _one_line(result.error)
        elif epochs_run < planned and not patience_stop:
            status, error = "stopped_early", None
        else:
            status, error = "completed", None
        checkpoint = next((h.get("checkpoint_path") for h in reversed(history) if h.get("checkpoint_path")), None)
        trials.append(TrialRecord(
            trial_id=history[-1]["trial_id"] if history and "trial_id" in history[-1] else Path(result.path).name,
            config=config, status=status, history=evaluations, best_value=best_value,
            epochs_run=float(epochs_run), error=error, checkpoint=checkpoint,
            train_seconds=float(history[-1].get("time_total_s", 0.0)) if history else 0.0,
        ))
    return trials


def pick_best(trials: list[TrialRecord], mode: str) -> TrialRecord | None:
    # A folder without its metadata file is a checkpoint whose write never finished: never a candidate.
    scored = [t for t in trials if t.best_value is not None and t.checkpoint and _complete(t.checkpoint)]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda t: t.best_value)


def _summarise(spec: Spec, name: str, sweep_dir: Path, trials: list[TrialRecord], best: TrialRecord | None,
               prepared: Any, metric: str, wall: float) -> dict[str, Any]:
    from ..train.checkpoint import read_meta

    best_info = None
    if best is not None:
        test = score_checkpoint(best.checkpoint, prepared.tokenized["test"], spec.train.batch_size * 2)
        best_info = {
            "trial_id": best.trial_id, "config": best.config, "checkpoint": best.checkpoint,
            "metrics": {"validation": read_meta(best.checkpoint)["validation"], "test": test},
        }
    counts = {status: sum(t.status == status for t in trials) for status in ("completed", "stopped_early", "failed")}
    # Best first (by the spec's metric and mode), unscored trials last: the order the table shows.
    sign = -1 if spec.metric_mode() == "max" else 1
    ranked = sorted(trials, key=lambda t: (t.best_value is None, sign * (t.best_value or 0.0)))
    (sweep_dir / "trials.json").write_text(json.dumps([asdict(t) for t in ranked], indent=2, default=str))
    return {
        "sweep": name,
        "storage": str(sweep_dir),
        "best": best_info,
        "trials": {"total": len(trials), **counts},
        "trial_epochs": round(sum(t.epochs_run for t in trials), 2),
        "wall_seconds": round(wall, 1),
    }


def _patience_hit(evaluations: list[dict[str, Any]], metric: str, mode: str, patience: int | None) -> bool:
    if patience is None or len(evaluations) <= patience:
        return False
    values = [e[metric] for e in evaluations]
    best_index = max(range(len(values)), key=lambda i: values[i] if mode == "max" else -values[i])
    return len(values) - 1 - best_index >= patience


class _CheckpointJanitor:
    """Keeps disk use bounded: a trial ASHA stopped loses its Train run folder at once, and of the
    trials that completed only the best keeps its checkpoint.

    Lives on the driver as a Tune callback (built lazily to subclass Tune's Callback)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from ray.tune import Callback

        class Janitor(Callback):
            def __init__(self, train_dir: Path, metric: str, mode: str, keep_stopped: bool):
                self.train_dir, self.metric, self.mode, self.keep_stopped = train_dir, metric, mode, keep_stopped
                self.best: tuple[float, str] | None = None

            def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                result = trial.last_result or {}
                value = result.get(f"best_{self.metric}")
                epochs = (trial.config or {}).get("train.epochs")
                planned = epochs if epochs is not None else result.get("planned_epochs")
                stopped_by_scheduler = planned is not None and result.get("epoch", planned) < planned \
                    and not result.get("early_stopped")
                if stopped_by_scheduler:
                    if not self.keep_stopped:
                        self._drop(trial.trial_id)
                    return
                if value is None or not _finite(value):
                    return
                better = self.best is None or (value > self.best[0] if self.mode == "max" else value < self.best[0])
                if better:
                    if self.best is not None:
                        self._drop(self.best[1])
                    self.best = (value, trial.trial_id)
                else:
                    self._drop(trial.trial_id)

            def _drop(self, trial_id: str) -> None:
                for folder in (self.train_dir / trial_id).glob("checkpoint_*"):
                    if folder.is_dir():  # not Ray's checkpoint_manager_snapshot.json
                        shutil.rmtree(folder, ignore_errors=True)

        return Janitor(*args, **kwargs)


def _complete(checkpoint: str) -> bool:
    from ..train.checkpoint import META_FILE

    return (Path(checkpoint) / META_FILE).is_file()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _one_line(error: Any) -> str:
    text = str(error).strip().splitlines()
    return text[-1][:500] if text else type(error).__name__
