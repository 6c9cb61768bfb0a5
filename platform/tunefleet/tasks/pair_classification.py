"""Sentence-pair classification (paraphrase, entailment, question-answer matching: GLUE's MRPC, RTE,
QNLI, MNLI): one label per pair of texts, which the model reads as one sequence with a separator and
segment ids.

Scored like text classification (accuracy, macro-F1 as `f1`), plus `binary_f1` when there are two
classes: the F1 of the second label name in sorted order, which is the positive class for 0/1 labels
(MRPC's "1" = paraphrase, the figure GLUE publishes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import Examples
from .base import PAIR, TokenizedSplit
from .classification import TextClassification
from .sequence import class_f1, class_metric


class TextPairClassification(TextClassification):
    """Text classification whose example is a pair: the same labels, head, loss and answers; other
    inputs, data and one more metric."""

    name = "text-pair-classification"
    inputs = PAIR
    metrics = ("accuracy", "f1", "macro_f1", "binary_f1")
    example_inputs = [
        {"text": "The company said profits rose sharply.", "text_pair": "Profits went up a lot, the firm said."},
        {"text": "The company said profits rose sharply.", "text_pair": "The weather was mild in Oslo."},
    ]

    def synthetic(self, size: int, seed: int) -> tuple[Examples, Examples, Examples]:
        from ..data.synthetic import paraphrase_pairs

        return paraphrase_pairs(size, seed)

    def score(self, predicted: list[int], split: TokenizedSplit, indices: list[int], label_names: list[str]) -> dict[str, Any]:
        scores = super().score(predicted, split, indices, label_names)
        # Present for every label set, so that `metric: binary_f1` never finds the key missing; with
        # more than two classes it is the macro-F1.
        scores["binary_f1"] = scores["report"][label_names[1]]["f1-score"] if len(label_names) == 2 else scores["f1"]
        return scores

    def metric_from_totals(self, totals: np.ndarray, metric: str, label_names: list[str]) -> np.ndarray:
        if metric == "binary_f1" and len(label_names) == 2:
            return class_f1(np.atleast_2d(totals), 2)[:, 1]
        return class_metric(totals, "f1" if metric == "binary_f1" else metric, len(label_names))
