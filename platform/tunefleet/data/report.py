"""`data_report`: what training will see, before any compute is spent.

Sizes, label counts and sub-word lengths of each split, and what truncation to max_length would cut.
The task decides what its labels' summary and its truncation counts are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .examples import SPLITS, DataError, DataSplits, Examples, resolve_task


def data_report(splits: DataSplits, tokenizer: Any, max_length: int) -> dict[str, Any]:
    """Sizes, label counts and sub-word lengths of each split: what training will see.

    Args:
        splits: from `load_data`.
        tokenizer: a fast Hugging Face tokenizer (token classification needs its word ids).
        max_length: the model's max_length; longer examples will be truncated.

    Returns:
        A JSON-serialisable dict: task, label_names, fingerprint, max_length and, under "splits", per
        split: examples, source, labels (the task's summary: count per class, entity count per type,
        or min/mean/max of scores), token_length (p50, p90, p95, p99, max sub-word tokens including
        special tokens, both texts of a pair together) and truncated_examples, plus the task's own
        truncation counts (token classification: truncated_words, the words whose tag truncation
        would cut, and truncated_entity_words, the non-O ones among them).

    Raises:
        DataError: the tokenizer is not a fast tokenizer.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("data_report needs a fast tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True))")
    task = resolve_task(splits.task)
    report: dict[str, Any] = {
        "task": splits.task,
        "label_names": list(splits.label_names),
        "fingerprint": splits.fingerprint,
        "max_length": max_length,
        "splits": {},
    }
    for name in SPLITS:
        examples: Examples = getattr(splits, name)
        lengths, cut = task.token_lengths(examples, tokenizer, max_length)
        report["splits"][name] = {
            "examples": len(examples),
            "source": splits.sources[name],
            "labels": task.label_counts(examples.labels),
            "token_length": _percentiles(lengths),
            "truncated_examples": int(sum(length > max_length for length in lengths)),
            **cut,
        }
    return report


def _percentiles(lengths: list[int]) -> dict[str, int]:
    if not lengths:
        return {"p50": 0, "p90": 0, "p95": 0, "p99": 0, "max": 0}
    values = np.asarray(lengths)
    # method="higher" reports a length some example really has: "90% fit in N tokens".
    p50, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99], method="higher")
    return {"p50": int(p50), "p90": int(p90), "p95": int(p95), "p99": int(p99), "max": int(values.max())}
