"""Sweeps: Ray Tune explores the spec's search space, each trial one run of the loop.

A trial trains in one of two ways (`search.trial_runner`):
- several workers: Ray Train V2's documented pattern, a Tune *function* trial builds and fits a
  `TorchTrainer`, and `TuneReportCallback` forwards every `ray.train.report` to Tune;
- one worker (`auto`'s choice then): the loop runs in the Tune trial's own process and reports with
  `ray.tune.report`. A Train run would add a controller, a worker group and a fresh worker process
  that imports torch and transformers again, 15-20 s per trial on 2 cores, and would keep the trial
  process busy in `fit()` so that Tune could not reuse it once a scheduler stopped the trial. In
  its own process the stopped trial waits inside `report`, Tune ends it there, and the next trial
  starts in the same process with everything imported (`reuse_actors`).
Either way the search algorithm and the scheduler, plug-ins named by the spec (`searchers.py`,
`schedulers.py`), see every evaluation.

The sweep, top to bottom in `run_sweep`: check the input, tokenize once, gather earlier sweeps'
trials to start from (`warm_start.py`), plan resources, build the space (`space.py`), searcher,
scheduler, stoppers (`stoppers.py`), the checkpoint janitor (`janitor.py`) and the progress view
(`progress.py`), fit with every message going to the sweep's log files (`logs.py`), then read the
trials back (`results.py`), retrain the finalists with other seeds if asked (`finalists.py`), pick
the best within the constraints on second objectives (`pareto.py`), draw the plots, register the
best, write the report (`report.py`). Ctrl-C stops at the fit: Tune saves its state and the sweep
returns an `interrupted` summary for `--resume`.

What makes it reliable on a small machine:
- resources are planned before launch: a trial that trains in its own process holds its worker's
  CPUs (and GPU); one that runs a Train run holds no CPU (it only waits on `fit()`) and its Train
  workers hold `workers x cpus_per_worker`; Tune never runs more trials at once than the cluster can
  host, so a worker group never waits for resources that will not come;
- the data is tokenized once by the sweep's driver and handed to every trial through the object store;
- trials stopped by a scheduler lose their checkpoints (unless `keep_stopped_checkpoints`), and a
  finished trial's checkpoint survives only while it is the best so far, so disk use stays bounded;
- the sweep's name is derived from the spec, so `--resume` finds it again and Tune finishes only the
  trials that had not completed (an unfinished trial resumes from its own latest checkpoint).

A finished sweep can be given more trials (`extend=N`, `--extend N`): each extension is a Tune run of
its own in the sweep's folder whose searcher continues from the sweep's saved state, and the summary,
plots, MLflow parent and registry decision then cover every run of the sweep (`extend.py`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from .. import plugins
from ..cluster import PlanError, plan_resources, start_ray, storage_uri
from ..spec import Spec, parse_duration, spec_from_dict
from ..train.launch import prepare_data, trains_without_ray_train
from ..train.models import quiet_transformers
from . import extend as extension
from .extend import ExtendError
from .finalists import Finalist, choose, drop_other_checkpoints, retrain_finalists, seeds_for
from .janitor import checkpoint_janitor
from .logs import driver_log, sigint_restored
from .naming import sweep_name
from .plots import save_sweep_plots
from .progress import SweepState, sweep_progress
from .results import TrialRecord, collect_trials, error_line, pick_best, summarise
from .space import first_point, seed_point, tune_space
from .stoppers import sweep_stopper
from .warm_start import EarlierTrial, WarmStart, earlier_trials, fingerprint

# Re-exported: tests and callers import these from here, where the sweep uses them.
__all__ = ["ExtendError", "PlanError", "SweepExistsError", "TrialRecord", "build_scheduler", "build_search_alg", "collect_trials",
           "first_point", "pick_best", "run_sweep", "run_trial", "seed_point", "sweep_name", "trains_in_trial",
           "tune_space"]

log = logging.getLogger("tunefleet.search")

TRIAL_DRIVER_MEMORY = 256 * 2**20


class SweepExistsError(RuntimeError):
    """A sweep of this name already has results; the user must choose to resume or restart it."""


# ---- the trial ------------------------------------------------------------------------------------

def run_trial(config: dict[str, Any], base_spec: dict[str, Any], data_ref: Any, label_names: list[str],
              train_storage: str, tracking: dict[str, Any] | None = None, sweep_dir: str | None = None) -> None:
    """One trial: the base spec with this trial's hyperparameters, trained in this process or fitted
    as a Ray Train run, everything it prints going to `<sweep_dir>/logs/<trial>.log` (`logs.py`).

    The Train run is named after the trial, so a retried or resumed trial finds its own run and Ray
    Train resumes it from its latest checkpoint instead of starting over. With `tracking` (the sweep's
    parent run), the trial logs into its own child run, created here by explicit parent id (or found
    again when the trial is retried or resumed).
    """
    from ray import tune

    from .logs import trial_log

    if sweep_dir is None:
        return _run_trial(config, base_spec, data_ref, label_names, train_storage, tracking)
    with trial_log(Path(sweep_dir), tune.get_context().get_trial_id()):
        return _run_trial(config, base_spec, data_ref, label_names, train_storage, tracking)


def _run_trial(config: dict[str, Any], base_spec: dict[str, Any], data_ref: Any, label_names: list[str],
               train_storage: str, tracking: dict[str, Any] | None) -> None:
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
    if trains_in_trial(spec):
        from ..train.loop import run_loop
        from ..train.session import TuneTrialSession

        run_loop({"spec": spec.to_dict(), "data": data_ref, "label_names": label_names, "tracking": child},
                 TuneTrialSession())
        return
    trainer = build_trainer(spec, data_ref, label_names, run_name=trial_id, callbacks=[TuneReportCallback()],
                            tracking=child)
    trainer.fit()


def trains_in_trial(spec: Spec) -> bool:
    """Whether a trial of this spec trains in the Tune trial's own process (`search.trial_runner`)."""
    return trains_without_ray_train(spec)


