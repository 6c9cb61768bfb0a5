"""Read a data set into three labelled splits: train, validation and test.

`load_data(spec.data, task)` is the only way data enters tunefleet. A reader per `data.format`
(`readers.py`), or the task's own synthetic demo set, turns files into `Examples`; labels are
checked against the training file; missing validation/test splits are carved out of train (seeded,
stratified); `max_*_samples` subsets are taken; and a content fingerprint is computed so later
stages can cache tokenized data safely.

Everything task-specific is asked of the task (`tasks/base.py`, the "data" methods): which fields
to read, how a label is parsed, which label names a data set has, what carving keeps in proportion.
Nothing here names a task.

Every problem is a `DataError` whose message is one line, `<file>:<line>: <problem>; <fix>`, so the
CLI can print it as is and exit with code 2.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from typing import TYPE_CHECKING

from ..spec import DataConfig
from .examples import SPLITS, DataError, DataSplits, Examples, Part, resolve_task
from .readers import check_format, read_hf, read_split

if TYPE_CHECKING:
    from ..tasks.base import Task


def load_data(data: DataConfig, task: "Task | str") -> DataSplits:
    """Read, split, subset and check a data set.

    Args:
        data: the spec's `data` section.
        task: the task object, or its name in `tunefleet.plugins.TASKS`.

    Returns:
        The train, validation and test splits with their label names, fingerprint and sources.

    Raises:
        DataError: an unknown task, a format that cannot hold the task's examples, a missing or
            malformed file, too few examples to split, too few classes, or a label in
            validation/test unseen in train.
    """
    task = resolve_task(task)
    check_format(data, task)

    if data.format == "synthetic":
        generated = generate_synthetic(task, data.synthetic_size, data.split_seed)
        parts = {
            name: Part(examples, "synthetic", f"synthetic[{name}]",
                       [f"synthetic[{name}]:{i}" for i in range(1, len(examples) + 1)])
            for name, examples in zip(SPLITS, generated)
        }
    elif data.format == "hf":
        parts = read_hf(data, task)
    else:
        parts = {name: read_split(getattr(data, name), name, data, task) for name in SPLITS if getattr(data, name)}

    train = parts["train"]
    # From the training file before carving and max_train_samples, so label ids stay put.
    label_names = task.label_names(train.examples.labels, train.origin)
    for name in ("validation", "test"):
        if name in parts:
            _check_labels_seen(parts[name], name, label_names, train.origin, task)

    parts = _carve_missing(parts, data, task)
    limits = {"train": data.max_train_samples, "validation": data.max_validation_samples,
              "test": data.max_test_samples}
    splits = {name: _subset_max(parts[name].examples, limits[name], data.split_seed) for name in SPLITS}
    return DataSplits(
        task=task.name,
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        label_names=label_names,
        fingerprint=_fingerprint(splits, label_names),
        sources={name: parts[name].source for name in SPLITS},
    )


def generate_synthetic(task: "Task | str", size: int, seed: int = 0) -> tuple[Examples, Examples, Examples]:
    """The task's synthetic demo data set (`data/synthetic.py`): no files, deterministic per seed.

    Args:
        task: the task object, or its name.
        size: total number of examples, split 70/15/15 into train/validation/test.
        seed: the same seed always gives the same examples.

    Returns:
        (train, validation, test).

    Raises:
        DataError: an unknown task or a size too small for three splits.
    """
    task = resolve_task(task)
    if size < 20:
        raise DataError(f"data.synthetic_size: {size} is too small for three splits; use at least 20")
    return task.synthetic(size, seed)


def _check_labels_seen(part: Part, split: str, label_names: list[str], train_origin: str, task: "Task") -> None:
    known = set(label_names)
    for index, label in enumerate(part.examples.labels):
        for value in task.label_values(label):
            if value not in known:
                shown = ", ".join(label_names[:20]) + (", ..." if len(label_names) > 20 else "")
                raise DataError(
                    f"{part.where(index)}: label {value!r} in the {split} split is unseen in training "
                    f"({train_origin} has {shown}); add training examples of it or drop it from {split}"
                )


# --------------------------------------------------------------------------------------------------
# Splitting and subsetting


def _carve_missing(parts: dict[str, Part], data: DataConfig, task: "Task") -> dict[str, Part]:
    """Carve missing validation/test splits out of train, seeded and stratified by the task's key."""
    parts = dict(parts)
    carved = f"split of train (seed {data.split_seed})"
    if "test" not in parts:
        parts["train"], parts["test"] = _carve(parts["train"], data.test_fraction, data.split_seed, task, carved)
    if "validation" not in parts:
        fraction = data.validation_fraction
        if parts["test"].source == carved:
            # Relative to what is left, so validation is validation_fraction of the original train.
            fraction = data.validation_fraction / (1.0 - data.test_fraction)
        parts["train"], parts["validation"] = _carve(parts["train"], fraction, data.split_seed, task, carved)
    return parts


def _carve(part: Part, fraction: float, seed: int, task: "Task", source: str) -> tuple[Part, Part]:
    from sklearn.model_selection import train_test_split  # only needed when a split is missing

    if len(part.examples) < 3:
        raise DataError(
            f"{part.origin}: only {len(part.examples)} training examples, too few to carve validation "
            f"and test splits; add data or set data.validation and data.test"
        )
    indices = list(range(len(part.examples)))
    keys = [task.stratify_key(label) for label in part.examples.labels]
    # Stratifying needs two members of every class; rare classes fall back to a plain shuffle.
    stratify = keys if min(Counter(keys).values()) >= 2 else None
    try:
        kept, held = train_test_split(indices, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:
        # The held-out share is smaller than the number of classes: stratifying cannot work.
        kept, held = train_test_split(indices, test_size=fraction, random_state=seed)
    kept, held = sorted(kept), sorted(held)
    return _take_part(part, kept, part.source), _take_part(part, held, source)


def _take(examples: Examples, indices: list[int]) -> Examples:
    def pick(values: list | None) -> list | None:
        return None if values is None else [values[i] for i in indices]

    return Examples(texts=pick(examples.texts), tokens=pick(examples.tokens), labels=pick(examples.labels),
                    text_pairs=pick(examples.text_pairs))


def _take_part(part: Part, indices: list[int], source: str) -> Part:
    return Part(_take(part.examples, indices), source, part.origin, [part.places[i] for i in indices])


def _subset_max(examples: Examples, limit: int | None, seed: int) -> Examples:
    """The first `limit` examples after a seeded shuffle, kept in file order."""
    if limit is None or limit >= len(examples):
        return examples
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return _take(examples, sorted(order[:limit]))


def _fingerprint(splits: dict[str, Examples], label_names: list[str]) -> str:
    # JSON with sorted keys and sha256, never hash(): Python salts str hashes per process.
    digest = hashlib.sha256()
    for name in SPLITS:
        examples = splits[name]
        inputs = examples.texts if examples.texts is not None else examples.tokens
        payload = {"split": name, "inputs": inputs, "labels": examples.labels}
        # Only when there are pairs, so single-text data keeps the fingerprint (and cache) it had.
        if examples.text_pairs is not None:
            payload["text_pairs"] = examples.text_pairs
        digest.update(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    digest.update(json.dumps(label_names, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def split_fingerprint(examples: Examples, label_names: list[str]) -> str:
    """One split's content (inputs, pairs, labels) with the label set: which examples per-example
    results are over. Two versions' test results are paired only when this matches."""
    payload = {"inputs": examples.texts if examples.texts is not None else examples.tokens,
               "text_pairs": examples.text_pairs, "labels": examples.labels, "label_names": label_names}
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")).hexdigest()
