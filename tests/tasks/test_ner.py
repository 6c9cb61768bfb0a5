"""Tests for tunefleet.tasks.ner: sub-word label alignment on hand-checked tokenizations, truncation
that keeps the gold tags of cut words, and seqeval strict IOB2 scoring against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from tunefleet.data import Examples
from tunefleet.tasks import IGNORE, TokenizedSplit, get_task
from tunefleet.tasks.ner import TokenClassification, align_labels

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
    with pytest.raises(ValueError, match="use one of token-classification, text-classification"):
        get_task("ner")


# --------------------------------------------------------------------------------------------------
# Answers on raw text: entity spans with character offsets, worked out by hand


def entity(kind: str, start: int, end: int, text: str, score: float) -> dict:
    return {"type": kind, "start": start, "end": end, "text": text, "score": pytest.approx(score, abs=1e-6)}


def test_spans_merge_iob2_word_tags_into_entities():
    from tunefleet.tasks.ner import spans_from_tags

    text = "Ann Lee met Bob in New York"
    words = [(0, 3, "B-PER", 0.9), (4, 7, "I-PER", 0.7), (8, 11, "O", 0.99), (12, 15, "B-PER", 0.8),
             (16, 18, "O", 0.9), (19, 22, "B-LOC", 0.6), (23, 27, "I-LOC", 0.8)]
    # A span runs from its first word's start to its last word's end; its score is the mean of its
    # words' probabilities.
    assert spans_from_tags(text, words) == [
        entity("PER", 0, 7, "Ann Lee", 0.8), entity("PER", 12, 15, "Bob", 0.8), entity("LOC", 19, 27, "New York", 0.7)]


def test_spans_start_a_new_entity_at_b_and_at_an_i_that_continues_nothing():
    from tunefleet.tasks.ner import spans_from_tags

    text = "Paris Rome Acme Corp Bob"
    words = [(0, 5, "I-LOC", 0.5),    # I- with nothing open: starts LOC, not dropped
             (6, 10, "B-LOC", 0.7),   # B- after LOC: a second LOC, not a longer one
             (11, 15, "I-ORG", 0.4),  # I- of another type: closes LOC, starts ORG
             (16, 20, "I-ORG", 0.6),  # continues ORG
             (21, 24, "I-PER", 0.9)]
    assert spans_from_tags(text, words) == [
        entity("LOC", 0, 5, "Paris", 0.5), entity("LOC", 6, 10, "Rome", 0.7), entity("ORG", 11, 20, "Acme Corp", 0.5),
        entity("PER", 21, 24, "Bob", 0.9)]
    assert spans_from_tags("a b", [(0, 1, "O", 0.9), (2, 3, "O", 0.9)]) == []
    assert spans_from_tags("", []) == []


# The hand-built model (conftest.lexicon_ner_checkpoint) tags these word pieces; every other piece is
# O, and every tag wins with probability 3/4.
LEXICON = {"john": "B-PER", "smith": "I-PER", "ko": "B-PER", "muller": "B-PER", "##kel": "B-ORG",
           "google": "B-ORG", "washington": "B-LOC", "zurich": "B-LOC", "london": "I-LOC"}


@pytest.fixture(scope="module")
def lexicon_predictor(tmp_path_factory):
    from conftest import lexicon_ner_checkpoint
    from tunefleet.train.predict import Predictor

    return Predictor(lexicon_ner_checkpoint(tmp_path_factory.mktemp("lexicon-ner") / "ckpt", LABELS, LEXICON))


# (text, entities) with offsets counted by hand: characters of the input, not bytes or tokens.
HAND_WORKED = [
    # Runs of spaces and a tab inside an entity stay inside its span; "." splits off "Berlin." (O).
    ("John   Smith\tworks for Google in Berlin.",
     [entity("PER", 0, 12, "John   Smith", 0.75), entity("ORG", 23, 29, "Google", 0.75)]),
    # ko ##wal ##cz ##yk is one word: the span covers all four pieces. The pre-tokenizer splits
    # "Washington's" into washington ' s, three words: the entity ends before the apostrophe.
    ("Kowalczyk visited Washington's office",
     [entity("PER", 0, 9, "Kowalczyk", 0.75), entity("LOC", 18, 28, "Washington", 0.75)]),
    # "Merkel" is mer ##kel: its first piece is O, so the word is O whatever ##kel says. The
    # uncased tokenizer reads "Müller" as muller, but offsets still count the text's own characters.
    ("Angela Merkel met Müller in Zürich .",
     [entity("PER", 18, 24, "Müller", 0.75), entity("LOC", 28, 34, "Zürich", 0.75)]),
    # smith is I-PER: the first starts an entity, the second continues it; london (I-LOC) after an
    # ORG starts a LOC.
    ("smith Smith Google London",
     [entity("PER", 0, 11, "smith Smith", 0.75), entity("ORG", 12, 18, "Google", 0.75),
      entity("LOC", 19, 25, "London", 0.75)]),
    ("nothing to see here", []),
    ("", []),
]


def test_predictor_answers_hand_worked_spans(lexicon_predictor):
    texts = [text for text, _ in HAND_WORKED]
    assert lexicon_predictor.predict(texts) == [{"entities": entities} for _, entities in HAND_WORKED]
    # One at a time (no padding) gives the same answers as the padded batch.
    assert [lexicon_predictor.predict([text])[0] for text in texts] == [{"entities": e} for _, e in HAND_WORKED]


def test_a_word_the_tokenizer_drops_is_refused_not_misaligned():
    """The bundled tokenizer turns a zero-width space into nothing: word 2 would have no prediction,
    and every later word's prediction would be scored against the previous word's gold tag."""
    from tunefleet.data import DataError, Examples
    from tunefleet.train.models import load_tokenizer

    tokenizer = load_tokenizer("bundled-minilm")
    examples = Examples(texts=None, tokens=[["John", "lives"], ["John", "\u200b", "lives"]],
                        labels=[["B-PER", "O"], ["B-PER", "O", "O"]])
    with pytest.raises(DataError) as info:
        TokenClassification().tokenize(examples, tokenizer, ["O", "B-PER", "I-PER"], max_length=32)
    assert "sentence 2, word 2 ('\\u200b')" in str(info.value) and "no tokens" in str(info.value)