def _trial_resources(spec: Spec) -> dict[str, float]:
    if trains_in_trial(spec):
        res = spec.resources
        return {"cpu": res.cpus_per_worker} | ({"gpu": res.gpus_per_worker} if res.gpus_per_worker else {})
    # The trial function only waits on fit(); its Train workers hold the CPUs. Ray refuses an empty
    # placement group, so the trial reserves the memory its process needs instead of a CPU.
    return {"cpu": 0, "memory": TRIAL_DRIVER_MEMORY}


# ---- the sweep ------------------------------------------------------------------------------------

def run_sweep(spec: Spec, resume: bool = False, restart: bool = False, callbacks: list[Any] | None = None,
              extend: int = 0, verbose: bool = False, progress_stream: Any = None) -> dict[str, Any]:
    """`tunefleet sweep`: run (or resume, or extend) the spec's sweep and summarise it.

    Args:
        extend: add this many trials to the spec's finished sweep (`extend.py`); 0 runs the sweep.
        verbose: the trials' own output on the console too (it always goes to `<sweep>/logs/`).
        progress_stream: where the progress view goes (default stderr, `progress.py`).

    Returns:
        The summary printed as the command's last line (sweep, storage, best, trials, ...). An
        interrupted sweep (Ctrl-C) returns `{"sweep", "storage", "interrupted": true, "trials", "next"}`
        instead, before anything is summarised or registered: `--resume` finishes it.

    Raises:
        SweepExistsError: results exist and neither resume nor restart was asked for.
        ExtendError: `extend` asked of a sweep that does not exist or has not finished, or of a grid.
        PlanError: the cluster cannot host one trial, or the requested concurrency.
    """
    import ray
    from ray import tune

    started = time.perf_counter()
    name = sweep_name(spec)
    storage = storage_uri(spec)
    sweep_dir = Path(storage) / name
    if extend:
        if resume or restart:
            raise ExtendError(f"{spec.source}: --extend adds trials to a finished sweep and cannot be combined "
                              "with --resume or --restart; run them one after the other")
        before = extension.check_extendable(spec, sweep_dir, name, extend)
    else:
        _check_existing(sweep_dir, name, spec, resume, restart)
        # A resumed sweep may be one whose extension was interrupted: that run is the one to finish.
        before = _saved_summary(sweep_dir) if resume else None
    interrupted = extension.interrupted(sweep_dir, before) if resume else None
    from ..tracking import runs as tracking

    # Everything that can be wrong with the input is checked before anything is written to MLflow:
    # the store answers (seconds), the data reads, the cluster fits; only then the parent run is made.
    if spec.tracking.enabled:
        tracking.check_reachable(tracking.tracking_uri(spec.tracking.uri))
    prepared = prepare_data(spec)
    log.info("data: %s (tokenization %s)", {k: len(v) for k, v in prepared.tokenized.items()},
             "from cache" if prepared.from_cache else "done, cached")
    own_fingerprint = fingerprint(spec, prepared.splits.fingerprint)
    # A resumed or extended sweep's searcher already holds the earlier trials it started from.
    warm = WarmStart() if resume or extend else earlier_trials(spec, sweep_dir, own_fingerprint)  # a missing named sweep fails here
    # From here on the driver's messages (Ray's, Tune's, MLflow's) go to <sweep>/logs/driver.log; the
    # console gets tunefleet's own lines, the progress view, and errors (`logs.py`).
    with driver_log(sweep_dir, verbose) as watch:
        quiet_transformers()  # no weight-loading progress bars when the driver scores the best model
        start_ray(spec, log_to_driver=verbose)
        concurrency = _concurrency(spec, extend or None)
        # An extension logs into the sweep's parent run, found again as --resume finds it.
        parent = tracking.start_sweep_run(spec, name, sweep_dir, resume or bool(extend))  # None when tracking is off
        metric, mode = f"val_{spec.train.metric}", spec.metric_mode()
        # The Tune run at hand: the sweep's own, or one of its extensions (`<sweep_dir>/extend-<k>`).
        if extend:
            run_dir, search_alg, param_space = extension.start_extension(spec, sweep_dir, before, extend, concurrency)
        else:
            run_dir = interrupted or sweep_dir
            search_alg, param_space = None, tune_space(spec)
        data_ref = ray.put(prepared.arrays())
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, base_spec=spec.to_dict(), data_ref=data_ref,
                                 label_names=prepared.splits.label_names, train_storage=str(run_dir / "train"),
                                 tracking=parent.to_config() if parent else None, sweep_dir=str(sweep_dir)),
            _trial_resources(spec),
        )
        stopper = sweep_stopper(spec, metric, mode)
        housekeeping = checkpoint_janitor(run_dir, metric, mode, spec.search.keep_stopped_checkpoints,
                                          spec.search.constraints)
        state = SweepState(name, sweep_dir, metric, mode, total=_planned_trials(spec, extend), concurrency=concurrency,
                           time_budget=parse_duration(spec.search.time_budget) if spec.search.time_budget else None,
                           planned_epochs=spec.train.epochs)
        if resume:
            state.carry_over()  # the trials that ended before the interruption count too
        progress = sweep_progress(state, progress_stream)
        run_config = tune.RunConfig(
            name=run_dir.name, storage_path=str(run_dir.parent) if run_dir != sweep_dir else storage,
            # Retries a trial whose process died (e.g. with its node) from its latest checkpoint. A trial
            # that runs a Train run also has Train's own worker retries beneath this.
            failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            stop=stopper,
            # A trial in its own process gives Tune its checkpoints; the loop publishes one only when the
            # metric improved, so the latest is the best.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[housekeeping, progress, *([stopper.plateau] if stopper and stopper.plateau else []),
                       *(callbacks or [])],
            # Tune's own trial table is off: the progress view says the same in a few lines.
            verbose=0,
        )
        if resume:
            log.info("resuming sweep %s from %s", name, run_dir)
            tuner = tune.Tuner.restore(str(run_dir), trainable, resume_errored=True)
        else:
            from ray.tune.search import Searcher

            if search_alg is None:
                search_alg = build_search_alg(spec, concurrency, warm.trials)
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    metric=metric, mode=mode,
                    search_alg=search_alg,
                    scheduler=build_scheduler(spec),
                    num_samples=extend or (spec.search.num_trials if spec.search.algorithm != "grid" else 1),
                    # Tune wraps a `Searcher` (Optuna) in a ConcurrencyLimiter; the others limit themselves.
                    max_concurrent_trials=concurrency if isinstance(search_alg, Searcher) else None,
                    time_budget_s=parse_duration(spec.search.time_budget) if spec.search.time_budget else None,
                    trial_dirname_creator=lambda trial: trial.trial_id,
                    reuse_actors=_can_reuse_trial_actors(spec),
                ),
                run_config=run_config,
            )
        if not resume and not extend:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            (sweep_dir / "warm_start.json").write_text(json.dumps(warm.summary()))
        try:
            with sigint_restored():
                grid = tuner.fit()
        except BaseException:
            progress.close()
            tracking.end_run(parent, "FAILED")
            raise
        if watch.seen:
            # Ctrl-C: Tune saved where every trial was. Nothing is summarised or registered; the parent
            # run stays RUNNING, and --resume continues the same trials in it.
            progress.close()
            return _interrupted(spec, name, sweep_dir, state)
        # Every run of the sweep: its own and, once extended, each extension (just the one run otherwise).
        trials = extension.all_trials(sweep_dir, run_dir, grid, spec, metric, mode)
        extending = run_dir != sweep_dir  # this command ran (or finished) an extension
        best = pick_best(trials, mode, spec.search.constraints)
        if extending:
            extension.drop_beaten_checkpoints(trials, best)
        finals: list[Finalist] = []
        if spec.search.final_seeds and best is not None:
            try:
                finals, best = _retrain_finalists(spec, run_dir, trials, best, metric, mode, trainable, concurrency,
                                                  progress_stream, watch)
            except _FinalistsInterrupted:
                # Ctrl-C while the finalists trained: as above, nothing is summarised or registered;
                # --resume finds the search finished and trains the finalists again.
                return _interrupted(spec, name, sweep_dir, state) | {"stage": "final_seeds"}
        warm_summary = _saved_warm_start(sweep_dir) if resume or extend else warm.summary()
        return _conclude(spec, name, sweep_dir, run_dir, len(grid), trials, best, finals, prepared, started, before,
                         own_fingerprint, warm_summary, parent)


