"""What a task is: everything task-specific, behind one protocol.

A task says what one example is (words, a text, a pair of texts), how its label is read from a file
and checked, which labels a data set has, how examples become token ids with aligned labels, which
transformers head (and so which loss) the model gets, how logits become predictions and metrics, and
how a raw request becomes an answer. The rest of tunefleet asks the task and never compares task
names: the data readers, the training loop, `Predictor`, the MLflow pyfunc and the Serve app all go
through the methods below.

Tasks are found by name in `tunefleet.plugins.TASKS`; `tests/contracts/test_tasks.py` runs every
registered task through read -> tokenize -> train -> evaluate -> register -> predict -> serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

# What one example is (WORDS, TEXT, PAIR, TEXT_OR_PAIR): the data stage defines it, a task picks one.
from ..data.examples import PAIR, TEXT, TEXT_OR_PAIR, WORDS  # noqa: F401 - re-exported for the tasks

if TYPE_CHECKING:
    from ..data import Examples

# Positions whose label is IGNORE contribute nothing to the loss or the metrics (PyTorch's default
# ignore_index for cross-entropy).
IGNORE = -100


@dataclass(frozen=True)
class TokenizedSplit:
    """A tokenized split stored as flat arrays, so it is cheap to cache, share through Ray's object
    store (zero-copy numpy) and slice.

    Example i owns `ids[offsets[i]:offsets[i+1]]` (and the same slice of `type_ids`, the segment ids
    of a sentence pair, when the tokenizer makes them). `labels[i]` is example i's label row: a
    class id, a float score, or a multi-hot vector. Token tasks instead align `labels` with `ids`
    (IGNORE on special tokens and non-first sub-words), and `gold[gold_offsets[i]:gold_offsets[i+1]]`
    holds the tag ids of *all* its words, so that words cut by truncation still count as missed
    entities in the metrics.
    """

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    gold: np.ndarray | None = None
    gold_offsets: np.ndarray | None = None
    type_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"ids": self.ids, "offsets": self.offsets, "labels": self.labels}
        for name in ("gold", "gold_offsets", "type_ids"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Any) -> "TokenizedSplit":
        keys = set(arrays.keys()) if hasattr(arrays, "keys") else set(arrays.files)
        optional = {name: arrays[name] if name in keys else None for name in ("gold", "gold_offsets", "type_ids")}
        return cls(ids=arrays["ids"], offsets=arrays["offsets"], labels=arrays["labels"], **optional)


class Task(Protocol):
    """Everything task-specific. Implementations: one module each in `tasks/`."""

    name: str
    inputs: str  # WORDS, TEXT, PAIR or TEXT_OR_PAIR
    model_class_name: str  # the transformers Auto class that carries this task's head
    per_token_labels: bool  # labels per sub-word (padded with IGNORE) rather than per example
    metrics: tuple[str, ...]  # what train.metric may name (besides "loss")
    default_metric: str
    minimize: frozenset[str]  # the metrics where lower is better ("loss" always)
    example_inputs: list[dict[str, str]]  # a request a served model of this task answers

    # ---- data -----------------------------------------------------------------------------------
    def parse_label(self, value: Any, where: str) -> Any:
        """One example's label as read from a file cell, JSON value or fastText tags, in the task's
        form (a class name, a float, a list of names, a list of IOB2 tags).

        Raises:
            DataError: `<where>: <problem>; <fix>`.
        """

    def finish_labels(self, labels: list[Any], scheme: str) -> list[Any]:
        """All labels of one file once read (NER converts IOB1 tags to IOB2 here)."""

    def label_names(self, labels: list[Any], origin: str) -> list[str]:
        """The label set, from the training labels, in id order.

        Raises:
            DataError: too few classes to learn anything.
        """

    def label_values(self, label: Any) -> list[str]:
        """The label names one example uses (to refuse names unseen in training)."""

    def stratify_key(self, label: Any) -> str:
        """What carving validation/test out of train keeps in proportion."""

    def label_counts(self, labels: list[Any]) -> dict[str, Any]:
        """The data report's label summary of a split."""

    def token_lengths(self, examples: "Examples", tokenizer: Any, max_length: int) -> tuple[list[int], dict[str, int]]:
        """Sub-word lengths of every example (special tokens included), and task-specific counts
        of what truncation to max_length would cut."""

    def synthetic(self, size: int, seed: int) -> tuple["Examples", "Examples", "Examples"]:
        """A small learnable demo data set of this task (train, validation, test)."""

    # ---- model ----------------------------------------------------------------------------------
    def model_config(self, label_names: list[str]) -> dict[str, Any]:
        """Config overrides that give the model this task's head and loss (num_labels, problem_type)."""

    def tokenize(self, examples: "Examples", tokenizer: Any, label_names: list[str], max_length: int) -> TokenizedSplit:
        """Token ids plus labels aligned for the loss."""

    def predictions(self, logits: np.ndarray, labels: np.ndarray) -> list[Any]:
        """Per-example predictions from one batch's logits (the batch's labels say which positions count)."""

    def score(self, predicted: list[Any], split: TokenizedSplit, indices: list[int], label_names: list[str]) -> dict[str, Any]:
        """Headline metrics plus a per-class or per-entity `report` where there is one."""

    # ---- paired comparison (the registry's promotion gate, `tracking/paired.py`) -----------------
    def gold(self, split: TokenizedSplit) -> list[Any]:
        """Every example's gold label as plain JSON, in split order (a class id, a score, a multi-hot
        row, a sentence's word tag ids): what a version keeps beside its per-example predictions."""

    def example_stats(self, predicted: list[Any], gold: list[Any], label_names: list[str]) -> np.ndarray:
        """Per-example counts, one row per example, whose column sums determine every metric in
        `metrics` (`metric_from_totals`). A bootstrap resample of the examples is then a weighted sum
        of rows, so thousands of resamples cost one matrix product instead of thousands of `score`s."""

    def metric_from_totals(self, totals: np.ndarray, metric: str, label_names: list[str]) -> np.ndarray:
        """`metric` from column sums of `example_stats`, one value per row of `totals` ([B, k]). On
        the sums over all examples it equals `score`'s value (`tests/contracts/test_tasks.py`)."""

    # ---- answers --------------------------------------------------------------------------------
    def check_input(self, item: Any, where: str) -> dict[str, str]:
        """One raw request item (a string, or an object such as {"text", "text_pair"}) as a dict.

        Raises:
            ValueError: what is wrong with the item and the shape to send instead.
        """

    def encode(self, tokenizer: Any, inputs: list[dict[str, str]], max_length: int) -> Any:
        """A padded tensor batch for the model (a transformers BatchEncoding)."""

    def answers(self, logits: np.ndarray, encoded: Any, inputs: list[dict[str, str]], label_names: list[str]) -> list[dict[str, Any]]:
        """One JSON-ready answer per input, in the shape of `output_schema`."""

    def output_schema(self) -> Any:
        """The answer columns as an MLflow `Schema` (the pyfunc's signature)."""
