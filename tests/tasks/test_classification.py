"""Tests for tunefleet.tasks.classification: tokenization to flat arrays, and accuracy, macro-F1 and
the per-class report against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from tunefleet.data import Examples
from tunefleet.tasks import TokenizedSplit, get_task
from tunefleet.tasks.classification import TextClassification

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def tokenizer():
    from tunefleet.train.models import load_tokenizer

    return load_tokenizer("bundled-minilm")


def test_tokenize_gives_flat_ids_and_one_label_per_text(tokenizer):
    examples = Examples(texts=["great product", "awful"], tokens=None, labels=["positive", "negative"])
    split = TextClassification().tokenize(examples, tokenizer, LABELS, max_length=16)
    # [CLS] great product [SEP] | [CLS] awful [SEP], unpadded.
    assert split.ids.tolist() == [101, 2307, 4031, 102, 101, 9643, 102]
    assert split.offsets.tolist() == [0, 4, 7]
    assert split.labels.tolist() == [2, 0]
    assert split.gold is None


def test_tokenize_truncates_to_max_length(tokenizer):
    examples = Examples(texts=["one two three four five six seven eight"], tokens=None, labels=["neutral"])
    split = TextClassification().tokenize(examples, tokenizer, LABELS, max_length=5)
    assert split.lengths().tolist() == [5]
    assert split.ids[0] == tokenizer.cls_token_id and split.ids[-1] == tokenizer.sep_token_id


def test_scores_match_hand_computed_values():
    #            0    1    2    3    4    5    6
    gold = [0, 0, 1, 1, 2, 2, 2]
    predicted = [0, 1, 1, 1, 2, 0, 2]
    split = TokenizedSplit(ids=np.zeros(0, np.int32), offsets=np.zeros(8, np.int64),
                           labels=np.array(gold, dtype=np.int64))
    # Scored in a shuffled order, as gathered evaluation shards arrive: gold is looked up by index.
    order = [6, 2, 0, 5, 1, 4, 3]
    scores = get_task("text-classification").score([predicted[i] for i in order], split, order, LABELS)
    # Correct: 0, 2, 3, 4, 6 -> accuracy 5/7.
    # negative: predicted {0, 5}, gold {0, 1} -> P 1/2, R 1/2, F1 1/2
    # neutral:  predicted {1, 2, 3}, gold {2, 3} -> P 2/3, R 1, F1 = 2*(2/3)/(5/3) = 4/5
    # positive: predicted {4, 6}, gold {4, 5, 6} -> P 1, R 2/3, F1 = 4/5
    # macro-F1 = (1/2 + 4/5 + 4/5) / 3 = 0.7
    assert scores["accuracy"] == pytest.approx(5 / 7)
    assert scores["f1"] == scores["macro_f1"] == pytest.approx(0.7)
    report = scores["report"]
    assert set(report) == set(LABELS)
    assert report["negative"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1-score": 0.5, "support": 2})
    assert report["neutral"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1-score": 0.8, "support": 2})
    assert report["positive"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1-score": 0.8, "support": 3})


def test_predictions_are_the_argmax():
    logits = np.array([[0.1, 0.7, 0.2], [2.0, -1.0, 0.0]])
    assert TextClassification().predictions(logits, np.array([1, 0])) == [1, 0]