def _conclude(spec: Spec, name: str, sweep_dir: Path, run_dir: Path, run_trials: int, trials: list[TrialRecord],
              best: TrialRecord | None, finals: list[Finalist], prepared: Any, started: float,
              before: dict[str, Any] | None, own_fingerprint: str, warm_summary: dict[str, Any],
              parent: Any) -> dict[str, Any]:
    """A finished search, from its trials to what people and the registry get: plots, summary.json,
    the MLflow parent and registration (`_finish_tracking`), report.html.

    Args:
        run_dir: the Tune run this command ran (the sweep's own, or an extension's folder), with
            `run_trials` trials; `trials` are those of every run of the sweep.
        started: when this command started (`time.perf_counter()`); an extended sweep's wall time
            adds the earlier runs' (`before`).
        warm_summary: what the sweep started from (`warm_start.json`).
    """
    metric, mode = f"val_{spec.train.metric}", spec.metric_mode()
    save_sweep_plots(trials, spec.search.space, metric, mode, sweep_dir)
    wall = time.perf_counter() - started
    extending = run_dir != sweep_dir  # this command ran (or finished) an extension
    # An extended sweep's wall time is the sum of its runs'.
    summary = summarise(spec, name, sweep_dir, trials, best, prepared,
                        wall + (before or {}).get("wall_seconds", 0.0) if extending else wall)
    extended = list((before or {}).get("extended", []))
    if extending:
        extended.append(extension.finished_entry(run_dir, run_trials, summary["best"], wall))
    # What later sweeps compare before they warm-start from this one, what this one started from, and
    # what was added to it later.
    summary |= {"fingerprint": own_fingerprint, "warm_start": warm_summary, "extended": extended}
    if finals:
        summary["final_seeds"] = _final_seeds_summary(spec, finals, best, mode)
        if summary["best"] is not None:
            summary["best"]["final_seeds"] = summary["final_seeds"]
    # Written before MLflow is touched again: the sweep's result stands whatever the store does.
    (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    # An extension that did not change the best registers nothing: that model is registered already.
    kept = extension.kept_registration(before, summary["best"]) if extending and before else None
    tags = {"tunefleet.warm_start": json.dumps(summary["warm_start"])}
    if extended:
        tags["tunefleet.extended"] = json.dumps([{k: e.get(k) for k in ("run", "trials", "ran", "best_changed")}
                                                 for e in extended])
    retrained = [run for finalist in finals for run in finalist.seeds.values()]
    summary |= _finish_tracking(parent, spec, name, sweep_dir, trials + retrained, summary["best"], tags, kept)
    (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    # For people, from the final summary: report.html (also logged to the parent run) and optuna.db
    # for optuna-dashboard (`report.py`); neither can fail the sweep.
    from .report import publish_report

    publish_report(sweep_dir, summary, trials, spec)
    return summary


def _interrupted(spec: Spec, name: str, sweep_dir: Path, state: SweepState) -> dict[str, Any]:
    """The summary of a sweep that Ctrl-C ended; its status.json says so too (`tunefleet show`)."""
    state.interrupted()
    state.save()
    return {"sweep": name, "storage": str(sweep_dir), "interrupted": True, "trials": state.counts(),
            "next": f"tunefleet sweep {spec.source} --resume"}


class _FinalistsInterrupted(Exception):
    """Ctrl-C ended a finalist's retraining run: no further finalist starts (each Tune run would
    catch Ctrl-C anew, so the user would have to press it once per finalist)."""


def _retrain_finalists(spec: Spec, run_dir: Path, trials: list[TrialRecord], best: TrialRecord, metric: str,
                       mode: str, trainable: Any, concurrency: int, stream: Any,
                       watch: Any = None) -> tuple[list[Finalist], TrialRecord]:
    """`search.final_seeds` (`finalists.py`): the finalists' retrained seeds, and the run to register.

    Raises:
        _FinalistsInterrupted: `watch` (`logs.driver_log`'s) saw Ctrl-C during a retraining run.
    """
    from ray import tune

    from .pareto import within

    def fit(folder: Path, space: dict[str, Any]) -> Any:
        state = SweepState(f"{folder.parent.name} finalist {folder.name}", folder, metric, mode,
                           total=spec.search.final_seeds, concurrency=concurrency, planned_epochs=spec.train.epochs)
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=1, max_concurrent_trials=concurrency,
                                        trial_dirname_creator=lambda trial: trial.trial_id,
                                        reuse_actors=_can_reuse_trial_actors(spec)),
            run_config=tune.RunConfig(name=folder.name, storage_path=str(folder.parent), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                      callbacks=[sweep_progress(state, stream)]),
        )
        with sigint_restored():
            grid = tuner.fit()
        if watch is not None and watch.seen:
            state.interrupted()
            state.save()
            raise _FinalistsInterrupted(str(folder))
        return grid

    eligible = [t for t in trials if within(t, spec.search.constraints)]
    log.info("final seeds: training the %d best configuration(s) again with seeds %s", spec.search.final_top,
             seeds_for(spec))
    finals = retrain_finalists(spec, run_dir, eligible, metric, mode, fit)
    winner = choose(finals, mode)
    if winner is None:  # every retrained seed failed: the search's best stands
        return finals, best
    chosen = winner.best_run(mode)
    if chosen is None:  # none of the winner's runs kept a checkpoint to register: the search's best stands
        return finals, best
    drop_other_checkpoints(finals, chosen)
    return finals, chosen


