"""What the data stage hands on: examples, splits, the one error type, and the task they are read for.

Shared by the readers, the synthetic generators, `load_data` and `data_report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import plugins

if TYPE_CHECKING:
    from ..tasks.base import Task

SPLITS = ("train", "validation", "test")

# What one example is (a task's `inputs`), which tells the readers which fields to read:
WORDS = "words"  # a list of words with a tag each (CoNLL); Examples.tokens
TEXT = "text"  # one text; Examples.texts
PAIR = "pair"  # two texts, kept apart (the model sees [CLS] a [SEP] b [SEP]); texts + text_pairs
TEXT_OR_PAIR = "text-or-pair"  # one text, or a pair when two text columns are given


class DataError(ValueError):
    """Data that cannot be used. The message is one line: `<file>:<line>: <problem>; <fix>`."""

    def __init__(self, message: str):
        # The CLI prints the message as one line; a value quoted from a file must not break it.
        super().__init__(" ".join(message.split()))


@dataclass(frozen=True)
class Examples:
    """One split. Which fields are set depends on the task's inputs (`Task.inputs`):

    - words (token classification): `tokens[i]` is a list of words, `texts` is None;
    - a text: `texts[i]` is a str, `tokens` and `text_pairs` are None;
    - a pair of texts: `texts[i]` and `text_pairs[i]`, kept apart.

    `labels[i]` is in the task's own form: a class name, a float score, a list of label names, or a
    list of IOB2 tags (one per word).
    """

    texts: list[str] | None
    tokens: list[list[str]] | None
    labels: list
    text_pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DataSplits:
    """The three splits of one data set, ready for a task to tokenize."""

    task: str  # the task's name, as `plugins.TASKS` knows it
    train: Examples
    validation: Examples
    test: Examples
    # From the training labels, in id order (the task decides: sorted classes, "O" then B-/I- tags, ...).
    label_names: list[str]
    # sha256 of the three splits' content and label_names: a cache key that is stable across processes.
    fingerprint: str
    # split -> where it came from: a path, "split of train (seed 0)", "synthetic" or "hf:<name>[<split>]".
    sources: dict[str, str]


@dataclass(frozen=True)
class Part:
    """One split as read, remembering where each example came from so later checks can name it."""

    examples: Examples
    source: str  # what DataSplits.sources shows
    origin: str  # the file, folder or hf:<name>[<split>] that messages about the whole split name
    places: list[str]  # per example: `<file>:<line>` (row number for hf; the .txt file for a folder)

    def where(self, index: int) -> str:
        return self.places[index]


def resolve_task(task: "Task | str") -> "Task":
    """A task object; a name is looked up in the plug-in registry.

    Raises:
        DataError: an unknown or empty name, listing the valid ones.
    """
    if not isinstance(task, str):
        return task
    try:
        return plugins.load("task", task)()
    except plugins.UnknownPlugin:
        shown = "task is empty" if not task else f"task {task!r} is not supported"
        raise DataError(f"{shown}; use one of {', '.join(plugins.TASKS)}") from None
