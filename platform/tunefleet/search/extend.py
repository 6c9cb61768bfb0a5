"""Extending a finished sweep: `tunefleet sweep SPEC --extend N` runs N more trials in it.

A sweep that ended with its best still improving can be given more trials instead of being run again.
`run_sweep(spec, extend=N)` does it, with the pieces here:

- Where: each extension is a Tune run of its own in the sweep's folder, `<sweep>/extend-<k>/`
  (`<sweep>/extend-<k>/<trial>/checkpoint_*`, or `.../train/<trial>/...` for Ray Train runs), with
  `extension.json` saying what it was asked for and what its searcher started from. The finished
  run's own state is never written to, so `--resume` keeps working on it.
- The search algorithm's state: a searcher that models results (`plugins.takes_earlier_trials`,
  i.e. Optuna) is built as the sweep builds it and then restored with Ray's
  `Searcher.restore_from_dir` from the `searcher-state-*.pkl` that Tune saved in the sweep's latest
  run (the sweep's own, or the previous extension). Its study therefore holds every trial the sweep
  has run, and the warm-start trials it began with, and its sampler continues its seeded random
  stream: TPE proposes from all of them. Only if that file is missing (a searcher whose `save` Ray does
  not implement) are the sweep's trials handed over as already-evaluated points instead, as warm
  start does (`EarlierTrial`); `searcher` in the summary says which happened. Random search keeps no
  model: it samples afresh, with `search.seed + k` for the k-th extension so that it does not draw the
  points of the first run again. A grid sweep has already tried every combination and is refused.
- What is not kept: the scheduler (ASHA's rungs) and the stoppers start empty, as on `--resume` (Tune
  does not save them), so within an extension ASHA compares the extension's trials only. The spec's
  `time_budget`, `stop_at_metric` and `stop_on_plateau` apply to the extension on its own.
- Results: after the extension, the trials of every run of the sweep (read back from each run's Tune
  state, in the order they ran) make one `summary.json`, `trials.json` and set of plots, as if one run
  had made them; `trial_epochs`, the counts and `wall_seconds` add up, and `extended` lists each
  extension. Only the best completed trial of all runs keeps its checkpoint.
- MLflow and the registry: the extension's trials log as children of the sweep's parent run (found
  again through `mlflow.json`, as `--resume` finds it), the parent's artifacts and best metrics are
  logged again, and the best model is registered (through the champion gate, as always) only if the
  best trial changed; an unchanged best keeps the version it was registered as.
- An extension whose driver died is finished with `--resume`, like the sweep itself.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import plugins
from ..spec import Spec
from .results import TrialRecord, collect_trials
from .space import tune_space
from .warm_start import WarmStart, as_point

log = logging.getLogger("tunefleet.search")

RUN_PREFIX = "extend-"
RUN_FILE = "extension.json"


class ExtendError(ValueError):
    """The sweep cannot be extended as asked (none to extend, not finished, a grid); bad input, exit 2."""


@dataclass(frozen=True)
class Extension:
    """One extension of a sweep, as written to its `extension.json` before its trials start."""

    run: str  # its folder in the sweep's folder, `extend-<k>`
    trials: int  # how many trials it was asked to add
    searcher: str  # restored | earlier trials | sampled afresh: how its search algorithm started
    searcher_trials_before: int | None  # finished trials its searcher held when it began (None: unknown)
    best_before: str | None  # the sweep's best trial when it began


def check_extendable(spec: Spec, sweep_dir: Path, name: str, more: int) -> dict[str, Any]:
    """The finished sweep's summary, once it is sure that `more` trials can be added to it.

    Raises:
        ExtendError: `more` is below 1, the spec searches a grid, or the sweep does not exist, has not
            finished, or has an interrupted extension; each message says what to run instead.
    """
    if isinstance(more, bool) or not isinstance(more, int) or more < 1:
        raise ExtendError(f"--extend {more}: the number of trials to add must be a whole number of at least 1")
    if spec.search.algorithm == "grid":
        raise ExtendError(f"{spec.source}: search.algorithm is grid, and a grid sweep has already tried every "
                          "combination once; add values to the grid and run it as a new sweep instead of --extend")
    if not _has_state(sweep_dir):
        raise ExtendError(f"{spec.source}: no sweep {name} under {sweep_dir.parent} to extend; run `tunefleet sweep "
                          f"{spec.source}` (with the same --set overrides) first")
    try:
        summary = json.loads((sweep_dir / "summary.json").read_text())
    except (OSError, ValueError):
        raise ExtendError(f"{spec.source}: sweep {name} in {sweep_dir} has not finished (no summary.json); run it "
                          "with --resume to finish it, then --extend") from None
    stuck = interrupted(sweep_dir, summary)
    if stuck is not None:
        raise ExtendError(f"{spec.source}: the extension {stuck.name} of sweep {name} did not finish; run the sweep "
                          "with --resume to finish it, then --extend again")
    return summary


def interrupted(sweep_dir: Path, summary: dict[str, Any] | None) -> Path | None:
    """The extension that started (Tune saved its state) but that the sweep's summary does not list:
    its driver died, and `--resume` finishes it."""
    done = {entry["run"] for entry in (summary or {}).get("extended", [])}
    left = [run for run in sweep_runs(sweep_dir)[1:] if run.name not in done]
    return left[-1] if left else None


def sweep_runs(sweep_dir: Path) -> list[Path]:
    """The sweep's Tune runs in the order they ran: its own, then each extension that started."""
    numbered = [(int(p.name.removeprefix(RUN_PREFIX)), p) for p in sweep_dir.glob(f"{RUN_PREFIX}*")
                if p.name.removeprefix(RUN_PREFIX).isdigit() and _has_state(p)]
    return [sweep_dir, *(p for _, p in sorted(numbered))]


