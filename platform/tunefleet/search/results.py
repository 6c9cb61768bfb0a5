"""A finished sweep as tunefleet sees it: one `TrialRecord` per trial, the best trial, the summary.

A trial's status is read from what it reported, not from Tune's own state (which calls a trial ASHA
stopped "TERMINATED", like one that completed): fewer epochs than planned, without the trial's own
early-stopping patience running out, means a scheduler stopped it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..spec import Spec


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
    # Second objectives (`search.objectives`) of the trial's best evaluation, the checkpoint it keeps.
    objectives: dict[str, float] = field(default_factory=dict)


def collect_trials(grid: Any, spec: Spec, metric: str, mode: str) -> list[TrialRecord]:
    """The records of a Tune `ResultGrid`, in Tune's order.

    Args:
        metric: the validation metric as reported (`val_<train.metric>`); `mode` is "max" or "min".
    """
    trials = []
    for result in grid:
        config = {k: v for k, v in (result.config or {}).items()}
        frame = result.metrics_dataframe
        history = [] if frame is None else [
            {k: _plain(v) for k, v in row.items() if not str(k).startswith("config/")}
            for row in frame.to_dict("records")
        ]
        evaluations = [h for h in history if h.get(metric) is not None and not h.get("diverged")]
        values = [h[metric] for h in evaluations if finite(h[metric])]
        best_value = (max(values) if mode == "max" else min(values)) if values else None
        epochs_run = max((h.get("epoch", 0) for h in history), default=0.0)
        planned = config.get("train.epochs", spec.train.epochs)
        diverged = next((h.get("diverged_reason") for h in history if h.get("diverged")), None)
        patience_stop = bool(evaluations) and _patience_hit(evaluations, metric, mode, spec.train.early_stopping_patience)
        if result.error is not None or diverged:
            status, error = "failed", diverged or error_line(result.error)
        elif epochs_run < planned and not patience_stop:
            status, error = "stopped_early", None
        else:
            status, error = "completed", None
        # A Train run's checkpoint path comes with its reports; a trial that trained in its own
        # process gave its checkpoints to Tune. Either way the latest is the trial's best.
        checkpoint = next((h.get("checkpoint_path") for h in reversed(history) if h.get("checkpoint_path")), None) \
            or (result.checkpoint.path if result.checkpoint is not None else None)
        best_row = next((h for h in evaluations if h[metric] == best_value), None) if best_value is not None else None
        objectives = {name: best_row[name] for name in spec.search.objectives
                      if best_row is not None and finite(best_row.get(name))}
        trials.append(TrialRecord(
            trial_id=history[-1]["trial_id"] if history and "trial_id" in history[-1] else Path(result.path).name,
            config=config, status=status, history=evaluations, best_value=best_value,
            epochs_run=float(epochs_run), error=error, checkpoint=checkpoint,
            train_seconds=float(history[-1].get("time_total_s", 0.0)) if history else 0.0,
            objectives=objectives,
        ))
    return trials


def pick_best(trials: list[TrialRecord], mode: str, constraints: dict[str, float] | None = None) -> TrialRecord | None:
    """The trial with the best validation value among those with a complete checkpoint and within
    `constraints` (upper bounds on second objectives, `search/pareto.py`); None if none."""
    from .pareto import within

    # A folder without its metadata file is a checkpoint whose write never finished: never a candidate.
    scored = [t for t in trials if t.best_value is not None and t.checkpoint and _complete(t.checkpoint)
              and within(t, constraints or {})]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda t: t.best_value)


def summarise(spec: Spec, name: str, sweep_dir: Path, trials: list[TrialRecord], best: TrialRecord | None,
              prepared: Any, wall: float) -> dict[str, Any]:
    """The sweep's summary (the command's last line); also writes `trials.json`, best trial first.

    The best checkpoint is scored on the test split here, once, by the driver: trials never see it.
    Its per-example test results go to `test_predictions.json` (`best.test_predictions`), for the
    registry's paired promotion gate.
    """
    from ..data.load import split_fingerprint
    from ..tasks import get_task
    from ..tracking.paired import RECORD_FILE, example_record
    from ..train.checkpoint import read_meta
    from ..train.launch import score_checkpoint_examples

    best_info = None
    if best is not None:
        test, predicted = score_checkpoint_examples(best.checkpoint, prepared.tokenized["test"], spec.train.batch_size * 2)
        names = prepared.splits.label_names
        record = example_record(get_task(spec.task), prepared.tokenized["test"], predicted, names,
                                split_fingerprint(prepared.splits.test, names))
        (sweep_dir / RECORD_FILE).write_text(json.dumps(record))
        best_info = {
            "trial_id": best.trial_id, "config": best.config, "checkpoint": best.checkpoint,
            "metrics": {"validation": read_meta(best.checkpoint)["validation"], "test": test},
            "test_predictions": str(sweep_dir / RECORD_FILE),
        }
    counts = {status: sum(t.status == status for t in trials) for status in ("completed", "stopped_early", "failed")}
    # Best first (by the spec's metric and mode), unscored trials last: the order the table shows.
    sign = -1 if spec.metric_mode() == "max" else 1
    ranked = sorted(trials, key=lambda t: (t.best_value is None, sign * (t.best_value or 0.0)))
    (sweep_dir / "trials.json").write_text(json.dumps([asdict(t) for t in ranked], indent=2, default=str))
    summary = {
        "sweep": name,
        "storage": str(sweep_dir),
        "best": best_info,
        "trials": {"total": len(trials), **counts},
        "trial_epochs": round(sum(t.epochs_run for t in trials), 2),
        "wall_seconds": round(wall, 1),
    }
    if spec.search.objectives:
        from .pareto import pareto_summary, save_pareto_plot

        metric = spec.train.metric
        summary["pareto"] = pareto_summary(trials, spec.metric_mode(), spec.search.objectives,
                                           spec.search.constraints, metric)
        save_pareto_plot(trials, spec.metric_mode(), spec.search.objectives, spec.search.constraints, metric,
                         sweep_dir)
        if best is None and spec.search.constraints and any(t.best_value is not None for t in trials):
            summary["best_note"] = (f"no trial within search.constraints {spec.search.constraints}: nothing "
                                    "registered; see pareto.front for what the trials reached")
    return summary


def error_line(error: Any) -> str:
    """The last line of an error (where Python puts the exception itself), at most 500 characters."""
    text = str(error).strip().splitlines()
    return text[-1][:500] if text else type(error).__name__


def _patience_hit(evaluations: list[dict[str, Any]], metric: str, mode: str, patience: int | None) -> bool:
    if patience is None or len(evaluations) <= patience:
        return False
    values = [e[metric] for e in evaluations]
    best_index = max(range(len(values)), key=lambda i: values[i] if mode == "max" else -values[i])
    return len(values) - 1 - best_index >= patience


def _complete(checkpoint: str) -> bool:
    from ..train.checkpoint import META_FILE

    return (Path(checkpoint) / META_FILE).is_file()


def config_text(config: dict[str, Any]) -> str:
    """A trial's hyperparameters on one line, by their last name: `lr=3e-05, dropout=0.1, epochs=2`."""
    return ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                     for k, v in config.items())


def finite(value: Any) -> bool:
    """A real number that can be compared and plotted (not None, NaN, inf, or a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
