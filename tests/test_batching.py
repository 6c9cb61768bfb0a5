"""Tests for tunefleet.train.batching: sharding across workers, length grouping, per-epoch shuffling,
seeded determinism, and padding in collate."""

from __future__ import annotations

import numpy as np
import pytest

from tunefleet.train.batching import collate, eval_batches, train_batches
from tunefleet.tasks import IGNORE, TokenizedSplit

PAD = 0


def make_split(lengths: list[int], token_labels: bool = True) -> TokenizedSplit:
    """Example i is `lengths[i]` tokens, ids 1000*i+1, 1000*i+2, ... so every token is traceable."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.concatenate([1000 * i + np.arange(1, n + 1) for i, n in enumerate(lengths)]).astype(np.int32)
    labels = (ids % 7).astype(np.int64) if token_labels else np.arange(len(lengths), dtype=np.int64) % 3
    return TokenizedSplit(ids=ids, offsets=offsets, labels=labels)


@pytest.fixture(scope="module")
def split() -> TokenizedSplit:
    # Long-tailed lengths like CoNLL sentences: mostly short, some long.
    rng = np.random.default_rng(0)
    return make_split(np.clip(rng.lognormal(3.0, 0.7, size=1003).astype(int), 3, 128).tolist())


def batches(split, world=1, rank=0, epoch=0, seed=0, group=True, batch_size=16):
    return train_batches(split, batch_size, seed, epoch, rank, world, group)


def padded_tokens(split: TokenizedSplit, batch_list: list[np.ndarray]) -> int:
    lengths = split.lengths()
    return int(sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batch_list))


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("world", [2, 3])
def test_shards_are_disjoint_equal_in_steps_and_cover_the_data(split, world, group):
    shards = [batches(split, world, rank, group=group) for rank in range(world)]
    # 1003 examples / 16 = 63 batches (the last one short); cut to a multiple of the world size.
    usable = (63 // world) * world
    assert [len(s) for s in shards] == [usable // world] * world
    seen = [np.concatenate(s) for s in shards]
    everything = np.concatenate(seen)
    assert len(everything) == len(set(everything.tolist())), "a example is in two shards"
    # At most the dropped batches are missing: (63 - usable) batches of at most 16 examples.
    assert len(everything) >= len(split) - (63 - usable) * 16
    assert all(set(s.tolist()).isdisjoint(t.tolist()) for i, s in enumerate(seen) for t in seen[i + 1:])


def test_one_worker_sees_every_example_once_per_epoch(split):
    for group in (True, False):
        everything = np.concatenate(batches(split, group=group))
        assert sorted(everything.tolist()) == list(range(len(split)))


def test_fewer_batches_than_workers_is_refused_not_uneven():
    # Three batches for four workers: some workers would run no step and DDP would hang.
    with pytest.raises(ValueError, match="resources.workers"):
        train_batches(make_split([5] * 40), 16, 0, 0, 0, 4, True)


def test_length_grouping_pads_much_less_than_random_batches(split):
    grouped = padded_tokens(split, batches(split, group=True))
    shuffled = padded_tokens(split, batches(split, group=False))
    real = int(split.lengths().sum())
    assert grouped < shuffled / 4, (grouped, shuffled, real)


def test_every_epoch_has_a_different_order_and_grouped_batches_too(split):
    for group in (True, False):
        first, second = batches(split, epoch=0, group=group), batches(split, epoch=1, group=group)
        assert [b.tolist() for b in first] != [b.tolist() for b in second]
    # Grouping sorts only within windows and shuffles the batch order, so batch 0 is not always the longest.
    first_lengths = [split.lengths()[batches(split, epoch=e)[0]].max() for e in range(5)]
    assert len(set(first_lengths)) > 1


def test_same_seed_same_batches_other_seed_other_batches(split):
    for group in (True, False):
        again = [b.tolist() for b in batches(split, world=2, rank=1, epoch=3, seed=7, group=group)]
        assert [b.tolist() for b in batches(split, world=2, rank=1, epoch=3, seed=7, group=group)] == again
        assert [b.tolist() for b in batches(split, world=2, rank=1, epoch=3, seed=8, group=group)] != again


def test_eval_batches_cover_each_example_once_across_ranks_sorted_by_length(split):
    shards = [eval_batches(split, 32, rank, 3) for rank in range(3)]
    everything = np.concatenate([np.concatenate(s) for s in shards])
    assert sorted(everything.tolist()) == list(range(len(split)))
    lengths = split.lengths()
    for shard in shards:
        flat = lengths[np.concatenate(shard)]
        assert (np.diff(flat) >= 0).all()


def test_eval_batches_fill_a_token_budget_but_never_go_below_the_batch_size():
    # Example i has lengths[i] tokens. Sorted: 1,1,1,1 | 2,2 | 3,8. With 2 examples at least and 6 padded
    # tokens at most: four 1-token examples fit (4 x 1 <= 6, a fifth would pad to 5 x 2 = 10); two 2-token
    # ones (a third would make 3 x 3 = 9); the last two pad to 2 x 8 = 16 > 6 but a batch is never
    # smaller than batch_size.
    split = make_split([8, 1, 2, 1, 3, 1, 2, 1])
    batches = eval_batches(split, 2, 0, 1, max_tokens=6)
    assert [split.lengths()[b].tolist() for b in batches] == [[1, 1, 1, 1], [2, 2], [3, 8]]
    assert [b.tolist() for b in batches] == [[1, 3, 5, 7], [2, 6], [4, 0]]
    # Without a budget: fixed batches of batch_size, as before.
    assert [b.tolist() for b in eval_batches(split, 2, 0, 1)] == [[1, 3], [5, 7], [2, 6], [4, 0]]


def test_collate_pads_token_labels_with_ignore_and_masks_padding():
    split = make_split([3, 5, 2])
    batch = collate(split, np.array([2, 0, 1]), pad_id=PAD, token_labels=True)
    assert batch["input_ids"].tolist() == [
        [2001, 2002, PAD, PAD, PAD],
        [1, 2, 3, PAD, PAD],
        [1001, 1002, 1003, 1004, 1005],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    i = IGNORE
    assert batch["labels"].tolist() == [
        [2001 % 7, 2002 % 7, i, i, i],
        [1, 2, 3, i, i],
        [1001 % 7, 1002 % 7, 1003 % 7, 1004 % 7, 1005 % 7],
    ]
    assert all(t.dtype.is_floating_point is False for t in batch.values())


def test_collate_gives_one_label_per_example_for_classification():
    split = make_split([4, 2, 6], token_labels=False)
    batch = collate(split, np.array([1, 2]), pad_id=99, token_labels=False)
    assert batch["input_ids"].shape == (2, 6)
    assert batch["input_ids"][0].tolist() == [1001, 1002, 99, 99, 99, 99]
    assert batch["attention_mask"].sum(1).tolist() == [2, 6]
    assert batch["labels"].tolist() == [1, 2]


def test_an_average_batch_of_a_token_task_holds_the_split_s_labelled_tokens_per_example_times_the_batch_size():
    from tunefleet.train.batching import expected_targets

    # Three examples of 3, 3 and 6 tokens; [CLS], [SEP] and the second pieces of words are IGNORE,
    # which leaves 1, 1 and 4 labelled tokens: 2 per example, 8 in a batch of 4.
    labels = np.array([IGNORE, 1, IGNORE, IGNORE, 2, IGNORE, IGNORE, 0, 0, IGNORE, 0, 1], dtype=np.int64)
    split = TokenizedSplit(ids=np.arange(12, dtype=np.int32), offsets=np.array([0, 3, 6, 12]), labels=labels)
    assert expected_targets(split, 4) == 8.0
