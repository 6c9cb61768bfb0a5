"""The sweep's plots: optimisation history, parallel coordinates of the hyperparameters against the
metric, hyperparameter importance, and every trial's learning curve.

`sweep_figures` draws them as matplotlib figures; `save_sweep_plots` saves those as PNG files in the
sweep's folder and the sweep's report (`report.py`) embeds the same figures as SVG. They are drawn
from the sweep's own trial records (not from an Optuna study), so they exist for random and grid
search too; importance is computed by Optuna's evaluator over a study rebuilt from the trials.

A trial's end state shows the same way in every plot: colour and marker by status, and a scheduler's
stopped-early trials dashed. Each learning curve carries the SVG id `curve-<status>-<trial_id>`, so a
reader of the SVG (the report, its test) can tell which line is which trial.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

STATUS_COLOURS = {"completed": "tab:blue", "stopped_early": "tab:orange", "failed": "tab:red"}
STATUS_MARKERS = {"completed": "o", "stopped_early": "v", "failed": "X"}
STATUS_LINES = {"completed": "-", "stopped_early": "--", "failed": ":"}
STATUS_LABELS = {"completed": "completed", "stopped_early": "stopped early", "failed": "failed"}


class PlotSkipped(Exception):
    """A plot that cannot be drawn from these trials (too few, nothing varied); the message says why."""


def sweep_figures(trials: list[Any], space: dict[str, dict[str, Any]], metric: str,
                  mode: str) -> dict[str, Any]:
    """The four plots as matplotlib figures, by file stem (`optimization_history`, ...).

    Returns:
        name -> Figure, or name -> the reason it was not drawn (a string). The caller closes the
        figures (`plt.close`).
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: sweeps run on servers and CI without a display
    figures: dict[str, Any] = {}
    for name, draw in PLOTS.items():
        try:
            figures[name] = draw(trials, space, metric, mode)
        except PlotSkipped as skipped:
            figures[name] = str(skipped)
        except Exception as exc:  # noqa: BLE001 - a plot must never fail the sweep that produced it
            print(f"tunefleet: plot {name} skipped: {exc}")
            figures[name] = f"not drawn: {type(exc).__name__}: {exc}"
    return figures


def save_sweep_plots(trials: list[Any], space: dict[str, dict[str, Any]], metric: str, mode: str,
                     folder: Path) -> list[Path]:
    """Draw the four plots into `folder` as `<name>.png`; returns the files written. A plot that
    cannot be drawn is skipped, never fatal to the sweep."""
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in sweep_figures(trials, space, metric, mode).items():
        if isinstance(figure, str):
            continue
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def _scored(trials: list[Any]) -> list[Any]:
    return [t for t in trials if t.best_value is not None and math.isfinite(t.best_value)]


def _history(trials, space, metric, mode):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not _scored(trials):
        raise PlotSkipped("no trial reported a finite value")
    fig, ax = plt.subplots(figsize=(7, 4))
    best, running, xs = (max if mode == "max" else min), [], []
    for i, t in enumerate(trials):
        if t.best_value is None or not math.isfinite(t.best_value):
            if t.status == "failed":  # no value to plot: a mark on the bottom edge says it was there
                ax.scatter(i, 0.0, marker="X", color=STATUS_COLOURS["failed"], label="failed", zorder=3,
                           transform=ax.get_xaxis_transform(), clip_on=False)
            continue
        ax.scatter(i, t.best_value, color=STATUS_COLOURS.get(t.status, "grey"), zorder=3,
                   marker=STATUS_MARKERS.get(t.status, "o"), label=STATUS_LABELS.get(t.status, t.status))
        running.append(t.best_value if not running else best(running[-1], t.best_value))
        xs.append(i)
    ax.step(xs, running, where="post", color="black", linewidth=1, label="best so far")
    _legend(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="trial (in start order)", ylabel=metric, title="Optimisation history")
    return _finish(fig)


