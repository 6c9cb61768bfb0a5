"""The finished sweep as an Optuna study in `<sweep_dir>/optuna.db`, for `optuna-dashboard`.

Why an export at the end rather than the searcher's own study: Ray's `OptunaSearch` can be given a
storage, but its study is the searcher's working copy. It holds the trials a warm start fed it from
earlier sweeps, it is pickled into Tune's checkpoints for `--resume` and `--extend`, and it records a
trial that ASHA stopped as COMPLETE with its last value. Random and grid sweeps have no study at all.
The export is written from the sweep's own trial records, the ones the summary, table and plots show,
for every search algorithm:
- completed trials are COMPLETE, with the trial's best validation value (what the sweep ranks by);
- stopped-early trials are PRUNED, with that value too;
- failed trials are FAIL, with the error as a user attribute;
- every evaluation is an intermediate value at its epoch, so the dashboard draws learning curves.

The file is rewritten whole each time (a resumed or extended sweep exports every trial again).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from .plots import optuna_distribution
from .space import value_inside

EXPORT_FILE = "optuna.db"


def export_optuna_study(sweep_dir: Path, name: str, trials: list[Any], space: dict[str, dict[str, Any]],
                        metric: str, mode: str) -> Path:
    """Write the sweep's trials as the Optuna study `name` in `<sweep_dir>/optuna.db` (SQLite).

    Args:
        trials: the sweep's `TrialRecord`s, in the order they started.
        space: the spec's search space (`search.space`); a trial's parameters outside it (a seed point
            or a warm start's value) are left out of that trial's params and kept as a user attribute.
        metric: the validation metric as reported (`val_<train.metric>`); `mode` is "max" or "min".

    Returns:
        The database file; `optuna-dashboard sqlite:///<that path>` shows it.
    """
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(sweep_dir) / EXPORT_FILE
    path.unlink(missing_ok=True)
    study = optuna.create_study(storage=f"sqlite:///{path.resolve()}", study_name=name,
                                direction="maximize" if mode == "max" else "minimize")
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2; the dashboard shows the name
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric])
    study.set_user_attr("source", "tunefleet sweep")
    distributions = {p: optuna_distribution(d) for p, d in space.items()}
    frozen = []
    for t in trials:
        inside = {p: v for p, v in t.config.items() if p in space and value_inside(space[p], v)}
        value = t.best_value if t.best_value is not None and math.isfinite(t.best_value) else None
        state = {"completed": TrialState.COMPLETE, "stopped_early": TrialState.PRUNED}.get(t.status, TrialState.FAIL)
        if state == TrialState.COMPLETE and value is None:
            state = TrialState.FAIL  # finished without one finite evaluation: nothing to rank it by
        attrs = {"trial_id": t.trial_id, "status": t.status, "epochs_run": t.epochs_run,
                 "train_seconds": t.train_seconds}
        if t.error:
            attrs["error"] = t.error
        outside = {p: v for p, v in t.config.items() if p not in inside}
        if outside:
            attrs["config_outside_space"] = {p: v if isinstance(v, (int, float, str, bool)) else str(v)
                                             for p, v in outside.items()}
        frozen.append(create_trial(
            state=state, value=value if state != TrialState.FAIL else None, params=inside,
            distributions={p: distributions[p] for p in inside}, intermediate_values=_steps(t.history, metric),
            user_attrs=attrs))
    study.add_trials(frozen)
    return path


def _steps(history: list[dict[str, Any]], metric: str) -> dict[int, float]:
    """A trial's evaluations as Optuna's intermediate values, which are keyed by an integer step: the
    epoch when every evaluation ends one (the usual case), else the evaluation's index (mid-epoch
    evaluations, `train.eval_every_steps`)."""
    points = [(h.get("epoch"), float(h[metric])) for h in history
              if isinstance(h.get(metric), (int, float)) and math.isfinite(h[metric])]
    if all(isinstance(e, (int, float)) and float(e).is_integer() for e, _ in points):
        return {int(e): v for e, v in points}
    return {i: v for i, (_, v) in enumerate(points)}
