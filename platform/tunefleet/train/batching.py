"""Batches for the training loop: length-grouped, sharded across workers, padded per batch.

Padding every sentence to max_length wastes most of the compute on CoNLL-style data (median ~25
sub-words against a max_length of 128). Two things remove that waste:
- dynamic padding: a batch is padded to its own longest example, not to max_length;
- length grouping: examples of similar length go into the same batch. Pure sorting would make every
  epoch identical, so the data is shuffled, cut into "mega-batches" of `_MEGA` batches, and sorted
  only within each; the batch order is then shuffled again.

Grouped, the batches of a token task differ widely in labelled tokens (on CoNLL-2003, a batch of
sixteen one-word headlines next to one of sixteen long sentences), so the loop weighs each batch's
mean loss by its labelled tokens over `expected_targets` rather than counting every batch alike.
"""

from __future__ import annotations

import numpy as np
import torch

from ..tasks import IGNORE, TokenizedSplit

_MEGA = 50  # batches per sorted window: large enough to group well, small enough to stay random


def train_batches(split: TokenizedSplit, batch_size: int, seed: int, epoch: int, rank: int,
                  world_size: int, group_by_length: bool) -> list[np.ndarray]:
    """This worker's batches (arrays of example indices) for one epoch.

    Every worker builds the same global batch list from the same seed, then takes every
    `world_size`-th batch, so workers see disjoint shards. The list is cut to a multiple of
    `world_size` so that each worker runs the same number of steps (DDP's all-reduce needs every
    worker at every step).

    Raises:
        ValueError: fewer batches than workers (some worker would have no step at all).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(split))
    if group_by_length:
        lengths = split.lengths()
        window = batch_size * _MEGA
        order = np.concatenate([
            chunk[np.argsort(-lengths[chunk], kind="stable")]
            for chunk in np.array_split(order, max(1, int(np.ceil(len(order) / window))))
        ])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    usable = (len(batches) // world_size) * world_size
    if usable == 0:
        raise ValueError(
            f"the training split has {len(split)} examples, {len(batches)} batch(es) of {batch_size}: fewer "
            f"than the {world_size} workers; lower train.batch_size or resources.workers"
        )
    return batches[rank:usable:world_size]


def expected_targets(split: TokenizedSplit, batch_size: int) -> float:
    """Labelled tokens in an average full batch of a token task's split: the split's labelled tokens
    per example times the batch size. The same on every worker, so DDP's average of the workers'
    gradients weighs every token alike too."""
    return float((split.labels != IGNORE).sum()) / len(split) * batch_size


def eval_batches(split: TokenizedSplit, batch_size: int, rank: int, world_size: int,
                 max_tokens: int = 0) -> list[np.ndarray]:
    """This worker's evaluation batches: every `world_size`-th example, sorted by length (no
    shuffling needed, and sorted batches pad least).

    With `max_tokens` (the loop uses it on a GPU), a batch holds at least `batch_size` examples and as
    many more as fit in `max_tokens` padded tokens: evaluation keeps no activations for a backward
    pass, so short sentences can go in batches of hundreds. Sorted, a batch's last example is its
    longest.
    """
    mine = np.arange(rank, len(split), world_size)
    lengths = split.lengths()[mine]
    order = np.argsort(lengths, kind="stable")
    mine, lengths = mine[order], lengths[order]
    batches, start = [], 0
    while start < len(mine):
        end = min(len(mine), start + batch_size)
        while max_tokens and end < len(mine) and (end + 1 - start) * int(lengths[end]) <= max_tokens:
            end += 1
        batches.append(mine[start:end])
        start = end
    return batches


def collate(split: TokenizedSplit, indices: np.ndarray, pad_id: int, token_labels: bool) -> dict[str, torch.Tensor]:
    """Pad one batch to its longest example.

    Returns input_ids, attention_mask, labels (per token, padded with IGNORE, when `token_labels`;
    else the examples' label rows: class ids, scores or multi-hot vectors) and, for sentence pairs
    on models that have them, token_type_ids (padded with 0).
    """
    starts, ends = split.offsets[indices], split.offsets[indices + 1]
    width = int((ends - starts).max())
    input_ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.int64)
    type_ids = np.zeros((len(indices), width), dtype=np.int64) if split.type_ids is not None else None
    labels = np.full((len(indices), width), IGNORE, dtype=np.int64) if token_labels else split.labels[indices]
    for row, (start, end) in enumerate(zip(starts, ends)):
        n = end - start
        input_ids[row, :n] = split.ids[start:end]
        mask[row, :n] = 1
        if type_ids is not None:
            type_ids[row, :n] = split.type_ids[start:end]
        if token_labels:
            labels[row, :n] = split.labels[start:end]
    batch = {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(np.ascontiguousarray(labels)),
    }
    if type_ids is not None:
        batch["token_type_ids"] = torch.from_numpy(type_ids)
    return batch
