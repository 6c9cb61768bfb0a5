"""Sweeps with more than one objective: the validation metric and costs such as latency or size.

A trial's second objectives (`search.objectives`, lower is better) are measured by the loop at each
evaluation that improved the metric, so they describe the checkpoint the trial keeps:
- `latency_ms`: the median time the model takes to answer one validation example alone (a batch of
  one, after two warm-up calls), on the trial's own device and threads; on a shared machine it
  includes whatever else runs beside the trial, so compare trials of one sweep, not across sweeps;
- `parameters`: the model's parameter count (searching LoRA ranks, or models, changes it).

The search itself still optimises the metric alone (TPE); what changes is the choice at the end: the
sweep reports the Pareto front (no other trial is at least as good on every objective and better on
one), and the model registered is the best by the metric among trials within
`search.constraints` (upper bounds, e.g. `{latency_ms: 20}`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .results import finite


def within(trial: Any, constraints: dict[str, float]) -> bool:
    """Whether a trial's measured objectives are all within the upper bounds (unmeasured: no)."""
    return all(finite(trial.objectives.get(name)) and trial.objectives[name] <= bound
               for name, bound in constraints.items())


def pareto_front(trials: Sequence[Any], mode: str, objectives: Sequence[str]) -> list[Any]:
    """The trials no other trial dominates, best metric first.

    Args:
        mode: "max" or "min" for the validation metric (`best_value`); every objective is minimised.
    """
    sign = 1.0 if mode == "max" else -1.0
    points = [(t, [-sign * t.best_value] + [t.objectives[name] for name in objectives]) for t in trials
              if finite(t.best_value) and all(finite(t.objectives.get(name)) for name in objectives)]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    front = [t for t, cost in points if not any(dominates(other, cost) for _, other in points)]
    return sorted(front, key=lambda t: -sign * t.best_value)


def pareto_summary(trials: Sequence[Any], mode: str, objectives: Sequence[str], constraints: dict[str, float],
                   metric: str) -> dict[str, Any]:
    """The summary's `pareto` section: the front, and how many trials are within the constraints."""
    front = pareto_front(trials, mode, objectives)
    return {"objectives": list(objectives), "constraints": dict(constraints),
            "within_constraints": sum(within(t, constraints) for t in trials if finite(t.best_value)),
            "front": [{"trial_id": t.trial_id, metric: t.best_value, **{k: t.objectives[k] for k in objectives},
                       "config": t.config} for t in front]}


def save_pareto_plot(trials: Sequence[Any], mode: str, objectives: Sequence[str], constraints: dict[str, float],
                     metric: str, folder: Path) -> Path | None:
    """`pareto.png` (beside the other plots): the metric against the first objective, every trial a dot, the front joined,
    the constraint as a line; None when nothing was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not objectives:
        return None
    name = objectives[0]
    measured = [t for t in trials if finite(t.best_value) and finite(t.objectives.get(name))]
    if not measured:
        return None
    front = pareto_front(measured, mode, [name])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter([t.objectives[name] for t in measured], [t.best_value for t in measured], color="tab:grey",
               label="trial", zorder=2)
    ordered = sorted(front, key=lambda t: t.objectives[name])
    ax.plot([t.objectives[name] for t in ordered], [t.best_value for t in ordered], "o-", color="tab:blue",
            label="Pareto front", zorder=3)
    if name in constraints:
        ax.axvline(constraints[name], color="tab:red", linestyle="--", label=f"{name} <= {constraints[name]:g}")
    ax.set(xlabel=name, ylabel=metric, title=f"Pareto front: {metric} against {name}")
    ax.legend(fontsize=8)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pareto.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
