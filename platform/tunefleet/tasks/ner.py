"""Named-entity recognition as token classification, scored at the entity level.

Words are split into sub-words by the tokenizer. Only the first sub-word of each word carries the
word's tag; later sub-words and special tokens get IGNORE, so every word counts exactly once in the
loss and in the metrics, however many pieces the tokenizer made of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import IGNORE, TokenizedSplit


def align_labels(word_ids: list[int | None], word_tags: list[int]) -> list[int]:
    """Tag ids per sub-word: the word's tag on its first sub-word, IGNORE elsewhere."""
    aligned, previous = [], None
    for word in word_ids:
        aligned.append(IGNORE if word is None or word == previous else word_tags[word])
        previous = word
    return aligned


class TokenClassification:
    name = "token-classification"
    model_class_name = "AutoModelForTokenClassification"

    def tokenize(self, examples: Any, tokenizer: Any, label_names: list[str], max_length: int) -> TokenizedSplit:
        tag_to_id = {tag: i for i, tag in enumerate(label_names)}
        encoded = tokenizer(examples.tokens, is_split_into_words=True, truncation=True,
                            max_length=max_length, padding=False)
        ids, labels, gold, lengths, gold_lengths = [], [], [], [], []
        for i, word_tags in enumerate(examples.labels):
            tag_ids = [tag_to_id[tag] for tag in word_tags]
            row = encoded["input_ids"][i]
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
        from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
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
        kwargs = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
        report = classification_report(y_true, y_pred, output_dict=True, **kwargs)
        return {
            "f1": float(f1_score(y_true, y_pred, **kwargs)),
            "precision": float(precision_score(y_true, y_pred, **kwargs)),
            "recall": float(recall_score(y_true, y_pred, **kwargs)),
            "report": {k: {m: float(v) for m, v in vals.items()} for k, vals in report.items() if not k.endswith("avg")},
        }


def _offsets(lengths: list[int]) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    return offsets