def start_extension(spec: Spec, sweep_dir: Path, summary: dict[str, Any], more: int,
                    max_concurrent: int) -> tuple[Path, Any, dict[str, Any] | None]:
    """The folder, search algorithm and Tune `param_space` of the sweep's next extension, whose
    `extension.json` is written here.

    Returns:
        `(run_dir, search_alg, param_space)`; `param_space` is None for a restored searcher, which
        already holds the space (Tune refuses a second one).
    """
    runs = sweep_runs(sweep_dir)
    number = 1 + max((int(p.name.removeprefix(RUN_PREFIX)) for p in runs[1:]), default=0)
    run_dir = sweep_dir / f"{RUN_PREFIX}{number}"
    # A folder without Tune's state is an extension that failed before its first trial: nothing to keep.
    shutil.rmtree(run_dir, ignore_errors=True)
    build = plugins.load("search algorithm", spec.search.algorithm)
    space: dict[str, Any] | None = tune_space(spec)
    known: int | None = 0
    # No first point and no start-up design: the sweep tried both already.
    if plugins.takes_earlier_trials(spec.search.algorithm):
        spec = spec.model_copy(update={"search": spec.search.model_copy(update={"start_up_design": "random"})})
        search_alg = build(spec, [], max_concurrent)
        try:
            search_alg.restore_from_dir(str(runs[-1]))  # the latest searcher-state-*.pkl of the last run
            how, space = "restored", None
            count = getattr(search_alg, "known_trials", None)
            known = count() if callable(count) else None
        except RuntimeError:  # no saved state: hand it the sweep's trials as evaluated points instead
            earlier = _earlier_points(spec, sweep_dir)
            search_alg = build(spec, [], max_concurrent, earlier=earlier)
            how, known = "earlier trials", len(earlier)
    else:
        # Random search keeps no model; another seed keeps it from drawing the first run's points again.
        seed = spec.search.seed
        reseeded = spec.model_copy(update={"search": spec.search.model_copy(
            update={"seed": None if seed is None else seed + number})})
        search_alg = build(reseeded, [], max_concurrent)
        how = "sampled afresh"
    extension = Extension(run=run_dir.name, trials=more, searcher=how, searcher_trials_before=known,
                          best_before=(summary.get("best") or {}).get("trial_id"))
    run_dir.mkdir(parents=True)
    (run_dir / RUN_FILE).write_text(json.dumps(asdict(extension), indent=2))
    log.info("extending sweep %s by %d trial(s) in %s; its searcher: %s (%s trial(s) known)", sweep_dir.name, more,
             run_dir.name, how, "?" if known is None else known)
    return run_dir, search_alg, space


def all_trials(sweep_dir: Path, this_run: Path, grid: Any, spec: Spec, metric: str,
               mode: str) -> list[TrialRecord]:
    """Every trial of the sweep, run by run: `grid` for the run that just fitted, each other run's
    results read back from its Tune state."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    trials: list[TrialRecord] = []
    runs = sweep_runs(sweep_dir)
    for run in runs if this_run in runs else [*runs, this_run]:
        results = grid if run == this_run else ResultGrid(ExperimentAnalysis(str(run)))
        trials += collect_trials(results, spec, metric, mode)
    return trials


def drop_beaten_checkpoints(trials: list[TrialRecord], best: TrialRecord | None) -> None:
    """Each run's janitor kept its own best completed trial's checkpoint; of those, only the sweep's
    best keeps it, so an extended sweep's disk use stays what one run's would be."""
    for trial in trials:
        if trial.status != "completed" or not trial.checkpoint or (best and trial.trial_id == best.trial_id):
            continue
        for folder in Path(trial.checkpoint).parent.glob("checkpoint_*"):
            if folder.is_dir():  # not Ray's checkpoint_manager_snapshot.json
                shutil.rmtree(folder, ignore_errors=True)


def finished_entry(run_dir: Path, trials_in_run: int, best: dict[str, Any] | None, wall: float) -> dict[str, Any]:
    """The summary's record of an extension that has run: what it was asked, what its searcher began
    with, how many trials it ran, whether the sweep's best changed, and its time."""
    saved = json.loads((run_dir / RUN_FILE).read_text())
    best_now = (best or {}).get("trial_id")
    return saved | {"ran": trials_in_run, "best_changed": best_now != saved.get("best_before"),
                    "wall_seconds": round(wall, 1)}


def kept_registration(before: dict[str, Any], best: dict[str, Any] | None) -> dict[str, Any] | None:
    """The registered version to keep instead of registering again: the one the sweep's summary
    already names, when the best trial has not changed and that registration succeeded; else None."""
    registered = before.get("registered")
    same_best = best is not None and (before.get("best") or {}).get("trial_id") == best["trial_id"]
    return registered if same_best and isinstance(registered, dict) and "version" in registered else None


def _earlier_points(spec: Spec, sweep_dir: Path) -> list[Any]:
    try:
        rows = json.loads((sweep_dir / "trials.json").read_text())
    except (OSError, ValueError):
        return []
    found = WarmStart()
    points = (as_point(row, spec, sweep_dir.name, found) for row in rows)
    return [p for p in points if p is not None]


def _has_state(run_dir: Path) -> bool:
    return any(run_dir.glob("experiment_state-*.json"))
