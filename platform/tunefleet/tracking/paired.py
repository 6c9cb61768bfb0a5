"""The promotion gate's paired test: is the challenger better than the champion on the same test
examples, by more than the margin, beyond what seed noise would give?

Fine-tuning the same hyperparameters with another seed moves test F1 by a point or more, so one
test score against another promotes noise. Both models were scored on the same test examples,
though, and most examples they get equally right or wrong; only the examples where they differ say
which is better. A paired bootstrap uses exactly that: resample the test examples with replacement
(the same resample for both models), recompute both metrics, and look at the distribution of the
difference. The challenger is promoted only when the difference's one-sided lower confidence bound
(its `1 - confidence` quantile) is above the margin.

Each registered version keeps its per-example test results (`RECORD_FILE` beside the model: the
gold labels, its predictions, and which examples they are). The task turns those into per-example
counts whose sums give its metric (`Task.example_stats` / `metric_from_totals`, checked against
`score` by the task contract test), so a resample is a weighted sum of rows and 2,000 resamples are
a few matrix products, for entity F1 and macro-F1 as well as for accuracy.

Resampling the test examples measures how much the comparison depends on which examples were in the
test set. It cannot see the other noise: that the same hyperparameters trained with another seed give
another model. When the seed-to-seed spread of a recipe is known (a sweep with `search.final_seeds`
measures it on its finalist and records it on the version as `tunefleet.seed_std`), the gate adds it:
each resampled difference gets a normal draw with the variance of the difference of two seeds,
sigma_champion^2 + sigma_challenger^2 (one known sigma stands for both: the same task, data and
metric). Without a measured spread the gate can only account for the test set, and the reason says
so. `benchmarks/promotion_gate.py` measures both on real data.

Worked example (`tests/test_paired.py`): 100 test examples, the challenger right on one more than
the champion and equal elsewhere. Accuracy differs by 0.01, but a resample leaves that one example
out with probability 0.99^100 = 0.37, so over a third of the resamples show no difference: the 5%
lower bound is 0 and the challenger is not promoted at 95%. Right on 20 more: the difference is
about Binomial(100, 0.2)/100, lower bound near 0.2 - 1.645 x 0.04 = 0.134, promoted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

RECORD_FILE = "test_predictions.json"
SAMPLES = 2000  # resamples; the 5% quantile's own noise is then about 0.1 of a standard error


class NotComparable(ValueError):
    """Two versions' per-example results cannot be paired (the reason says why)."""


@dataclass(frozen=True)
class PairedComparison:
    """Challenger against champion on the same test examples; `advantage` is positive when the
    challenger is better, whichever direction the metric goes."""

    metric: str
    advantage: float  # on all test examples
    lower_bound: float  # one-sided: the challenger's advantage is above this with `confidence`
    interval: tuple[float, float]  # central interval of the advantage at `confidence`
    confidence: float
    examples: int
    samples: int
    seed_noise: float | None = None  # standard deviation of the difference that seeds alone make

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"interval": list(self.interval)}


def example_record(task: Any, split: Any, predicted: list[Any], label_names: list[str], fingerprint: str) -> dict[str, Any]:
    """A version's per-example test results, as kept beside its model.

    Args:
        split: the tokenized test split (for the gold labels); `predicted` is in its order.
        fingerprint: which examples these are (`data.load.split_fingerprint` of the test split).
    """
    gold = task.gold(split)
    if len(gold) != len(predicted):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} test examples")
    return {"format": 1, "task": task.name, "label_names": list(label_names), "fingerprint": fingerprint,
            "examples": len(gold), "gold": gold, "predicted": _plain(predicted)}


def compare(champion: dict[str, Any], challenger: dict[str, Any], metric: str, mode: str, confidence: float,
            samples: int = SAMPLES, seed: int = 0, seed_noise: float | None = None) -> PairedComparison:
    """The paired bootstrap of `metric` between two versions' example records.

    Args:
        seed_noise: the standard deviation of the metric's difference between two training seeds of
            the same recipe (`seed_noise_of_difference`); None: test-set noise only.

    Raises:
        NotComparable: different tasks, label sets or test examples, or a metric without counts
            (the loss).
    """
    from ..tasks import get_task

    for key, what in (("task", "tasks"), ("label_names", "label sets"), ("fingerprint", "test examples")):
        if champion.get(key) != challenger.get(key):
            raise NotComparable(f"different {what}")
    task = get_task(challenger["task"])
    if metric not in task.metrics:
        raise NotComparable(f"{metric!r} is not a per-example metric of {task.name}")
    names = challenger["label_names"]
    stats = [task.example_stats(record["predicted"], record["gold"], names) for record in (champion, challenger)]
    sign = 1.0 if mode == "max" else -1.0
    examples = len(challenger["gold"])
    if examples == 0:
        raise NotComparable("no test examples")

    def advantage(weights: np.ndarray) -> np.ndarray:
        before, after = (task.metric_from_totals(weights @ s, metric, names) for s in stats)
        return sign * (after - before)

    observed = float(advantage(np.ones((1, examples)))[0])
    rng = np.random.default_rng(seed)
    # Each resample as counts per example (how often it was drawn): the same counts weight both
    # models' rows, which is what makes the comparison paired. In chunks: 2,000 x n floats at once
    # would be 55 MB for CoNLL's 3,453 test sentences.
    draws = np.concatenate([advantage(rng.multinomial(examples, np.full(examples, 1.0 / examples), size=size).astype(np.float64))
                            for size in _chunks(samples, 250)])
    if seed_noise:
        draws = draws + rng.normal(0.0, seed_noise, size=len(draws))
    tail = 1.0 - confidence
    low, high = np.quantile(draws, [tail / 2, 1.0 - tail / 2])
    return PairedComparison(metric=metric, advantage=observed, lower_bound=float(np.quantile(draws, tail)),
                            interval=(float(low), float(high)), confidence=confidence, examples=examples,
                            samples=samples, seed_noise=seed_noise or None)


def seed_noise_of_difference(champion_std: float | None, challenger_std: float | None) -> float | None:
    """The standard deviation that seeds alone give the difference of two single runs: the root of
    the sum of the two seed variances; one known spread stands for both; None when neither is."""
    known = [s for s in (champion_std, challenger_std) if s is not None and math.isfinite(s)]
    if not known:
        return None
    if len(known) == 1:
        return math.sqrt(2.0) * known[0]
    return math.sqrt(known[0] ** 2 + known[1] ** 2)


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


def _plain(value: Any) -> Any:
    """Predictions as JSON: numpy scalars and arrays become numbers and lists."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value
