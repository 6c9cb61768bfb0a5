"""Named-entity recognition as token classification, scored at the entity level.

Words are split into sub-words by the tokenizer. Only the first sub-word of each word carries the
word's tag; later sub-words and special tokens get IGNORE, so every word counts exactly once in the
loss and in the metrics, however many pieces the tokenizer made of it.

Answers are entity spans with character offsets into the input text. The text is split into words by
the tokenizer's own pre-tokenizer (whitespace and punctuation, as CoNLL tokens are); each word takes
the tag predicted for its first sub-word, exactly as in training.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from ..data import DataError, Examples
from ._tags import TAG, entity_types, ner_token_lengths, to_iob2
from .base import IGNORE, WORDS, TokenizedSplit
from .sequence import f1_from_counts, ratio, softmax


def align_labels(word_ids: list[int | None], word_tags: list[int]) -> list[int]:
    """Tag ids per sub-word: the word's tag on its first sub-word, IGNORE elsewhere."""
    aligned, previous = [], None
    for word in word_ids:
        aligned.append(IGNORE if word is None or word == previous else word_tags[word])
        previous = word
    return aligned


class TokenClassification:
    name = "token-classification"
    inputs = WORDS
    model_class_name = "AutoModelForTokenClassification"
    per_token_labels = True
    metrics = ("f1", "precision", "recall")
    default_metric = "f1"
    minimize = frozenset({"loss"})
    example_inputs = [{"text": "John Smith works for Acme in Berlin ."}]

    # ---- data -----------------------------------------------------------------------------------
    def parse_label(self, value: Any, where: str) -> list[str]:
        """A sentence's tags (one per word: the reader checks the count against the words)."""
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise DataError(f"{where}: tags must be a list of strings such as ['B-PER', 'O']")
        for tag in value:
            if not TAG.fullmatch(tag):
                raise DataError(f"{where}: tag {tag!r} is not O or B-TYPE/I-TYPE")
        return list(value)

    def finish_labels(self, labels: list[list[str]], scheme: str) -> list[list[str]]:
        return to_iob2(labels, scheme)

    def label_names(self, labels: list[list[str]], origin: str) -> list[str]:
        types = {kind for tags in labels for kind in entity_types(tags)}
        # Both B- and I- of every type seen: a type whose training entities are all one word still
        # has multi-word entities elsewhere, and the model needs an I- label for them.
        return ["O", *sorted(f"{prefix}-{kind}" for kind in types for prefix in "BI")]

    def label_values(self, label: list[str]) -> list[str]:
        return label

    def stratify_key(self, label: list[str]) -> str:
        """The sentence's most frequent entity type, or "O" if none."""
        counts = Counter(entity_types(label))
        return min(counts, key=lambda kind: (-counts[kind], kind)) if counts else "O"

    def label_counts(self, labels: list[list[str]]) -> dict[str, Any]:
        return dict(sorted(Counter(kind for tags in labels for kind in entity_types(tags)).items()))

    def token_lengths(self, examples: Examples, tokenizer: Any, max_length: int) -> tuple[list[int], dict[str, int]]:
        return ner_token_lengths(examples, tokenizer, max_length)

    def synthetic(self, size: int, seed: int) -> tuple[Examples, Examples, Examples]:
        from ..data.synthetic import news

        return news(size, seed)

    # ---- model ----------------------------------------------------------------------------------
    def model_config(self, label_names: list[str]) -> dict[str, Any]:
        return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                "label2id": {label: i for i, label in enumerate(label_names)}}

    def tokenize(self, examples: Any, tokenizer: Any, label_names: list[str], max_length: int) -> TokenizedSplit:
        tag_to_id = {tag: i for i, tag in enumerate(label_names)}
        encoded = tokenizer(examples.tokens, is_split_into_words=True, truncation=True,
                            max_length=max_length, padding=False)
        ids, labels, gold, lengths, gold_lengths = [], [], [], [], []
        for i, word_tags in enumerate(examples.labels):
            tag_ids = [tag_to_id[tag] for tag in word_tags]
            row = encoded["input_ids"][i]
            _check_every_word_has_tokens(examples.tokens[i], encoded.word_ids(i), i, tokenizer)
            ids.extend(row)
            labels.extend(align_labels(encoded.word_ids(i), tag_ids))
            gold.extend(tag_ids)
            lengths.append(len(row))
            gold_lengths.append(len(tag_ids))
        return TokenizedSplit(
            ids=np.asarray(ids, dtype=np.int32),
            offsets=_offsets(lengths),
            labels=np.asarray(labels, dtype=np.int64),
            gold=np.asarray(gold, dtype=np.int64),
            gold_offsets=_offsets(gold_lengths),
        )

    def predictions(self, logits: np.ndarray, labels: np.ndarray) -> list[list[int]]:
        best = logits.argmax(-1)
        return [row[mask].tolist() for row, mask in zip(best, labels != IGNORE)]

    def score(self, predicted: list[list[int]], split: TokenizedSplit, indices: list[int], label_names: list[str]) -> dict[str, Any]:
        from seqeval.metrics import classification_report
        from seqeval.scheme import IOB2

        y_true, y_pred = [], []
        outside = label_names.index("O") if "O" in label_names else 0
        for index, words in zip(indices, predicted):
            gold = split.gold[split.gold_offsets[index]:split.gold_offsets[index + 1]].tolist()
            # Words that truncation cut were never seen by the model: they count as predicted O, so a
            # too-short max_length shows up as lost recall instead of silently vanishing.
            words = words + [outside] * (len(gold) - len(words))
            y_true.append([label_names[t] for t in gold])
            y_pred.append([label_names[t] for t in words])
        # strict mode + IOB2: an entity counts only if its type and exact boundaries match (CoNLL rules).
        # The report's micro average is f1_score's, precision_score's and recall_score's (their default
        # average), from one pass over the entities instead of four: this runs after every epoch.
        report = classification_report(y_true, y_pred, output_dict=True, mode="strict", scheme=IOB2, zero_division=0)
        overall = report["micro avg"]
        return {
            "f1": float(overall["f1-score"]),
            "precision": float(overall["precision"]),
            "recall": float(overall["recall"]),
            "report": {k: {m: float(v) for m, v in vals.items()} for k, vals in report.items() if not k.endswith("avg")},
        }


    def gold(self, split: TokenizedSplit) -> list[list[int]]:
        return [split.gold[split.gold_offsets[i]:split.gold_offsets[i + 1]].tolist() for i in range(len(split))]

    def example_stats(self, predicted: list[list[int]], gold: list[list[int]], label_names: list[str]) -> np.ndarray:
        """Per sentence: [entities found exactly (type and boundaries), entities predicted, gold
        entities], under the same strict IOB2 rules as `score`."""
        from seqeval.scheme import IOB2, Entities

        outside = label_names.index("O") if "O" in label_names else 0
        y_true = [[label_names[t] for t in tags] for tags in gold]
        y_pred = [[label_names[t] for t in words + [outside] * (len(tags) - len(words))]
                  for words, tags in zip(predicted, gold)]
        true = Entities(y_true, IOB2, suffix=False).entities
        pred = Entities(y_pred, IOB2, suffix=False).entities
        rows = [(len({e.to_tuple() for e in t} & {e.to_tuple() for e in p}), len(p), len(t)) for t, p in zip(true, pred)]
        return np.asarray(rows, dtype=np.float64).reshape(len(gold), 3)

    def metric_from_totals(self, totals: np.ndarray, metric: str, label_names: list[str]) -> np.ndarray:
        tp, predicted, true = np.atleast_2d(totals).T
        if metric == "f1":
            return f1_from_counts(tp, predicted, true)
        if metric in ("precision", "recall"):
            return ratio(tp, predicted if metric == "precision" else true)
        raise ValueError(f"no paired statistic for metric {metric!r}")

    # ---- answers --------------------------------------------------------------------------------
    def check_input(self, item: Any, where: str) -> dict[str, str]:
        if isinstance(item, dict) and set(item) == {"text"}:
            item = item["text"]
        if not isinstance(item, str):
            raise ValueError(f'{where} is a {type(item).__name__}; send "..." or {{"text": "..."}}')
        return {"text": item}

    def encode(self, tokenizer: Any, inputs: list[dict[str, str]], max_length: int) -> Any:
        return tokenizer([item["text"] for item in inputs], truncation=True, max_length=max_length, padding=True,
                         return_offsets_mapping=True, return_tensors="pt")

    def answers(self, logits: np.ndarray, encoded: Any, inputs: list[dict[str, str]], label_names: list[str]) -> list[dict[str, Any]]:
        probs = softmax(logits)
        results = []
        for row, item in enumerate(inputs):
            offsets = encoded["offset_mapping"][row].tolist()
            words: list[tuple[int, int, str, float]] = []  # (start, end, tag, probability)
            previous = None
            for position, word in enumerate(encoded.word_ids(row)):
                if word is None:
                    continue
                start, end = offsets[position]
                if word != previous:
                    tag_id = int(probs[row, position].argmax())
                    words.append((start, end, label_names[tag_id], float(probs[row, position, tag_id])))
                else:  # a later sub-word of the same word only extends its character span
                    words[-1] = (words[-1][0], end, words[-1][2], words[-1][3])
                previous = word
            text = item["text"]
            words = [(*_without_spaces(text, start, end), tag, prob) for start, end, tag, prob in words]
            results.append({"entities": spans_from_tags(text, words)})
        return results

    def input_schema(self) -> Any:
        from mlflow.types import ColSpec, DataType, Schema

        return Schema([ColSpec(DataType.string, "text")])

    def output_schema(self) -> Any:
        from mlflow.types import ColSpec, DataType, Schema
        from mlflow.types.schema import Array, Object, Property

        entity = Object([Property("type", DataType.string), Property("start", DataType.long),
                         Property("end", DataType.long), Property("text", DataType.string),
                         Property("score", DataType.double)])
        return Schema([ColSpec(Array(entity), "entities")])


