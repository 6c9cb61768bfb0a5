"""Text regression: a score per text or per pair of texts (STS-B similarity 0-5, review ratings).

The head is one linear output trained with mean squared error (transformers' `problem_type:
regression`); predictions are scored by Pearson and Spearman correlation with the gold scores, and
by MSE. The data decides single text or pair: two text columns (or a `text_pair` field) make pairs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..data import DataError, Examples
from .base import TEXT_OR_PAIR, TokenizedSplit
from .sequence import SequenceTask

SCORE = "score"  # the one output's name


class TextRegression(SequenceTask):
    name = "text-regression"
    inputs = TEXT_OR_PAIR
    metrics = ("pearson", "spearman", "mse")
    default_metric = "spearman"
    minimize = frozenset({"loss", "mse"})
    example_inputs = [{"text": "A man is playing a guitar.", "text_pair": "A person plays the guitar."}]

    def parse_label(self, value: Any, where: str) -> float:
        if isinstance(value, list) and len(value) == 1:  # a fastText tag: __label__3.5
            value = value[0]
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise DataError(f"{where}: label {value!r} is not a finite number; text-regression needs a score "
                            f"such as 3.8 per example")
        return number

    def label_names(self, labels: list[float], origin: str) -> list[str]:
        if len(set(labels)) < 2:
            raise DataError(f"{origin}: every training score is {labels[0]!r}; text-regression needs scores "
                            f"that vary; check data.label_column")
        return [SCORE]

    def label_values(self, label: float) -> list[str]:
        return []  # any number is a valid score, seen in training or not

    def stratify_key(self, label: float) -> str:
        # Whole-number bins keep the score distribution alike across carved splits.
        return str(math.floor(label))

    def label_counts(self, labels: list[float]) -> dict[str, Any]:
        values = np.asarray(labels, dtype=np.float64)
        if not len(values):
            return {}
        return {"min": float(values.min()), "mean": round(float(values.mean()), 4), "max": float(values.max())}

    def synthetic(self, size: int, seed: int) -> tuple[Examples, Examples, Examples]:
        from ..data.synthetic import similarity_pairs

        return similarity_pairs(size, seed)

    def model_config(self, label_names: list[str]) -> dict[str, Any]:
        return {"num_labels": 1, "id2label": {0: SCORE}, "label2id": {SCORE: 0}, "problem_type": "regression"}

    def label_array(self, labels: list[float], label_names: list[str]) -> np.ndarray:
        return np.asarray(labels, dtype=np.float32)

    def predictions(self, logits: np.ndarray, labels: np.ndarray) -> list[float]:
        return logits[:, 0].tolist()

    def score(self, predicted: list[float], split: TokenizedSplit, indices: list[int], label_names: list[str]) -> dict[str, Any]:
        from scipy.stats import pearsonr, spearmanr

        gold = split.labels[np.asarray(indices, dtype=np.int64)].astype(np.float64)
        pred = np.asarray(predicted, dtype=np.float64)
        # A constant prediction (an untrained head) has no correlation: scipy says NaN, which would
        # poison comparisons and JSON; it means "no better than chance", so 0.
        constant = len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(gold) == 0
        return {
            "pearson": 0.0 if constant else float(pearsonr(pred, gold)[0]),
            "spearman": 0.0 if constant else float(spearmanr(pred, gold)[0]),
            "mse": float(np.mean((pred - gold) ** 2)) if len(pred) else 0.0,
        }

    def example_stats(self, predicted: list[float], gold: list[Any], label_names: list[str]) -> np.ndarray:
        """[1, x, y, x², y², xy, (x-y)²] of prediction x and gold y, and the same moments of their
        ranks over all examples (Spearman is Pearson on ranks). A resample keeps each example's
        full-sample rank: exact on the whole set, a close approximation on a resample."""
        from scipy.stats import rankdata

        x = np.asarray(predicted, dtype=np.float64)
        y = np.asarray(gold, dtype=np.float64)
        rx, ry = rankdata(x), rankdata(y)
        return np.column_stack([np.ones(len(x)), x, y, x * x, y * y, x * y, (x - y) ** 2,
                                rx, ry, rx * rx, ry * ry, rx * ry])

    def metric_from_totals(self, totals: np.ndarray, metric: str, label_names: list[str]) -> np.ndarray:
        totals = np.atleast_2d(totals)
        n = totals[:, 0]
        if metric == "mse":
            return np.divide(totals[:, 6], n, out=np.zeros(len(n)), where=n > 0)
        first = {"pearson": 1, "spearman": 7}.get(metric)
        if first is None:
            raise ValueError(f"no paired statistic for metric {metric!r}")
        sx, sy, sxx, syy, sxy = (totals[:, first + k] for k in range(5))
        with np.errstate(invalid="ignore", divide="ignore"):
            var_x, var_y = sxx - sx * sx / n, syy - sy * sy / n
            covariance = sxy - sx * sy / n
            r = covariance / np.sqrt(var_x * var_y)
        # As `score`: a constant prediction (or gold) has no correlation, which counts as 0. The
        # tolerance absorbs the rounding of sums of squares of equal values.
        constant = (var_x <= 1e-9 * np.maximum(sxx, 1.0)) | (var_y <= 1e-9 * np.maximum(syy, 1.0)) | (n < 2)
        return np.where(constant, 0.0, np.clip(r, -1.0, 1.0))

    def answers(self, logits: np.ndarray, encoded: Any, inputs: list[dict[str, str]], label_names: list[str]) -> list[dict[str, Any]]:
        return [{"score": float(row[0])} for row in logits]

    def output_schema(self) -> Any:
        from mlflow.types import ColSpec, DataType, Schema

        return Schema([ColSpec(DataType.double, "score")])