def _final_seeds_summary(spec: Spec, finals: list[Finalist], best: TrialRecord | None, mode: str) -> dict[str, Any]:
    winner = choose(finals, mode)
    return {"seeds": seeds_for(spec), "finalists": [f.summary(mode) for f in finals],
            "chosen": None if winner is None else winner.trial.trial_id,
            "mean": None if winner is None else winner.summary(mode)["mean"],
            "std": None if winner is None else winner.summary(mode)["std"],
            "registered_run": None if best is None else best.trial_id}


def _seed_figures(best: dict[str, Any]) -> dict[str, Any]:
    """What the registered version carries of `final_seeds`: the spread, for the gate, and the figures."""
    finals = best.get("final_seeds")
    if not finals:
        return {}
    return {"seed_std": finals.get("std"),
            "extra_tags": {"tunefleet.final_seeds": json.dumps({k: finals[k] for k in ("seeds", "mean", "std", "chosen")})}}


def _planned_trials(spec: Spec, extend: int = 0) -> int:
    """How many trials the run at hand will start: the extension's, the grid's, or num_trials."""
    if extend:
        return extend
    if spec.search.algorithm == "grid":
        count = 1
        for dist in spec.search.space.values():
            values = dist.get("grid") or dist.get("choice")
            count *= len(values) if values else 1
        return count
    return spec.search.num_trials