def _check_every_word_has_tokens(words: list[str], word_ids: list[int | None], sentence: int, tokenizer: Any) -> None:
    """Refuse a word the tokenizer turns into nothing (a zero-width space, a control character).

    Predictions are per word that has tokens, and gold tags per word: a word without tokens in the
    middle of a sentence would shift every later prediction onto the wrong gold tag, silently. Words
    cut by truncation (after the last word that has tokens) are fine: they count as missed.
    """
    present = {word for word in word_ids if word is not None}
    last = max(present, default=-1)
    missing = [word for word in range(last + 1) if word not in present]
    if missing:
        word = missing[0]
        raise DataError(
            f"sentence {sentence + 1}, word {word + 1} ({words[word]!r}): the tokenizer of "
            f"{getattr(tokenizer, 'name_or_path', 'the model')} gives it no tokens, so its tag could be neither "
            f"learned nor scored; remove such characters (zero-width spaces, control characters) from the data, "
            f"or use a model whose tokenizer keeps them")


def _without_spaces(text: str, start: int, end: int) -> tuple[int, int]:
    """A word's character span without surrounding whitespace. SentencePiece-style tokenizers whose
    "▁" stands for the space before a word, with no whitespace split before it (DeBERTa-v2/v3), give
    the word's first piece ("▁Berlin") the offsets of that space too: the entity starts at the word."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def spans_from_tags(text: str, words: list[tuple[int, int, str, float]]) -> list[dict[str, Any]]:
    """Merge word tags (IOB2) into entity spans. An `I-` that does not continue an entity of its
    type starts one, rather than being dropped: a model's slip should not hide the entity."""
    entities: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for start, end, tag, prob in words:
        prefix, _, kind = tag.partition("-")
        if prefix == "I" and current is not None and current["type"] == kind:
            current["end"], current["_probs"] = end, current["_probs"] + [prob]
            continue
        if current is not None:
            entities.append(current)
            current = None
        if prefix in ("B", "I"):
            current = {"type": kind, "start": start, "end": end, "_probs": [prob]}
    if current is not None:
        entities.append(current)
    for entity in entities:
        probs = entity.pop("_probs")
        entity["text"] = text[entity["start"]:entity["end"]]
        entity["score"] = float(sum(probs) / len(probs))
    return entities


def _offsets(lengths: list[int]) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    return offsets
