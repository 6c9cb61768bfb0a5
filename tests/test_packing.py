"""Tests for tunefleet.train.packing: how a token task's batch is laid out in shared rows, and the
check that decides whether a model may train on such rows."""

from __future__ import annotations

import numpy as np
import pytest

from test_batching import PAD, make_split
from tunefleet.tasks import IGNORE
from tunefleet.train.packing import layout, pack, packing_check, position_offset, rows_of


def test_rows_take_the_longest_sentences_first_each_into_the_first_row_with_room():
    # Width 5 (the longest). 5 fills row 0; 4 opens row 1 (1 left); 3 does not fit there and opens
    # row 2 (2 left); 2 fits row 2 exactly; 1 goes to row 1, the first with room.
    assert rows_of(np.array([5, 3, 2, 4, 1])) == [[0], [3, 4], [1, 2]]
    assert rows_of(np.array([2, 2, 2, 2])) == [[0], [1], [2], [3]]  # as long as the widest: never shared
    assert rows_of(np.array([2, 2, 2, 2]), width=4) == [[0, 1], [2, 3]]
    assert rows_of(np.array([7])) == [[0]]


def test_the_row_width_is_the_cheapest_between_the_longest_sentence_and_twice_it():
    """Lengths 5, 4, 3, 3, 1 (16 tokens). Width 5: rows [5], [4, 1], [3], [3], 20 slots; width 6:
    [5, 1], [4], [3, 3], 18 slots; width 8: [5, 3], [4, 3, 1], 16 slots, none wasted; 7, 9 and 10
    cannot beat that (at least 21, 18, 20 slots). A slot costs 1 + attention_per_key x width."""
    lengths = np.array([5, 4, 3, 3, 1])
    # At the loop's cost of attention (0.0012 a key): 20 x 1.006 = 20.1, 18 x 1.0072 = 18.1, 16 x 1.0096 = 16.2.
    assert layout(lengths) == ([[0, 2], [1, 3, 4]], 8)
    # Attention dear (0.2 a key): 20 x 2.0 = 40, 18 x 2.2 = 39.6, 16 x 2.6 = 41.6, so width 6.
    assert layout(lengths, attention_per_key=0.2) == ([[0, 4], [1], [2, 3]], 6)
    # Attention dearer still: rows as wide as the longest sentence, as before widths were chosen.
    assert layout(lengths, attention_per_key=1.0) == ([[0], [1, 4], [2], [3]], 5)
    # Rows as wide as the longest are full already: any wider row would add padding.
    assert layout(np.array([3, 3, 3])) == ([[0], [1], [2]], 3)


def test_a_packed_batch_lays_its_sentences_end_to_end_each_with_its_own_positions_and_attention():
    split = make_split([4, 2, 3])  # example i's ids: 1000*i+1, 1000*i+2, ...
    batch = pack(split, np.array([0, 1, 2]), PAD, position_offset=2)
    # Width 5 (two rows, 10 slots, against three rows of the longest's 4): row 0 holds example 0 and
    # one padding position; row 1 example 2, then example 1.
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, PAD], [2001, 2002, 2003, 1001, 1002]]
    assert batch["position_ids"].tolist() == [[2, 3, 4, 5, 0], [2, 3, 4, 2, 3]]
    labels = split.labels
    assert batch["labels"].tolist() == [labels[0:4].tolist() + [IGNORE], labels[6:9].tolist() + labels[4:6].tolist()]
    mask = batch["attention_mask"]
    assert mask.shape == (2, 1, 5, 5)
    # Row 0: example 0's four tokens see each other and not the padding, which sees itself.
    assert mask[0, 0].int().tolist() == [[1, 1, 1, 1, 0]] * 4 + [[0, 0, 0, 0, 1]]
    # Row 1: tokens 0-2 (example 2) see each other, tokens 3-4 (example 1) each other.
    assert mask[1, 0].int().tolist() == [[1, 1, 1, 0, 0]] * 3 + [[0, 0, 0, 1, 1]] * 2


def test_the_check_passes_a_model_that_gives_packed_sentences_what_it_gives_them_alone_and_refuses_one_that_does_not(
        tiny_model, monkeypatch):
    """The tiny BERT passes; the same model told that its positions start at 3 (each packed sentence
    then gets position embeddings it does not get alone) is refused, with the size of the gap."""
    import torch
    from transformers import BertForTokenClassification

    import tunefleet.train.packing as packing

    torch.manual_seed(0)
    model = BertForTokenClassification.from_pretrained(tiny_model, num_labels=3)
    split = make_split([3, 5, 3, 6])  # ids up to 3006, inside the tiny model's vocabulary
    model.train()
    assert position_offset(model) == 0
    assert packing_check(model, split, PAD) is None
    assert model.training  # put back as it was

    monkeypatch.setattr(packing, "position_offset", lambda model: 3)
    why_not = packing_check(model, split, PAD)
    assert why_not is not None and "away from the same sentences alone" in why_not


def test_roberta_style_positions_start_after_the_padding_id():
    from transformers import RobertaConfig, RobertaForTokenClassification

    config = RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=40, pad_token_id=1)
    assert position_offset(RobertaForTokenClassification(config)) == 2  # RoBERTa's own: padding_idx + 1


def test_the_check_needs_two_sentences():
    assert packing_check(None, make_split([3]), PAD) == "fewer than two training examples"  # type: ignore[arg-type]


@pytest.mark.parametrize("lengths", [[3, 3, 3], [5, 1, 1, 1, 1, 1]])
def test_every_token_of_the_batch_is_laid_out_once(lengths):
    split = make_split(lengths)
    batch = pack(split, np.arange(len(lengths)), PAD)
    ids = batch["input_ids"].flatten().tolist()
    assert sorted(i for i in ids if i != PAD) == sorted(split.ids.tolist())
