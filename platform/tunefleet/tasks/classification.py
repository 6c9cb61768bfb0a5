"""Text classification (sentiment, topics): one label per text, scored by accuracy and macro-F1."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import TokenizedSplit


class TextClassification:
    name = "text-classification"
    model_class_name = "AutoModelForSequenceClassification"

    def tokenize(self, examples: Any, tokenizer: Any, label_names: list[str], max_length: int) -> TokenizedSplit:
        label_to_id = {label: i for i, label in enumerate(label_names)}
        # No padding here: batches are padded to their own longest text at collation time.
        encoded = tokenizer(examples.texts, truncation=True, max_length=max_length, padding=False)
        ids = encoded["input_ids"]
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(x) for x in ids])
        return TokenizedSplit(
            ids=np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1])),
            offsets=offsets,
            labels=np.array([label_to_id[label] for label in examples.labels], dtype=np.int64),
        )

    def predictions(self, logits: np.ndarray, labels: np.ndarray) -> list[int]:
        return logits.argmax(-1).tolist()

    def score(self, predicted: list[int], split: TokenizedSplit, indices: list[int], label_names: list[str]) -> dict[str, Any]:
        from sklearn.metrics import accuracy_score, classification_report, f1_score

        gold = split.labels[np.asarray(indices, dtype=np.int64)].tolist()
        label_ids = list(range(len(label_names)))
        macro_f1 = float(f1_score(gold, predicted, labels=label_ids, average="macro", zero_division=0))
        report = classification_report(
            gold, predicted, labels=label_ids, target_names=label_names, output_dict=True, zero_division=0
        )
        return {
            "accuracy": float(accuracy_score(gold, predicted)),
            # `f1` is macro-F1 so that `metric: f1` means the same kind of thing for every task.
            "f1": macro_f1,
            "macro_f1": macro_f1,
            "report": {name: report[name] for name in label_names},
        }
