"""What the tasks with one label per text (or per pair of texts) share: tokenizing a text or a pair,
reading request items, and the sequence-classification head.

A pair is tokenized as the tokenizer's own pair template (`[CLS] a [SEP] b [SEP]` for BERT,
`<s> a </s></s> b </s>` for RoBERTa) with segment ids where the model has them, so the model sees
where one text ends and the other starts; joining the two texts with a space would hide that.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from ..data import DataError, Examples
from .base import PAIR, TEXT, TEXT_OR_PAIR, TokenizedSplit

_BATCH = 1000  # fast tokenizers parallelise within a batch; 1000 keeps memory small


class SequenceTask:
    """Base for text-classification, text-pair-classification, text-regression and multi-label:
    everything here is about the inputs; subclasses own labels, head, metrics and answers."""

    name: str
    inputs: str
    model_class_name = "AutoModelForSequenceClassification"
    per_token_labels = False
    minimize: frozenset[str] = frozenset({"loss"})

    # ---- data -----------------------------------------------------------------------------------
    def finish_labels(self, labels: list[Any], scheme: str) -> list[Any]:
        return labels

    def label_values(self, label: Any) -> list[str]:
        return [label]

    def stratify_key(self, label: Any) -> str:
        return str(label)

    def label_counts(self, labels: list[Any]) -> dict[str, Any]:
        return dict(sorted(Counter(labels).items()))

    def token_lengths(self, examples: Examples, tokenizer: Any, max_length: int) -> tuple[list[int], dict[str, int]]:
        lengths = []
        for start in range(0, len(examples), _BATCH):
            texts, pairs = _texts_and_pairs(examples, start, start + _BATCH)
            # verbose=False: lengths beyond the model maximum are what we are measuring, not a mistake.
            encoded = tokenizer(texts, pairs, truncation=False, verbose=False)
            lengths.extend(len(ids) for ids in encoded["input_ids"])
        return lengths, {}

    # ---- model ----------------------------------------------------------------------------------
    def label_array(self, labels: list[Any], label_names: list[str]) -> np.ndarray:
        """One row per example, as the head's loss wants it."""
        raise NotImplementedError

    def gold(self, split: TokenizedSplit) -> list[Any]:
        return split.labels.tolist()

    def tokenize(self, examples: Examples, tokenizer: Any, label_names: list[str], max_length: int) -> TokenizedSplit:
        texts, pairs = _texts_and_pairs(examples, 0, len(examples))
        # No padding here: batches are padded to their own longest example at collation time. A pair
        # too long for max_length loses tokens from its longer text first ("longest_first").
        encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False)
        ids = encoded["input_ids"]
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(x) for x in ids])
        count = int(offsets[-1])
        # Segment ids only where they say something: a pair, on a model that has them (DistilBERT
        # and RoBERTa have none, and single texts are all segment 0 anyway).
        type_ids = None
        if pairs is not None and "token_type_ids" in encoded and "token_type_ids" in tokenizer.model_input_names:
            type_ids = np.fromiter((t for x in encoded["token_type_ids"] for t in x), dtype=np.int8, count=count)
        return TokenizedSplit(
            ids=np.fromiter((t for x in ids for t in x), dtype=np.int32, count=count),
            offsets=offsets,
            labels=self.label_array(examples.labels, label_names),
            type_ids=type_ids,
        )

    # ---- answers --------------------------------------------------------------------------------
    def check_input(self, item: Any, where: str) -> dict[str, str]:
        if isinstance(item, str):
            item = {"text": item}
        shape = '{"text": "...", "text_pair": "..."}' if self.inputs == PAIR else '"..." or {"text": "..."}'
        if not isinstance(item, dict):
            raise ValueError(f"{where} is a {type(item).__name__}; send {shape}")
        allowed = {"text"} if self.inputs == TEXT else {"text", "text_pair"}
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise ValueError(f"{where} has unknown field(s) {unknown}; a {self.name} input is {shape}")
        needed = ("text", "text_pair") if self.inputs == PAIR else ("text",)
        for field in needed:
            if field not in item:
                raise ValueError(f'{where} lacks "{field}"; a {self.name} input is {shape}')
        for field, value in item.items():
            if not isinstance(value, str):
                raise ValueError(f'{where}: "{field}" is a {type(value).__name__}; it must be a string')
        return item

    def encode(self, tokenizer: Any, inputs: list[dict[str, str]], max_length: int) -> Any:
        texts = [item["text"] for item in inputs]
        pairs = [item.get("text_pair") for item in inputs]
        if self.inputs == TEXT_OR_PAIR and any(p is None for p in pairs) and not all(p is None for p in pairs):
            raise ValueError("every input in one request has a text_pair, or none has: a model trained on "
                             "pairs scores pairs")
        return tokenizer(texts, None if pairs[0] is None else pairs, truncation=True, max_length=max_length,
                         padding=True, return_tensors="pt")

    def input_schema(self) -> Any:
        from mlflow.types import ColSpec, DataType, Schema

        columns = [ColSpec(DataType.string, "text")]
        if self.inputs != TEXT:
            columns.append(ColSpec(DataType.string, "text_pair", required=self.inputs == PAIR))
        return Schema(columns)


