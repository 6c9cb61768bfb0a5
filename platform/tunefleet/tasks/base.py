"""What every task (text classification, NER) provides to the training loop.

A task turns examples into token ids with aligned labels, builds the right model head, turns logits
into predictions and scores them. It is deliberately small: the loop, the search and the registry know
nothing else about a task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

# Positions whose label is IGNORE contribute nothing to the loss or the metrics (PyTorch's default
# ignore_index for cross-entropy).
IGNORE = -100


@dataclass(frozen=True)
class TokenizedSplit:
    """A tokenized split stored as flat arrays, so it is cheap to cache, share through Ray's object
    store (zero-copy numpy) and slice.

    Example i owns `ids[offsets[i]:offsets[i+1]]`. Classification: `labels[i]` is its class id.
    NER: `labels` is aligned with `ids` (IGNORE on special tokens and non-first sub-words), and
    `gold[gold_offsets[i]:gold_offsets[i+1]]` holds the tag ids of *all* its words, so that words cut
    by truncation still count as missed entities in the metrics.
    """

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    gold: np.ndarray | None = None
    gold_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"ids": self.ids, "offsets": self.offsets, "labels": self.labels}
        if self.gold is not None:
            arrays |= {"gold": self.gold, "gold_offsets": self.gold_offsets}
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Any) -> "TokenizedSplit":
        keys = set(arrays.keys()) if hasattr(arrays, "keys") else set(arrays.files)
        return cls(
            ids=arrays["ids"],
            offsets=arrays["offsets"],
            labels=arrays["labels"],
            gold=arrays["gold"] if "gold" in keys else None,
            gold_offsets=arrays["gold_offsets"] if "gold_offsets" in keys else None,
        )


class Task(Protocol):
    """The four things the loop needs from a task."""

    name: str
    model_class_name: str  # the transformers Auto class that carries this task's head

    def tokenize(self, examples: Any, tokenizer: Any, label_names: list[str], max_length: int) -> TokenizedSplit:
        """Token ids plus labels aligned for the loss."""

    def predictions(self, logits: np.ndarray, labels: np.ndarray) -> list[Any]:
        """Per-example predicted label ids from one batch's logits (the batch's labels say which
        positions count)."""

    def score(self, predicted: list[Any], split: TokenizedSplit, indices: list[int], label_names: list[str]) -> dict[str, Any]:
        """Headline metrics plus a per-class or per-entity `report`."""
