"""Tests for tunefleet.tasks.ner: sub-word label alignment on hand-checked tokenizations, truncation
that keeps the gold tags of cut words, and seqeval strict IOB2 scoring against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from tunefleet.data import Examples
from tunefleet.tasks import IGNORE, TokenClassification, TokenizedSplit, align_labels, get_task

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
O, B_PER, I_PER, B_LOC, I_LOC, B_ORG, I_ORG = range(len(LABELS))
X = IGNORE

# One sentence whose words the bundled (uncased WordPiece) tokenizer splits in several ways:
#   Kowalczyk     -> ko ##wal ##cz ##yk       (4 pieces)
#   visited       -> visited                  (1)
#   Tokenization  -> token ##ization          (2)
#   Washington's  -> washington ' s           (3: the pre-tokenizer splits the apostrophe, but all
#                                              three pieces still belong to word 3)
WORDS = ["Kowalczyk", "visited", "Tokenization", "Washington's"]
TAGS = ["B-PER", "O", "O", "B-LOC"]


@pytest.fixture(scope="module")
def tokenizer():
    from tunefleet.train.models import load_tokenizer

    return load_tokenizer("bundled-minilm")


def tokenize(tokenizer, sentences, tags, max_length=64) -> TokenizedSplit:
    return TokenClassification().tokenize(Examples(texts=None, tokens=sentences, labels=tags),
                                          tokenizer, LABELS, max_length)


def test_the_hand_checked_splits_hold(tokenizer):
    # The expectations below rest on these splits; if the tokenizer changes, this fails first.
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(WORDS, is_split_into_words=True)["input_ids"])
    assert pieces == ["[CLS]", "ko", "##wal", "##cz", "##yk", "visited", "token", "##ization",
                      "washington", "'", "s", "[SEP]"]


def test_only_the_first_sub_word_of_each_word_carries_its_tag(tokenizer):
    split = tokenize(tokenizer, [WORDS], [TAGS])
    assert split.labels.tolist() == [
        X,                      # [CLS]
        B_PER, X, X, X,         # ko ##wal ##cz ##yk
        O,                      # visited
        O, X,                   # token ##ization
        B_LOC, X, X,            # washington ' s
        X,                      # [SEP]
    ]
    assert len(split.ids) == len(split.labels) == split.offsets[-1] == 12
    assert split.gold.tolist() == [B_PER, O, O, B_LOC]
    assert split.gold_offsets.tolist() == [0, 4]


def test_align_labels_masks_repeats_and_specials():
    assert align_labels([None, 0, 0, 1, 2, 2, 2, None], [B_ORG, I_ORG, O]) == [X, B_ORG, X, I_ORG, O, X, X, X]


def test_several_sentences_keep_their_own_offsets(tokenizer):
    split = tokenize(tokenizer, [WORDS, ["Paris"]], [TAGS, ["B-LOC"]])
    assert len(split) == 2
    assert split.offsets.tolist() == [0, 12, 15]
    assert split.labels[12:15].tolist() == [X, B_LOC, X]
    assert split.gold_offsets.tolist() == [0, 4, 5]
    assert split.gold[4:].tolist() == [B_LOC]


def test_truncation_keeps_gold_for_cut_words(tokenizer):
    # max_length 8 keeps [CLS] ko ##wal ##cz ##yk visited token [SEP]: "Tokenization" keeps its first
    # piece (so its tag), "Washington's" is cut entirely.
    split = tokenize(tokenizer, [WORDS], [TAGS], max_length=8)
    assert tokenizer.convert_ids_to_tokens(split.ids.tolist()) == [
        "[CLS]", "ko", "##wal", "##cz", "##yk", "visited", "token", "[SEP]"]
    assert split.labels.tolist() == [X, B_PER, X, X, X, O, O, X]
    # The gold tags of all four words survive, including the cut B-LOC.
    assert split.gold.tolist() == [B_PER, O, O, B_LOC]


def test_scoring_counts_cut_entities_as_missed(tokenizer):
    split = tokenize(tokenizer, [WORDS], [TAGS], max_length=8)
    task = get_task("token-classification")
    # A perfect prediction of the three words the model saw.
    scores = task.score([[B_PER, O, O]], split, [0], LABELS)
    # Gold entities: PER, LOC. Predicted: PER (the cut word counts as O).
    # P = 1/1, R = 1/2, F1 = 2 * 1 * 0.5 / 1.5 = 2/3.
    assert scores["precision"] == pytest.approx(1.0)
    assert scores["recall"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["report"]["LOC"]["recall"] == 0.0 and scores["report"]["LOC"]["support"] == 1


def test_predictions_keep_only_labelled_positions():
    logits = np.zeros((2, 5, len(LABELS)), dtype=np.float32)
    logits[0, [1, 2, 3], [B_PER, I_PER, O]] = 1.0
    logits[1, [1, 2], [B_LOC, B_ORG]] = 1.0
    labels = np.array([[X, B_PER, X, O, X], [X, B_LOC, X, X, X]])
    assert TokenClassification().predictions(logits, labels) == [[B_PER, O], [B_LOC]]


def gold_split(sentences: list[list[int]]) -> TokenizedSplit:
    """A split that only carries gold tags (scoring never looks at ids)."""
    lengths = [len(s) for s in sentences]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return TokenizedSplit(ids=np.zeros(0, np.int32), offsets=offsets, labels=np.zeros(0, np.int64),
                          gold=np.array([t for s in sentences for t in s], dtype=np.int64), gold_offsets=offsets)


def test_entity_scores_are_strict_iob2():
    gold = [[B_PER, I_PER, O, B_LOC], [B_ORG, I_ORG, I_ORG, O]]
    predicted = [[I_PER, I_PER, O, B_LOC], [B_ORG, I_ORG, O, O]]
    scores = get_task("token-classification").score(predicted, gold_split(gold), [0, 1], LABELS)
    # Gold entities: PER(0-1), LOC(3) in sentence 1; ORG(0-2) in sentence 2 -> 3.
    # Strict IOB2 predictions: "I-PER I-PER" does not start with B-, so it is no entity at all;
    # LOC(3) is exact; ORG(0-1) has the wrong end -> 2 predicted, 1 correct.
    # P = 1/2, R = 1/3, F1 = 2 * (1/2 * 1/3) / (1/2 + 1/3) = (1/3) / (5/6) = 0.4.
    # (Lenient conlleval rules would accept the I-PER entity: P = R = F1 = 2/3.)
    assert scores["precision"] == pytest.approx(1 / 2)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(0.4)
    report = scores["report"]
    assert report["LOC"] == {"precision": 1.0, "recall": 1.0, "f1-score": 1.0, "support": 1.0}
    assert report["PER"]["recall"] == 0.0 and report["PER"]["precision"] == 0.0
    assert report["ORG"]["f1-score"] == 0.0 and report["ORG"]["support"] == 1.0


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid tasks: token-classification, text-classification"):
        get_task("ner")