def _finish_tracking(parent: Any, spec: Spec, name: str, sweep_dir: Path, trials: list[TrialRecord],
                     best: dict[str, Any] | None, tags: dict[str, str],
                     kept: dict[str, Any] | None = None) -> dict[str, Any]:
    """MLflow's part of the summary: children's end states, the parent's artifacts and `tags`, and the
    best model registered under the spec's name behind the champion gate, unless `kept` is the
    registration of that same model (an extension that did not change the best).

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
        mlflow_info = tracking.finish_sweep(parent, spec, sweep_dir, trials, best, tags=tags)
        registered = kept if kept is not None or best is None else register_checkpoint(
            best["checkpoint"], spec.name, best["metrics"]["test"], tracking_uri=parent.tracking_uri,
            run_id=parent.run_id, margin=spec.tracking.promotion_margin, source_sweep=name,
            test_predictions=best.get("test_predictions"), gate=spec.tracking.promotion_gate,
            confidence=spec.tracking.promotion_confidence, **_seed_figures(best))
    except Exception as exc:  # noqa: BLE001 - the store failed half-way; the sweep's result stands
        tracking.end_run(parent, "FAILED")
        return _tracking_failed(parent, best, f"tracking: {type(exc).__name__}: {error_line(exc)}")
    tracking.end_run(parent, "FINISHED")
    return {"mlflow": mlflow_info, "registered": registered}


def _tracking_failed(parent: Any, best: dict[str, Any] | None, reason: str) -> dict[str, Any]:
    reason = f"{reason.splitlines()[0]}; the sweep's results are in summary.json; run the sweep again with " \
             "--resume once the store is back to log and register them"
    log.error("%s", reason)
    return {"mlflow": parent.summary("parent_run_id") | {"error": reason},
            "registered": None if best is None else {"error": reason}}


def _saved_summary(sweep_dir: Path) -> dict[str, Any] | None:
    """The summary the sweep last wrote, None before it first finished."""
    try:
        return json.loads((sweep_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _saved_warm_start(sweep_dir: Path) -> dict[str, Any]:
    """What a resumed sweep started from, as its first run wrote it down."""
    try:
        return json.loads((sweep_dir / "warm_start.json").read_text())
    except (OSError, ValueError):
        return WarmStart().summary()


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


def _concurrency(spec: Spec, trials: int | None = None) -> int:
    """Most trials at once for a run of `trials` trials (default: the sweep's `num_trials`)."""
    # plan_resources counts GPUs as well as CPUs: with gpus_per_worker 0.25, four trials share a GPU.
    fits = plan_resources(spec, trial_cpus=0.0)
    wanted = spec.search.max_concurrent
    if wanted == "auto":
        return min(fits, trials or spec.search.num_trials)
    if wanted > fits:
        res = spec.resources
        gpus = f" and {res.gpus_per_worker:g} GPU" if res.gpus_per_worker else ""
        raise PlanError(f"{spec.source}: search.max_concurrent is {wanted} but the cluster fits {fits} "
                        f"trial(s) of {res.workers} worker(s) x {res.cpus_per_worker:g} CPUs{gpus}; "
                        "lower it, use 'auto', or add nodes")
    return wanted


# ---- plug-ins -------------------------------------------------------------------------------------

def build_search_alg(spec: Spec, max_concurrent: int = 0, earlier: Sequence[EarlierTrial] = ()) -> Any:
    """The search algorithm named by `search.algorithm` (see `searchers.py`), seeded with the first
    point (`first_point`); metric and mode reach it through TuneConfig.

    Args:
        max_concurrent: most trials at once (0: no limit).
        earlier: earlier sweeps' trials to start from (`warm_start.py`).
    """
    point = first_point(spec)
    build = plugins.load("search algorithm", spec.search.algorithm)
    return build(spec, [point] if point else [], max_concurrent, earlier=earlier)


def build_scheduler(spec: Spec) -> Any:
    """The trial scheduler named by `search.scheduler` (see `schedulers.py`); metric and mode reach it
    through TuneConfig."""
    return plugins.load("scheduler", spec.search.scheduler)(spec)


def _can_reuse_trial_actors(spec: Spec) -> bool:
    """Whether the next trial may run in the process of the one that just ended.

    Reuse skips starting a process and importing torch and transformers in it again. Tune reuses a
    process only once the trial's function has returned (it waits `TUNE_FUNCTION_THREAD_TIMEOUT_S`,
    set in `cluster.py`). A trial that trains in its own process returns as soon as a scheduler stops
    it: it is waiting in `report`. A trial that runs a Train run is inside `fit()` until that run has
    wound down, so reusing its process would fail the *next* trial; it is reused only when no
    scheduler can stop a trial.
    """
    return trains_in_trial(spec) or spec.search.scheduler == "none"