def _parallel(trials, space, metric, mode):
    import matplotlib.pyplot as plt

    scored = _scored(trials)
    params = [p for p in space if len({str(t.config.get(p)) for t in scored}) > 1]
    if len(scored) < 2 or not params:
        raise PlotSkipped("needs two scored trials that differ in a hyperparameter")
    axes_names = params + [metric]
    columns = []
    for name in axes_names:
        values = [t.best_value if name == metric else t.config.get(name) for t in scored]
        columns.append(_normalise(values, log=_is_log(space.get(name))))
    values = [t.best_value for t in scored]
    low, high = min(values), max(values)
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(max(1.8 * len(axes_names) + 2, 7), 4))
    for row, t in enumerate(scored):
        shade = (t.best_value - low) / (high - low) if high > low else 1.0
        ax.plot(range(len(axes_names)), [c[row] for c in columns], color=cmap(shade), alpha=0.8,
                linestyle=STATUS_LINES.get(t.status, "-"))
    for x, name in enumerate(axes_names):  # each axis is min-max scaled: print its real range
        raw = [t.best_value if name == metric else t.config.get(name) for t in scored]
        if all(isinstance(v, (int, float)) for v in raw):
            ax.annotate(f"{min(raw):.3g}", (x, 0), xytext=(0, -12), textcoords="offset points", ha="center", fontsize=7)
            ax.annotate(f"{max(raw):.3g}", (x, 1), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=7)
    if any(t.status == "stopped_early" for t in scored):
        ax.plot([], [], color="grey", linestyle=STATUS_LINES["stopped_early"], label="stopped early")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xticks(range(len(axes_names)), [n.split(".")[-1] for n in axes_names])
    ax.set_yticks([])
    ax.set_title(f"Parallel coordinates (colour: {metric}; log axes for log-scale ranges)", fontsize=10)
    return _finish(fig)


def _importance(trials, space, metric, mode):
    import matplotlib.pyplot as plt
    import optuna

    scored = _scored(trials)
    varied = {p for p in space if len({str(t.config.get(p)) for t in scored}) > 1}
    if len(scored) < 3 or not varied:
        raise PlotSkipped("needs three scored trials that differ in a hyperparameter")
    distributions = {p: optuna_distribution(d) for p, d in space.items()}
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
    return _finish(fig)


def _curves(trials, space, metric, mode):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    with_history = [t for t in trials if any(h.get(metric) is not None for h in t.history)]
    if not with_history:
        raise PlotSkipped("no trial reported an evaluation")
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in with_history:
        xs, ys = zip(*[(h["epoch"], h[metric]) for h in t.history if h.get(metric) is not None])
        status = t.status if t.status in STATUS_COLOURS else "completed"
        line, = ax.plot(xs, ys, marker="o", markersize=4, color=STATUS_COLOURS[status], alpha=0.8,
                        linestyle=STATUS_LINES[status])
        line.set_gid(f"curve-{status}-{t.trial_id}")
        if status != "completed":  # where the scheduler stopped it, or where it failed
            ax.scatter(xs[-1], ys[-1], marker=STATUS_MARKERS[status], s=70, color=STATUS_COLOURS[status],
                       edgecolors="black", linewidths=0.6, zorder=4)
    for status in STATUS_COLOURS:
        if any(t.status == status for t in with_history) or status == "completed":
            ax.plot([], [], color=STATUS_COLOURS[status], linestyle=STATUS_LINES[status],
                    marker=STATUS_MARKERS[status] if status != "completed" else "o", label=STATUS_LABELS[status])
    ax.legend(fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=metric, title="Learning curves (validation)")
    return _finish(fig)


PLOTS: dict[str, Callable[..., Any]] = {"optimization_history": _history, "parallel_coordinates": _parallel,
                                        "param_importance": _importance, "learning_curves": _curves}


def optuna_distribution(dist: dict[str, Any]) -> Any:
    """The Optuna distribution of one search-space entry (`{loguniform: [a, b]}`, `{choice: [...]}`, ...)."""
    import optuna.distributions as d

    (kind, args), = dist.items()
    if kind in ("loguniform", "uniform"):
        return d.FloatDistribution(float(args[0]), float(args[1]), log=kind == "loguniform")
    if kind == "int":
        return d.IntDistribution(int(args[0]), int(args[1]))
    return d.CategoricalDistribution(list(dict.fromkeys(args)))  # a grid may repeat a value


def _legend(ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)


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


def _finish(fig: Any) -> Any:
    fig.tight_layout()
    return fig
