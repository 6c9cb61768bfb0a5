"""Text classification (sentiment, topics): one label per text, scored by accuracy and macro-F1."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import Examples
from .base import TEXT, TokenizedSplit
from .sequence import (SequenceTask, class_ids, class_metric, class_names, class_stats, head_config,
                       label_and_score_schema, single_label, softmax)


class TextClassification(SequenceTask):
    name = "text-classification"
    inputs = TEXT
    metrics = ("accuracy", "f1", "macro_f1")
    default_metric = "f1"
    example_inputs = [{"text": "great value, works as described"}, {"text": "broke after a week"}]

    def parse_label(self, value: Any, where: str) -> str:
        return single_label(value, where, self.name)

    def label_names(self, labels: list[str], origin: str) -> list[str]:
        return class_names(labels, origin, self.name)

    def synthetic(self, size: int, seed: int) -> tuple[Examples, Examples, Examples]:
        from ..data.synthetic import reviews

        return reviews(size, seed)

    def model_config(self, label_names: list[str]) -> dict[str, Any]:
        return head_config(label_names, "single_label_classification")

    def label_array(self, labels: list[str], label_names: list[str]) -> np.ndarray:
        return class_ids(labels, label_names)

    def predictions(self, logits: np.ndarray, labels: np.ndarray) -> list[int]:
        return logits.argmax(-1).tolist()

    def score(self, predicted: list[int], split: TokenizedSplit, indices: list[int], label_names: list[str]) -> dict[str, Any]:
        return classification_scores(predicted, split, indices, label_names)

    def example_stats(self, predicted: list[int], gold: list[Any], label_names: list[str]) -> np.ndarray:
        return class_stats(predicted, gold, len(label_names))

    def metric_from_totals(self, totals: np.ndarray, metric: str, label_names: list[str]) -> np.ndarray:
        return class_metric(totals, metric, len(label_names))

    def answers(self, logits: np.ndarray, encoded: Any, inputs: list[dict[str, str]], label_names: list[str]) -> list[dict[str, Any]]:
        return label_and_score(logits, label_names)

    def output_schema(self) -> Any:
        return label_and_score_schema()


def classification_scores(predicted: list[int], split: TokenizedSplit, indices: list[int],
                          label_names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 (also as `f1`, so `metric: f1` means the same kind of thing for every
    task) and the per-class report."""
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    gold = split.labels[np.asarray(indices, dtype=np.int64)].tolist()
    label_ids = list(range(len(label_names)))
    macro_f1 = float(f1_score(gold, predicted, labels=label_ids, average="macro", zero_division=0))
    report = classification_report(gold, predicted, labels=label_ids, target_names=label_names,
                                   output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "f1": macro_f1,
        "macro_f1": macro_f1,
        "report": {name: report[name] for name in label_names},
    }


def label_and_score(logits: np.ndarray, label_names: list[str]) -> list[dict[str, Any]]:
    """The most probable label and its probability, per example."""
    probs = softmax(logits)
    best = probs.argmax(-1)
    return [{"label": label_names[i], "score": float(p[i])} for i, p in zip(best, probs)]
