"""The sweep's plots, saved as PNG in its folder: optimisation history, parallel coordinates of the
hyperparameters against the metric, hyperparameter importance, and every trial's learning curve.

They are drawn from the sweep's own trial records (not from an Optuna study), so they exist for random
and grid search too; importance is computed by Optuna's evaluator over a study rebuilt from the trials.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

STATUS_COLOURS = {"completed": "tab:blue", "stopped_early": "tab:orange", "failed": "tab:red"}


def save_sweep_plots(trials: list[Any], space: dict[str, dict[str, Any]], metric: str, mode: str,
                     folder: Path) -> list[Path]:
    """Draw the four plots into `folder`; returns the files written. A plot that cannot be drawn
    (too few trials, nothing varied) is skipped, never fatal to the sweep."""
    import matplotlib

    matplotlib.use("Agg")  # headless: sweeps run on servers and CI without a display
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for draw in (_history, _parallel, _importance, _curves):
        try:
            path = draw(trials, space, metric, mode, folder)
        except Exception as exc:  # noqa: BLE001 - a plot must never fail the sweep that produced it
            print(f"tunefleet: plot {draw.__name__.strip('_')} skipped: {exc}")
            continue
        if path is not None:
            written.append(path)
    return written


def _scored(trials: list[Any]) -> list[Any]:
    return [t for t in trials if t.best_value is not None and math.isfinite(t.best_value)]


def _history(trials, space, metric, mode, folder):
    import matplotlib.pyplot as plt

    scored = _scored(trials)
    if not scored:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    best, running = (max if mode == "max" else min), []
    for i, t in enumerate(scored):
        ax.scatter(i, t.best_value, color=STATUS_COLOURS.get(t.status, "grey"), label=t.status, zorder=3)
        running.append(t.best_value if not running else best(running[-1], t.best_value))
    ax.plot(range(len(running)), running, color="black", linewidth=1, label="best so far")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set(xlabel="trial (in start order)", ylabel=metric, title="Optimisation history")
    return _save(fig, folder / "optimization_history.png")


def _parallel(trials, space, metric, mode, folder):
    import matplotlib.pyplot as plt

    scored = _scored(trials)
    params = [p for p in space if len({str(t.config.get(p)) for t in scored}) > 1]
    if len(scored) < 2 or not params:
        return None
    axes_names = params + [metric]
    columns = []
    for name in axes_names:
        values = [t.best_value if name == metric else t.config.get(name) for t in scored]
        columns.append(_normalise(values, log=_is_log(space.get(name))))
    values = [t.best_value for t in scored]
    low, high = min(values), max(values)
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(1.8 * len(axes_names) + 2, 4))
    for row, t in enumerate(scored):
        shade = (t.best_value - low) / (high - low) if high > low else 1.0
        ax.plot(range(len(axes_names)), [c[row] for c in columns], color=cmap(shade), alpha=0.8)
    for x, name in enumerate(axes_names):  # each axis is min-max scaled: print its real range
        raw = [t.best_value if name == metric else t.config.get(name) for t in scored]
        if all(isinstance(v, (int, float)) for v in raw):
            ax.annotate(f"{min(raw):.3g}", (x, 0), xytext=(0, -12), textcoords="offset points", ha="center", fontsize=7)
            ax.annotate(f"{max(raw):.3g}", (x, 1), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=7)
    ax.set_xticks(range(len(axes_names)), [n.split(".")[-1] for n in axes_names])
    ax.set_yticks([])
    ax.set_title(f"Parallel coordinates (colour = {metric}; log axes for log-scale ranges)")
    return _save(fig, folder / "parallel_coordinates.png")


def _importance(trials, space, metric, mode, folder):
    import matplotlib.pyplot as plt
    import optuna

    scored = _scored(trials)
    distributions = {p: _distribution(d) for p, d in space.items()}
    varied = {p for p in space if len({str(t.config.get(p)) for t in scored}) > 1}
    if len(scored) < 3 or not varied:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for t in scored:
        params = {p: t.config[p] for p in varied if p in t.config}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={p: distributions[p] for p in params}, value=t.best_value))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(importances) + 1.5))
    names = list(importances)[::-1]
    ax.barh([n.split(".")[-1] for n in names], [importances[n] for n in names], color="tab:green")
    ax.set(xlabel="importance (fANOVA)", title=f"Hyperparameter importance for {metric}")
    return _save(fig, folder / "param_importance.png")


def _curves(trials, space, metric, mode, folder):
    import matplotlib.pyplot as plt

    with_history = [t for t in trials if t.history]
    if not with_history:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in with_history:
        points = [(h["epoch"], h[metric]) for h in t.history if h.get(metric) is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", color=STATUS_COLOURS.get(t.status, "grey"), alpha=0.8)
    for status, colour in STATUS_COLOURS.items():
        ax.plot([], [], color=colour, label=status)
    ax.legend(fontsize=8)
    ax.set(xlabel="epoch", ylabel=metric, title="Learning curves (validation)")
    return _save(fig, folder / "learning_curves.png")


def _distribution(dist: dict[str, Any]) -> Any:
    import optuna.distributions as d

    (kind, args), = dist.items()
    if kind in ("loguniform", "uniform"):
        return d.FloatDistribution(float(args[0]), float(args[1]), log=kind == "loguniform")
    if kind == "int":
        return d.IntDistribution(int(args[0]), int(args[1]))
    return d.CategoricalDistribution(args)


def _is_log(dist: dict[str, Any] | None) -> bool:
    return bool(dist) and "loguniform" in dist


def _normalise(values: list[Any], log: bool) -> list[float]:
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        numbers = [math.log(v) if log and v > 0 else float(v) for v in values]
    else:  # categorical: evenly spaced by first appearance
        order = list(dict.fromkeys(str(v) for v in values))
        numbers = [float(order.index(str(v))) for v in values]
    low, high = min(numbers), max(numbers)
    return [(n - low) / (high - low) if high > low else 0.5 for n in numbers]


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
