"""Packed batches for token tasks: a batch's sentences share rows, each attending only to itself.

A batch of random sentences padded to its longest wastes most of its compute on padding (60% on
CoNLL-2003 at batch 16), which is why the loop groups sentences of similar length. But grouped
batches hold one kind of sentence each (sixteen one-word headlines, sixteen long ones), and on a
CoNLL-2003 subset that cost about half a point of entity F1 against random batches
(benchmarks/RESULTS.md, "One configuration over seeds"). Packing keeps the random batch and removes
the padding instead: the batch's sentences are laid end to end in rows as wide as the longest of
them or somewhat wider, whichever costs the least work (`layout`; first fit, longest first), each
with its own position ids counting from the start, and a block-diagonal attention mask that lets
a token see only the tokens of its own sentence. Every sentence then goes through the encoder
exactly as it would alone, padded: a token-level head and its loss see the same numbers (to fp32
rounding), so a packed batch trains the model as the same batch padded would, at about the cost of
a length-grouped one.

Only a per-token head can be packed this way (a sentence-level head pools the row's first token),
and only a model whose positions come from `position_ids` and whose attention takes a 4-D mask as
given. Rather than list the families that do, `packing_check` runs the model on a few of the
split's sentences packed and alone and compares (the loop does, at the start of every run): BERT,
DistilBERT, ELECTRA, RoBERTa and XLM-R pass (tests/test_families.py); a model that does not (DeBERTa,
whose relative positions and mask are built over the whole row) trains on padded batches as before.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..tasks import IGNORE, TokenizedSplit


# What one key position of a token's attention costs, as a share of what the token's linear layers
# cost. Per layer a MiniLM token's products are 4 x 384^2 + 2 x 384 x 1,536 multiply-adds and its
# attention 2 x 384 per key position it sees (scores and weighted values: 0.04%), but the attention's
# batched products, softmax and masks run far slower per multiply-add: in a profile of packed fp32
# steps on the AVX2 EPYC (benchmarks/RESULTS.md) the linear layers took 74% of the step and the
# attention about 4.5% at rows of ~50 positions, i.e. 0.0012 of a token's linear cost per key.
ATTENTION_PER_KEY = 0.0012


def rows_of(lengths: np.ndarray, width: int | None = None) -> list[list[int]]:
    """Positions (into `lengths`) of the sentences in each row: first fit, longest first, rows of
    `width` token slots (default: the longest sentence's length)."""
    width = int(lengths.max()) if width is None else width
    rows: list[list[int]] = []
    room: list[int] = []
    for j in np.argsort(-lengths, kind="stable"):
        n = int(lengths[j])
        for r, free in enumerate(room):
            if free >= n:
                rows[r].append(int(j))
                room[r] -= n
                break
        else:
            rows.append([int(j)])
            room.append(width - n)
    return rows


def layout(lengths: np.ndarray, attention_per_key: float = ATTENTION_PER_KEY) -> tuple[list[list[int]], int]:
    """The rows (as `rows_of`) and the row width that cost the least to train on.

    Rows as wide as the longest sentence leave the tail of nearly every row empty: 10.6% of the token
    slots over random batches of 16 CoNLL-2003 sentences, and every linear layer computes them. A
    somewhat wider row fits more sentences and wastes less (1.4% at the best width up to twice the
    longest), but a token's attention spans the whole row, so it costs more per slot. A width's cost
    is its slots times (1 + `attention_per_key` x width); the cheapest between the longest sentence
    and twice it wins (about 2% of slots padded, rows 1.23x as wide, 6.7% less of the two works
    together on those batches). `attention_per_key=inf` keeps rows as wide as the longest sentence.
    """
    longest, total = int(lengths.max()), int(lengths.sum())
    best_rows, best_width = rows_of(lengths, longest), longest
    best_cost = len(best_rows) * longest * (1 + attention_per_key * longest)
    for width in range(longest + 1, 2 * longest + 1):
        per_slot = 1 + attention_per_key * width
        if -(-total // width) * width * per_slot >= best_cost:  # not even full rows would be cheaper
            continue
        rows = rows_of(lengths, width)
        cost = len(rows) * width * per_slot
        if cost < best_cost:
            best_rows, best_width, best_cost = rows, width, cost
    return best_rows, best_width


def pack(split: TokenizedSplit, indices: np.ndarray, pad_id: int, position_offset: int = 0) -> dict[str, torch.Tensor]:
    """One packed batch of a token task's examples `indices`.

    Returns input_ids, position_ids (each sentence's from `position_offset` on), labels (IGNORE on
    padding) of shape (rows, width), and attention_mask of shape (rows, 1, width, width), True
    where a query token may attend to a key token: within one sentence, and a padding position to
    itself (a row with nothing to attend to would make NaNs that the backward pass spreads).
    """
    lengths = split.offsets[indices + 1] - split.offsets[indices]
    rows, width = layout(lengths)
    return _lay_out(split, [[int(indices[j]) for j in row] for row in rows], width, pad_id, position_offset)


def _lay_out(split: TokenizedSplit, rows: list[list[int]], width: int, pad_id: int,
             position_offset: int) -> dict[str, torch.Tensor]:
    """The batch of `rows` (example indices, end to end in each row, padded to `width`)."""
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    positions = np.zeros((len(rows), width), dtype=np.int64)
    labels = np.full((len(rows), width), IGNORE, dtype=np.int64)
    sentence = np.zeros((len(rows), width), dtype=np.int64)  # 1, 2, ... per sentence of a row; 0 padding
    for r, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row, start=1):
            start, end = split.offsets[i], split.offsets[i + 1]
            n = int(end - start)
            input_ids[r, at:at + n] = split.ids[start:end]
            labels[r, at:at + n] = split.labels[start:end]
            positions[r, at:at + n] = np.arange(position_offset, position_offset + n)
            sentence[r, at:at + n] = k
            at += n
    same = torch.from_numpy(sentence)
    mask = (same[:, :, None] == same[:, None, :]) & (same[:, None, :] > 0)
    mask |= torch.eye(width, dtype=torch.bool)
    return {"input_ids": torch.from_numpy(input_ids), "position_ids": torch.from_numpy(positions),
            "attention_mask": mask[:, None], "labels": torch.from_numpy(labels)}


def position_offset(model: nn.Module) -> int:
    """Where the model's positions start: RoBERTa-style embeddings (those with a `padding_idx` of
    their own) count from padding_idx + 1, the rest from 0."""
    for module in model.modules():
        if type(module).__name__.endswith("Embeddings") and isinstance(getattr(module, "padding_idx", None), int):
            return module.padding_idx + 1
    return 0


def packing_check(model: nn.Module, split: TokenizedSplit, pad_id: int, tolerance: float = 1e-4) -> str | None:
    """None if the model gives packed sentences what it gives them alone, else why not.

    Runs the model (in evaluation, fp32, no gradients; its training mode is put back) on two of the
    split's sentences of different lengths laid end to end in one row with a padding position after
    them, as `pack` lays them out, and on each alone. Cheap: three short forward passes, once per run.
    """
    lengths = split.lengths()
    _, first = np.unique(lengths, return_index=True)  # the first sentence of each length
    pair = [int(i) for i in first[:2]] if len(first) >= 2 else list(range(min(2, len(split))))
    if len(pair) < 2:
        return "fewer than two training examples"
    offset = position_offset(model)
    batch = _lay_out(split, [pair], int(lengths[pair].sum()) + 1, pad_id, offset)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed = model(**{k: v.to(device) for k, v in batch.items() if k != "labels"}).logits.float()[0]
            worst, at = 0.0, 0
            for i in pair:
                ids = torch.from_numpy(split.ids[split.offsets[i]:split.offsets[i + 1]].astype(np.int64))
                alone = model(input_ids=ids[None].to(device)).logits.float()[0]
                scale = max(1.0, float(alone.abs().max()))
                worst = max(worst, float((packed[at:at + len(ids)] - alone).abs().max()) / scale)
                at += len(ids)
    except Exception as error:  # a model whose forward does not take these inputs
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    finally:
        model.train(was_training)
    if worst > tolerance:
        return f"packed sentences came out {worst:.1e} away from the same sentences alone"
    return None
