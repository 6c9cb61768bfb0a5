"""Multi-label classification: each text carries zero or more labels (topics, toxicity categories).

The head has one sigmoid output per label, trained with binary cross-entropy (transformers'
`problem_type: multi_label_classification`); a label is predicted when its probability reaches
THRESHOLD. Scored by micro-F1 (as `f1`: every decision counts alike), macro-F1 (every label counts
alike, so rare labels matter) and exact match (all of an example's labels right).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import numpy as np

from ..data import DataError, Examples
from .base import TEXT, TokenizedSplit
from .sequence import SequenceTask, f1_from_counts, head_config, ratio

THRESHOLD = 0.5  # on the sigmoid; the logit's sign
NONE = "(none)"  # how the report and stratification show an example without labels
_SEPARATORS = re.compile(r"[,|]")


class MultiLabelClassification(SequenceTask):
    name = "multi-label-classification"
    inputs = TEXT
    metrics = ("f1", "micro_f1", "macro_f1", "exact_match")
    default_metric = "f1"
    example_inputs = [{"text": "The minister opened the new football stadium."}, {"text": "A quiet day."}]

    def parse_label(self, value: Any, where: str) -> list[str]:
        """A JSON list, a JSON-list string (a CSV cell), names separated by `,` or `|`, fastText tags,
        or an empty value (no labels)."""
        if value is None:
            return []
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise DataError(f"{where}: label cell {text!r} starts like a JSON list but is not one; "
                                    f'write ["a", "b"] or a,b') from None
            else:
                value = _SEPARATORS.split(text) if text else []
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            raise DataError(f"{where}: labels {value!r} are not a list of names; write [\"sports\", \"politics\"], "
                            f"sports|politics, or nothing for no label")
        return sorted({str(v).strip() for v in value if str(v).strip()})

    def label_names(self, labels: list[list[str]], origin: str) -> list[str]:
        names = sorted({name for label in labels for name in label})
        if not names:
            raise DataError(f"{origin}: no example has a label; multi-label-classification needs labels; "
                            f"check data.label_column")
        return names

    def label_values(self, label: list[str]) -> list[str]:
        return list(label)

    def stratify_key(self, label: list[str]) -> str:
        return "|".join(label) or NONE

    def label_counts(self, labels: list[list[str]]) -> dict[str, Any]:
        counts = Counter(name for label in labels for name in label)
        counts[NONE] = sum(not label for label in labels)
        return dict(sorted(counts.items()))

    def synthetic(self, size: int, seed: int) -> tuple[Examples, Examples, Examples]:
        from ..data.synthetic import topics

        return topics(size, seed)

    def model_config(self, label_names: list[str]) -> dict[str, Any]:
        return head_config(label_names, "multi_label_classification")

    def label_array(self, labels: list[list[str]], label_names: list[str]) -> np.ndarray:
        # Multi-hot float rows: BCEWithLogitsLoss wants float targets of the logits' shape.
        index = {name: i for i, name in enumerate(label_names)}
        hot = np.zeros((len(labels), len(label_names)), dtype=np.float32)
        for row, label in enumerate(labels):
            hot[row, [index[name] for name in label]] = 1.0
        return hot

    def predictions(self, logits: np.ndarray, labels: np.ndarray) -> list[list[int]]:
        return (logits >= _logit(THRESHOLD)).astype(np.int64).tolist()

    def score(self, predicted: list[list[int]], split: TokenizedSplit, indices: list[int], label_names: list[str]) -> dict[str, Any]:
        from sklearn.metrics import f1_score

        gold = split.labels[np.asarray(indices, dtype=np.int64)].astype(np.int64)
        pred = np.asarray(predicted, dtype=np.int64).reshape(gold.shape)
        micro = float(f1_score(gold, pred, average="micro", zero_division=0))
        per_label = f1_score(gold, pred, average=None, zero_division=0)
        return {
            "f1": micro,
            "micro_f1": micro,
            "macro_f1": float(np.mean(per_label)) if len(per_label) else 0.0,
            "exact_match": float(np.mean(np.all(gold == pred, axis=1))) if len(gold) else 0.0,
            "report": {name: {"f1-score": float(f), "support": int(gold[:, i].sum())}
                       for i, (name, f) in enumerate(zip(label_names, per_label))},
        }

    def gold(self, split: TokenizedSplit) -> list[Any]:
        return split.labels.astype(np.int64).tolist()

    def example_stats(self, predicted: list[list[int]], gold: list[Any], label_names: list[str]) -> np.ndarray:
        """Per example: [1, all labels right, tp per label, fp per label, fn per label]."""
        true = np.asarray(gold, dtype=np.int64).reshape(len(gold), len(label_names))
        pred = np.asarray(predicted, dtype=np.int64).reshape(true.shape)
        exact = np.all(true == pred, axis=1).astype(np.float64)
        return np.column_stack([np.ones(len(true)), exact, pred & true, pred & (1 - true), (1 - pred) & true])

    def metric_from_totals(self, totals: np.ndarray, metric: str, label_names: list[str]) -> np.ndarray:
        totals = np.atleast_2d(totals)
        count = len(label_names)
        tp, fp, fn = (totals[:, 2 + k * count: 2 + (k + 1) * count] for k in range(3))
        if metric in ("f1", "micro_f1"):
            tp_all = tp.sum(axis=1)
            return f1_from_counts(tp_all, tp_all + fp.sum(axis=1), tp_all + fn.sum(axis=1))
        if metric == "macro_f1":
            return f1_from_counts(tp, tp + fp, tp + fn).mean(axis=1)
        if metric == "exact_match":
            return ratio(totals[:, 1], totals[:, 0])
        raise ValueError(f"no paired statistic for metric {metric!r}")

    def answers(self, logits: np.ndarray, encoded: Any, inputs: list[dict[str, str]], label_names: list[str]) -> list[dict[str, Any]]:
        probs = 1.0 / (1.0 + np.exp(-logits))
        return [{"labels": [name for name, p in zip(label_names, row) if p >= THRESHOLD],
                 "scores": [{"label": name, "score": float(p)} for name, p in zip(label_names, row)]}
                for row in probs]

    def output_schema(self) -> Any:
        from mlflow.types import ColSpec, DataType, Schema
        from mlflow.types.schema import Array, Object, Property

        scored = Object([Property("label", DataType.string), Property("score", DataType.double)])
        return Schema([ColSpec(Array(DataType.string), "labels"), ColSpec(Array(scored), "scores")])


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))