def _texts_and_pairs(examples: Examples, start: int, end: int) -> tuple[list[str], list[str] | None]:
    texts = examples.texts[start:end]
    pairs = examples.text_pairs[start:end] if examples.text_pairs is not None else None
    return texts, pairs


def single_label(value: Any, where: str, task: str) -> str:
    """A class name from a cell, a JSON value (`"positive"`, `1`) or fastText tags (exactly one)."""
    if isinstance(value, list):
        if len(value) != 1:
            found = "no label" if not value else f"{len(value)} labels ({', '.join(map(str, value))})"
            raise DataError(f"{where}: {found}; {task} takes exactly one label per example "
                            f"(for several, use task: multi-label-classification)")
        value = value[0]
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{where}: empty label; fill in the label or remove the row")
    # Integer labels (0/1) become strings so every reader yields the same label type.
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise DataError(f"{where}: label {value!r} is not a non-empty string or integer; write e.g. \"positive\" or 1")
    return str(value).strip()


def class_names(labels: list[str], origin: str, task: str) -> list[str]:
    names = sorted(set(labels))
    if len(names) < 2:
        raise DataError(f"{origin}: {task} needs at least 2 classes; the training data only has "
                        f"{names[0]!r}; check data.label_column")
    return names


def class_ids(labels: list[str], label_names: list[str]) -> np.ndarray:
    label_to_id = {label: i for i, label in enumerate(label_names)}
    return np.array([label_to_id[label] for label in labels], dtype=np.int64)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def head_config(label_names: list[str], problem_type: str) -> dict[str, Any]:
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": {label: i for i, label in enumerate(label_names)}, "problem_type": problem_type}


def label_and_score_schema() -> Any:
    from mlflow.types import ColSpec, DataType, Schema

    return Schema([ColSpec(DataType.string, "label"), ColSpec(DataType.double, "score")])


# ---- counts whose sums give a metric (the paired bootstrap's input, `tracking/paired.py`) -------

def f1_from_counts(tp: np.ndarray, predicted: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """F1 = 2 tp / (predicted + gold), 0 where nothing was predicted or expected (scikit-learn's and
    seqeval's `zero_division=0`)."""
    denominator = predicted + gold
    return np.divide(2.0 * tp, denominator, out=np.zeros(np.broadcast(tp, denominator).shape), where=denominator > 0)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    return np.divide(numerator, denominator, out=np.zeros(np.broadcast(numerator, denominator).shape),
                     where=denominator > 0)


def class_stats(predicted: list[int], gold: list[int], classes: int) -> np.ndarray:
    """Per example: [1, correct, one-hot(correct class) , one-hot(predicted), one-hot(gold)]."""
    pred = np.asarray(predicted, dtype=np.int64)
    true = np.asarray(gold, dtype=np.int64)
    eye = np.eye(classes)
    hit = (pred == true).astype(np.float64)
    return np.column_stack([np.ones(len(true)), hit, eye[true] * hit[:, None], eye[pred], eye[true]])


def class_metric(totals: np.ndarray, metric: str, classes: int) -> np.ndarray:
    """Accuracy or macro-F1 over every class (as `classification_scores`) from `class_stats` sums;
    `class_f1` gives each class's F1 ([B, classes])."""
    totals = np.atleast_2d(totals)
    if metric == "accuracy":
        return ratio(totals[:, 1], totals[:, 0])
    if metric in ("f1", "macro_f1"):
        return class_f1(totals, classes).mean(axis=1)
    raise ValueError(f"no paired statistic for metric {metric!r}")


def class_f1(totals: np.ndarray, classes: int) -> np.ndarray:
    tp, pred, true = (totals[:, 2 + k * classes: 2 + (k + 1) * classes] for k in range(3))
    return f1_from_counts(tp, pred, true)
