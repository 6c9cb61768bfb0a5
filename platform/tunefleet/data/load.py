"""Read a data set into three labelled splits: train, validation and test.

`load_data(spec.data, spec.task)` is the only way data enters tunefleet. A reader per `data.format`
(CoNLL, CSV/TSV, JSON Lines, Hugging Face datasets, or the synthetic demo set tunefleet generates
itself) turns files into `Examples`; missing validation/test splits are carved out of train (seeded,
stratified); `max_*_samples` subsets are taken; labels are checked against the training file; and a
content fingerprint is computed so later stages can cache tokenized data safely.

Every problem is a `DataError` whose message is one line, `<file>:<line>: <problem>; <fix>`, so the
CLI can print it as is and exit with code 2.

`data_report(splits, tokenizer, max_length)` summarises the splits (sizes, label counts, sub-word
lengths, what truncation would cut) before any GPU time is spent.

Within tunefleet this module imports only `tunefleet.spec`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..spec import TASKS, DataConfig

NER = "token-classification"
CLASSIFICATION = "text-classification"
SPLITS = ("train", "validation", "test")

# Which tasks each file format can hold; jsonl, hf and synthetic carry either.
_FORMAT_TASKS = {
    "conll": (NER,),
    "csv": (CLASSIFICATION,),
    "tsv": (CLASSIFICATION,),
    "jsonl": TASKS,
    "hf": TASKS,
    "synthetic": TASKS,
}
_TAG = re.compile(r"O|[BI]-\S+")
# CoNLL columns are separated by spaces or tabs only: a non-breaking space can be part of a token.
_COLUMN_SEP = re.compile(r"[ \t]+")


class DataError(ValueError):
    """Data that cannot be used. The message is one line: `<file>:<line>: <problem>; <fix>`."""

    def __init__(self, message: str):
        # The CLI prints the message as one line; a value quoted from a file must not break it.
        super().__init__(" ".join(message.split()))


@dataclass(frozen=True)
class Examples:
    """One split.

    Classification: `texts[i]` is a str and `tokens` is None. NER: `tokens[i]` is a list of words and
    `texts` is None. `labels[i]` is a str label (classification) or a list of IOB2 tags, one per word (NER).
    """

    texts: list[str] | None
    tokens: list[list[str]] | None
    labels: list

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DataSplits:
    """The three splits of one data set, ready for a task to tokenize."""

    task: str
    train: Examples
    validation: Examples
    test: Examples
    # Classification: sorted training labels. NER: "O", then B-/I- tags of every entity type in train.
    label_names: list[str]
    # sha256 of the three splits' content and label_names: a cache key that is stable across processes.
    fingerprint: str
    # split -> where it came from: a path, "split of train (seed 0)", "synthetic" or "hf:<name>[<split>]".
    sources: dict[str, str]


@dataclass(frozen=True)
class _Part:
    """One split as read, remembering where each example came from so later checks can name file:line."""

    examples: Examples
    source: str  # what DataSplits.sources shows
    origin: str  # the file (or hf:<name>[<split>]) that error messages name
    lines: list[int]  # per example: its line in the file (row number for hf)

    def where(self, index: int) -> str:
        return f"{self.origin}:{self.lines[index]}"


# --------------------------------------------------------------------------------------------------
# Entry point


def load_data(data: DataConfig, task: str) -> DataSplits:
    """Read, split, subset and check a data set.

    Args:
        data: the spec's `data` section.
        task: "token-classification" or "text-classification".

    Returns:
        The train, validation and test splits with their label names, fingerprint and sources.

    Raises:
        DataError: an unknown task, a format that cannot hold the task, a missing or malformed file,
            too few examples to split, a single class, or a label in validation/test unseen in train.
    """
    _check_task(task)
    if task not in _FORMAT_TASKS[data.format]:
        raise DataError(
            f"data.format: '{data.format}' files hold {' or '.join(_FORMAT_TASKS[data.format])} data, "
            f"not {task}; use format jsonl or hf for {task}"
        )

    if data.format == "synthetic":
        generated = generate_synthetic(task, data.synthetic_size, data.split_seed)
        parts = {
            name: _Part(examples, "synthetic", f"synthetic[{name}]", list(range(1, len(examples) + 1)))
            for name, examples in zip(SPLITS, generated)
        }
    elif data.format == "hf":
        parts = _read_hf(data, task)
    else:
        parts = {}
        for name in SPLITS:
            path = getattr(data, name)
            if path:
                parts[name] = _read_file(path, name, data, task)

    train_file = parts["train"]
    label_names = _label_names(train_file, task)
    for name in ("validation", "test"):
        if name in parts:
            _check_labels_seen(parts[name], name, label_names, train_file.origin)

    parts = _carve_missing(parts, data, task)
    limits = {"train": data.max_train_samples, "validation": data.max_validation_samples,
              "test": data.max_test_samples}
    splits = {name: _subset_max(parts[name].examples, limits[name], data.split_seed) for name in SPLITS}
    return DataSplits(
        task=task,
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        label_names=label_names,
        fingerprint=_fingerprint(splits, label_names),
        sources={name: parts[name].source for name in SPLITS},
    )


def _check_task(task: str) -> None:
    if task not in TASKS:
        shown = "task is empty" if not task else f"task {task!r} is not supported"
        raise DataError(f"{shown}; use one of {', '.join(TASKS)}")


# --------------------------------------------------------------------------------------------------
# File readers


def _read_file(path: str, split: str, data: DataConfig, task: str) -> _Part:
    text = _read_text(path, split)
    if data.format == "conll":
        tokens, tags, lines = _parse_conll(path, text)
        tags = _to_scheme(tags, data.tag_scheme)
        examples = Examples(texts=None, tokens=tokens, labels=tags)
    elif data.format in ("csv", "tsv"):
        texts, labels, lines = _parse_table(path, text, data)
        examples = Examples(texts=texts, tokens=None, labels=labels)
    else:
        examples, lines = _parse_jsonl(path, text, data, task)
    if not len(examples):
        raise DataError(f"{path}: no examples found; check that data.{split} points at a {data.format} file")
    return _Part(examples, source=path, origin=path, lines=lines)


def _read_text(path: str, split: str) -> str:
    """The file's text, decoded as UTF-8 (a byte-order mark is dropped)."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{path}: file not found; check data.{split} in the spec")
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        # Count characters, not bytes, so the column matches what an editor shows.
        column = len(raw[line_start:exc.start].decode("utf-8", errors="replace")) + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {column}); "
            f"re-save the file as UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"{path}: file is empty; check data.{split} in the spec")
    return text


def _parse_conll(path: str, text: str) -> tuple[list[list[str]], list[list[str]], list[int]]:
    """CoNLL columns: token first, tag last, blank line between sentences, -DOCSTART- lines skipped."""
    sentences: list[list[str]] = []
    sentence_tags: list[list[str]] = []
    starts: list[int] = []
    words: list[str] = []
    tags: list[str] = []
    width, width_line = None, 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip(" \t\r")
        # A -DOCSTART- line marks a document boundary, not a sentence.
        if not stripped or stripped.startswith("-DOCSTART-"):
            if words:
                sentences.append(words)
                sentence_tags.append(tags)
                words, tags = [], []
            continue
        columns = _COLUMN_SEP.split(stripped)
        if len(columns) < 2:
            raise DataError(
                f"{path}:{lineno}: expected at least 2 columns (token ... tag), found 1; "
                f"put the tag after the token, separated by a space or tab"
            )
        if width is None:
            width, width_line = len(columns), lineno
        elif len(columns) != width:
            raise DataError(
                f"{path}:{lineno}: expected {width} columns like line {width_line}, found {len(columns)}; "
                f"every line of a CoNLL file needs the same columns"
            )
        tag = columns[-1]
        if not _TAG.fullmatch(tag):
            raise DataError(
                f"{path}:{lineno}: tag {tag!r} is not O or B-TYPE/I-TYPE; the tag must be the last column"
            )
        if not words:
            starts.append(lineno)
        words.append(columns[0])
        tags.append(tag)
    if words:
        sentences.append(words)
        sentence_tags.append(tags)
    return sentences, sentence_tags, starts


def _parse_table(path: str, text: str, data: DataConfig) -> tuple[list[str], list[str], list[int]]:
    """CSV or TSV rows -> (texts, labels, line numbers); several text columns are joined with a space."""
    if data.format == "tsv":
        # SST-2 and most TSV exports quote nothing: a `"` is part of the sentence.
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
    rows = _rows_with_lines(path, reader)
    if not rows:
        raise DataError(f"{path}: no rows found; check the file and data.format")

    first = rows[0][1]
    has_header = _has_header(data, first, rows, text)
    names = [c for c in (*data.text_columns, data.label_column) if isinstance(c, str)]
    if data.header == "auto" and names and not has_header:
        missing = ", ".join(f"{name!r} (data.{'label_column' if name == data.label_column else 'text_columns'})"
                            for name in names if name not in first)
        raise DataError(
            f"{path}:1: column {missing} not in the first row ({', '.join(repr(c) for c in first)}); "
            f"name columns from the header row, or use 0-based numbers with data.header: false"
        )
    header = first if has_header else None
    width = len(first)
    text_idx = [_column_index(path, c, header, width, "text_columns") for c in data.text_columns]
    label_idx = _column_index(path, data.label_column, header, width, "label_column")

    texts, labels, lines = [], [], []
    for lineno, row in rows[1:] if has_header else rows:
        if len(row) != width:
            raise DataError(
                f"{path}:{lineno}: expected {width} columns, found {len(row)}; "
                f"check the delimiter and quoting on this row"
            )
        joined = " ".join(part for part in (row[i].strip() for i in text_idx) if part)
        if not joined:
            raise DataError(f"{path}:{lineno}: empty text; fill in the text or remove the row")
        label = row[label_idx].strip()
        if not label:
            raise DataError(f"{path}:{lineno}: empty label; fill in the label or remove the row")
        texts.append(joined)
        labels.append(label)
        lines.append(lineno)
    return texts, labels, lines


def _rows_with_lines(path: str, reader: Any) -> list[tuple[int, list[str]]]:
    """Non-blank rows with the line each starts on (a quoted field may span several lines)."""
    rows = []
    end = 0
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if row and any(cell.strip() for cell in row):
                rows.append((start, row))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: {exc}; check the quoting on this row") from None
    return rows


def _has_header(data: DataConfig, first: list[str], rows: list[tuple[int, list[str]]], text: str) -> bool:
    """Whether the first row names columns.

    `header: auto` decides so: if any configured column is a name, there is a header exactly when every
    configured name appears in the first row. With integer columns only, the first row is a header
    when its label cell never occurs as a label further down and `csv.Sniffer` agrees (or cannot tell).
    """
    if isinstance(data.header, bool):
        return data.header
    columns = [*data.text_columns, data.label_column]
    names = [c for c in columns if isinstance(c, str)]
    if names:
        return all(name in first for name in names)
    label = data.label_column
    if label >= len(first):
        return False
    later = {row[label].strip() for _, row in rows[1:1001] if label < len(row)}
    if first[label].strip() in later:
        return False  # "0"/"1" as in the rows below: data, not a column name
    try:
        return csv.Sniffer().has_header(text[:20000])
    except csv.Error:
        return True


def _column_index(path: str, column: str | int, header: list[str] | None, width: int, field: str) -> int:
    if isinstance(column, str):
        if header is None:
            raise DataError(
                f"{path}: data.{field} names column {column!r} but the file has no header row; "
                f"use a 0-based column number or set data.header: true"
            )
        if column not in header:
            shown = ", ".join(repr(name) for name in header)
            raise DataError(
                f"{path}:1: column {column!r} (data.{field}) is not in the header; use one of {shown}"
            )
        return header.index(column)
    if not 0 <= column < width:
        raise DataError(
            f"{path}: data.{field} column {column} is out of range; rows have {width} columns (0 to {width - 1})"
        )
    return column


def _parse_jsonl(path: str, text: str, data: DataConfig, task: str) -> tuple[Examples, list[int]]:
    """One JSON object per line: tokens/tags fields for NER, text/label fields for classification."""
    inputs, labels, lines = [], [], []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                f"write one JSON object per line"
            ) from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, found {type(record).__name__}")
        where = f"{path}:{lineno}"
        if task == NER:
            words = _field(record, data.tokens_field, "tokens_field", where)
            tags = _field(record, data.tags_field, "tags_field", where)
            inputs.append(_check_sentence(words, tags, where))
            labels.append(list(tags))
        else:
            text_value = _field(record, data.text_field, "text_field", where)
            if not isinstance(text_value, str) or not text_value.strip():
                raise DataError(f"{where}: empty text in field {data.text_field!r}; fill it in or drop the line")
            inputs.append(text_value.strip())
            labels.append(_label_text(_field(record, data.label_field, "label_field", where), where))
        lines.append(lineno)
    if task == NER:
        return Examples(texts=None, tokens=inputs, labels=_to_scheme(labels, data.tag_scheme)), lines
    return Examples(texts=inputs, tokens=None, labels=labels), lines


def _field(record: dict, name: str, option: str, where: str) -> Any:
    if name not in record:
        keys = ", ".join(repr(k) for k in record) or "no fields"
        raise DataError(f"{where}: missing field {name!r} (data.{option}); the object has {keys}")
    return record[name]


def _check_sentence(words: Any, tags: Any, where: str) -> list[str]:
    """A sentence's words, checked against its tags: non-empty strings, one tag per word, valid tags."""
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise DataError(f"{where}: tokens must be a list of strings")
    if not words:
        raise DataError(f"{where}: empty token list; drop the sentence or add its tokens")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DataError(f"{where}: tags must be a list of strings such as ['B-PER', 'O']")
    if len(words) != len(tags):
        raise DataError(f"{where}: {len(words)} tokens but {len(tags)} tags; every token needs exactly one tag")
    for tag in tags:
        if not _TAG.fullmatch(tag):
            raise DataError(f"{where}: tag {tag!r} is not O or B-TYPE/I-TYPE")
    return list(words)


def _label_text(value: Any, where: str) -> str:
    # Integer labels (0/1) become strings so every reader yields the same label type.
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise DataError(f"{where}: label {value!r} is not a non-empty string or integer; write e.g. \"positive\" or 1")
    return str(value).strip()


# --------------------------------------------------------------------------------------------------
# Hugging Face datasets


def _read_hf(data: DataConfig, task: str) -> dict[str, _Part]:
    """A hub data set, or a local folder written with `save_to_disk`; splits named by data.hf_splits."""
    import datasets  # heavy; only this reader needs it

    name = data.hf_name
    try:
        if Path(name).exists():
            loaded = datasets.load_from_disk(name)
        else:
            loaded = datasets.load_dataset(name, data.hf_config)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the same problem for the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"hf:{name}: could not load ({reason}); check data.hf_name and data.hf_config") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({data.hf_splits.get("train", "train"): loaded})

    parts = {}
    for split in SPLITS:
        hf_split = data.hf_splits.get(split)
        if hf_split and hf_split in loaded:
            parts[split] = _hf_part(loaded[hf_split], f"hf:{name}[{hf_split}]", data, task)
    if "train" not in parts:
        raise DataError(
            f"hf:{name}: no training split {data.hf_splits.get('train')!r}; the data set has "
            f"{', '.join(loaded)}; set data.hf_splits.train"
        )
    return parts


def _hf_part(table: Any, origin: str, data: DataConfig, task: str) -> _Part:
    options = ("tokens_field", "tags_field") if task == NER else ("text_field", "label_field")
    columns = tuple(getattr(data, option) for option in options)
    for column, option in zip(columns, options):
        if column not in table.column_names:
            raise DataError(
                f"{origin}: no column {column!r}; the data set has {', '.join(table.column_names)}; "
                f"set data.{option}"
            )
    inputs_column, labels_column = table[columns[0]], table[columns[1]]
    # A ClassLabel feature stores ints; its `names` turn them back into the tags/labels people wrote.
    feature = table.features[columns[1]]
    names = getattr(getattr(feature, "feature", feature), "names", None)

    inputs, labels = [], []
    for row, (value, label) in enumerate(zip(inputs_column, labels_column), start=1):
        where = f"{origin}:{row}"
        if task == NER:
            tags = [names[t] if names and isinstance(t, int) else t for t in (label or [])]
            inputs.append(_check_sentence(value, tags, where))
            labels.append(tags)
        else:
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: empty text in column {columns[0]!r}; fill it in or filter the row out")
            inputs.append(value.strip())
            labels.append(_label_text(names[label] if names and isinstance(label, int) else label, where))
    if not labels:
        raise DataError(f"{origin}: no examples; check data.hf_splits")
    if task == NER:
        examples = Examples(texts=None, tokens=inputs, labels=_to_scheme(labels, data.tag_scheme))
    else:
        examples = Examples(texts=inputs, tokens=None, labels=labels)
    return _Part(examples, source=origin, origin=origin, lines=list(range(1, len(labels) + 1)))


# --------------------------------------------------------------------------------------------------
# Tags and labels


def _entity_types(tags: list[str]) -> Iterator[str]:
    """The type of every entity in a sentence, in order; an I- tag that continues nothing starts one."""
    previous = "O"
    for tag in tags:
        if tag.startswith("B-") or (tag.startswith("I-") and previous[2:] != tag[2:]):
            yield tag[2:]
        previous = tag


def _to_scheme(sentences: list[list[str]], scheme: str) -> list[list[str]]:
    """Tags as IOB2. IOB1 starts an entity with I- (B- only between two adjacent same-type entities)."""
    if scheme == "iob2":
        return sentences
    if scheme == "auto" and not any(_starts_with_inside(tags) for tags in sentences):
        return sentences
    return [_iob1_to_iob2(tags) for tags in sentences]


def _starts_with_inside(tags: list[str]) -> bool:
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return True
        previous = tag
    return False


def _iob1_to_iob2(tags: list[str]) -> list[str]:
    converted = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        converted.append(tag)
        previous = tag
    return converted


def _label_names(train: _Part, task: str) -> list[str]:
    """Label names from the training file (before carving and max_train_samples, so they stay put)."""
    if task == NER:
        types = {kind for tags in train.examples.labels for kind in _entity_types(tags)}
        # Both B- and I- of every type seen: a type whose training entities are all one word still
        # has multi-word entities elsewhere, and the model needs an I- label for them.
        return ["O", *sorted(f"{prefix}-{kind}" for kind in types for prefix in "BI")]
    labels = sorted(set(train.examples.labels))
    if len(labels) < 2:
        raise DataError(
            f"{train.origin}: text-classification needs at least 2 classes; the training data only has "
            f"{labels[0]!r}; check data.label_column"
        )
    return labels


def _check_labels_seen(part: _Part, split: str, label_names: list[str], train_origin: str) -> None:
    known = set(label_names)
    for index, label in enumerate(part.examples.labels):
        for value in label if isinstance(label, list) else [label]:
            if value not in known:
                shown = ", ".join(label_names[:20]) + (", ..." if len(label_names) > 20 else "")
                raise DataError(
                    f"{part.where(index)}: label {value!r} in the {split} split is unseen in training "
                    f"({train_origin} has {shown}); add training examples of it or drop it from {split}"
                )


# --------------------------------------------------------------------------------------------------
# Splitting and subsetting


def _carve_missing(parts: dict[str, _Part], data: DataConfig, task: str) -> dict[str, _Part]:
    """Carve missing validation/test splits out of train, seeded and stratified by label."""
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


def _carve(part: _Part, fraction: float, seed: int, task: str, source: str) -> tuple[_Part, _Part]:
    from sklearn.model_selection import train_test_split  # only needed when a split is missing

    if len(part.examples) < 3:
        raise DataError(
            f"{part.origin}: only {len(part.examples)} training examples, too few to carve validation "
            f"and test splits; add data or set data.validation and data.test"
        )
    indices = list(range(len(part.examples)))
    keys = [_stratify_key(label, task) for label in part.examples.labels]
    # Stratifying needs two members of every class; rare classes fall back to a plain shuffle.
    stratify = keys if min(Counter(keys).values()) >= 2 else None
    try:
        kept, held = train_test_split(indices, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:
        # The held-out share is smaller than the number of classes: stratifying cannot work.
        kept, held = train_test_split(indices, test_size=fraction, random_state=seed)
    kept, held = sorted(kept), sorted(held)
    return _take_part(part, kept, part.source), _take_part(part, held, source)


def _stratify_key(label: str | list[str], task: str) -> str:
    """Classification: the label. NER: the sentence's most frequent entity type, or "O" if none."""
    if task == CLASSIFICATION:
        return label
    counts = Counter(_entity_types(label))
    return min(counts, key=lambda kind: (-counts[kind], kind)) if counts else "O"


def _take(examples: Examples, indices: list[int]) -> Examples:
    return Examples(
        texts=None if examples.texts is None else [examples.texts[i] for i in indices],
        tokens=None if examples.tokens is None else [examples.tokens[i] for i in indices],
        labels=[examples.labels[i] for i in indices],
    )


def _take_part(part: _Part, indices: list[int], source: str) -> _Part:
    return _Part(_take(part.examples, indices), source, part.origin, [part.lines[i] for i in indices])


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
        digest.update(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    digest.update(json.dumps(label_names, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Synthetic demo data

_PRODUCTS = ("blender", "laptop", "pair of headphones", "coffee maker", "backpack", "phone case",
             "desk lamp", "kettle", "keyboard", "vacuum", "tent", "office chair")
_GOOD = ("great", "excellent", "sturdy", "reliable", "comfortable", "quiet", "fast", "lovely",
         "well made", "worth the money", "easy to use", "solid")
_BAD = ("terrible", "flimsy", "noisy", "slow", "disappointing", "cheap", "broken", "awful",
        "overpriced", "uncomfortable", "hard to use", "fragile")
# Said of the delivery, not the product: sentiment words that must not decide the label.
_DELIVERY = ("quick", "late", "on time", "slow", "fast", "delayed")
_FILLERS = ("honestly", "after two weeks", "for the price", "out of the box", "so far", "overall",
            "to be fair", "in my experience", "at first glance", "compared to my old one")
# The last templates need context: negation flips an adjective and "but" overrides the first clause.
_REVIEW_TEMPLATES = (
    "{filler} the {product} is {adj} .",
    "the {product} is {adj} {filler} .",
    "i bought this {product} and it feels {adj} .",
    "{filler} , my new {product} is {adj} and the delivery was {delivery} .",
    "the {product} is not {opposite} .",
    "i expected it to be {opposite} but the {product} is {adj} .",
)
_LABEL_NOISE = 0.07  # a few flipped labels, so a perfect score on the demo data means overfitting

# "Jordan" and "Washington" are both people and places: the tagger has to read the context.
_NAMES = {
    "PER": ("Anna Schmidt", "Rahul Mehta", "Maria Garcia", "John Smith", "Yuki Tanaka", "Olu Adeyemi",
            "Pierre Dubois", "Jordan", "Washington", "Li Wei"),
    "LOC": ("Berlin", "New York", "Lagos", "Tokyo", "Buenos Aires", "Lyon", "Cape Town", "Oslo",
            "Jordan", "Washington"),
    "ORG": ("Acme Corp", "Globex", "United Nations", "Initech", "Red Cross", "Stark Industries",
            "Umbrella Group", "Tyrell", "World Bank"),
}
_NEWS_TEMPLATES = (
    "{PER} flew to {LOC} on Monday .",
    "{PER} joined {ORG} last year .",
    "{ORG} opened a new office in {LOC} .",
    "{PER} met {PER} at the {ORG} headquarters in {LOC} .",
    "Shares of {ORG} rose after {PER} spoke in {LOC} .",
    "The weather in {LOC} was mild this week .",
    "According to {ORG} , the deal is off .",
    "{PER} said the trip to {LOC} was worth it .",
    "Nothing unusual happened on Tuesday .",
    "Talks between {ORG} and {ORG} ended without a deal .",
)


def generate_synthetic(task: str, size: int, seed: int = 0) -> tuple[Examples, Examples, Examples]:
    """The synthetic demo data set tunefleet generates itself: no files, deterministic per seed.

    Text classification: short product reviews from templates, labelled "negative"/"positive", with
    filler words, negations and contrasts, and about 7% flipped labels so it is learnable but not
    perfectly. Token classification: news-like template sentences naming people, places and
    organisations (PER/LOC/ORG, IOB2 tags).

    Args:
        task: "token-classification" or "text-classification".
        size: total number of examples, split 70/15/15 into train/validation/test.
        seed: the same seed always gives the same examples.

    Returns:
        (train, validation, test).

    Raises:
        DataError: an unknown task or a size too small for three splits.
    """
    _check_task(task)
    if size < 20:
        raise DataError(f"data.synthetic_size: {size} is too small for three splits; use at least 20")
    rng = random.Random(seed)
    if task == CLASSIFICATION:
        # Balanced classes, shuffled, so every split holds both.
        sentiments = [i % 2 == 1 for i in range(size)]
        rng.shuffle(sentiments)
        texts, labels = [], []
        for positive in sentiments:
            texts.append(_review(rng, positive))
            noisy = positive != (rng.random() < _LABEL_NOISE)
            labels.append("positive" if noisy else "negative")
        inputs: list = texts
    else:
        inputs, labels = [], []
        for _ in range(size):
            words, tags = _news_sentence(rng)
            inputs.append(words)
            labels.append(tags)

    n_train, n_validation = round(size * 0.70), round(size * 0.15)
    bounds = ((0, n_train), (n_train, n_train + n_validation), (n_train + n_validation, size))
    return tuple(  # type: ignore[return-value]
        Examples(
            texts=inputs[a:b] if task == CLASSIFICATION else None,
            tokens=inputs[a:b] if task == NER else None,
            labels=labels[a:b],
        )
        for a, b in bounds
    )


def _review(rng: random.Random, positive: bool) -> str:
    same, other = (_GOOD, _BAD) if positive else (_BAD, _GOOD)
    sentence = rng.choice(_REVIEW_TEMPLATES).format(
        filler=rng.choice(_FILLERS),
        product=rng.choice(_PRODUCTS),
        adj=rng.choice(same),
        opposite=rng.choice(other),
        delivery=rng.choice(_DELIVERY),
    )
    return " ".join(sentence.split())


def _news_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    words, tags = [], []
    for word in rng.choice(_NEWS_TEMPLATES).split():
        kind = word[1:-1] if word.startswith("{") else None
        if kind is None:
            words.append(word)
            tags.append("O")
            continue
        name = rng.choice(_NAMES[kind]).split()
        words.extend(name)
        tags.extend([f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1))
    return words, tags


# --------------------------------------------------------------------------------------------------
# Report


def data_report(splits: DataSplits, tokenizer: Any, max_length: int) -> dict[str, Any]:
    """Sizes, label counts and sub-word lengths of each split: what training will see.

    Args:
        splits: from `load_data`.
        tokenizer: a fast Hugging Face tokenizer (NER needs its word ids).
        max_length: the model's max_length; longer examples will be truncated.

    Returns:
        A JSON-serialisable dict: task, label_names, fingerprint, max_length and, under "splits", per
        split: examples, source, labels (classification: count per label; NER: entity count per type),
        token_length (p50, p90, p95, p99, max sub-word tokens including special tokens) and
        truncated_examples; NER adds truncated_words (words whose tag truncation would cut) and
        truncated_entity_words (the non-O ones among them).

    Raises:
        DataError: the tokenizer is not a fast tokenizer.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("data_report needs a fast tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True))")
    report: dict[str, Any] = {
        "task": splits.task,
        "label_names": list(splits.label_names),
        "fingerprint": splits.fingerprint,
        "max_length": max_length,
        "splits": {},
    }
    for name in SPLITS:
        examples: Examples = getattr(splits, name)
        entry: dict[str, Any] = {"examples": len(examples), "source": splits.sources[name]}
        if splits.task == NER:
            counts = Counter(kind for tags in examples.labels for kind in _entity_types(tags))
            lengths, cut_words, cut_entities = _ner_lengths(examples, tokenizer, max_length)
        else:
            counts = Counter(examples.labels)
            lengths, cut_words, cut_entities = _text_lengths(examples, tokenizer), 0, 0
        entry["labels"] = dict(sorted(counts.items()))
        entry["token_length"] = _percentiles(lengths)
        entry["truncated_examples"] = int(sum(length > max_length for length in lengths))
        if splits.task == NER:
            entry["truncated_words"] = cut_words
            entry["truncated_entity_words"] = cut_entities
        report["splits"][name] = entry
    return report


_BATCH = 1000  # fast tokenizers parallelise within a batch; 1000 keeps memory small


def _text_lengths(examples: Examples, tokenizer: Any) -> list[int]:
    lengths = []
    for start in range(0, len(examples), _BATCH):
        # verbose=False: lengths beyond the model maximum are what we are measuring, not a mistake.
        encoded = tokenizer(examples.texts[start:start + _BATCH], truncation=False, verbose=False)
        lengths.extend(len(ids) for ids in encoded["input_ids"])
    return lengths


def _ner_lengths(examples: Examples, tokenizer: Any, max_length: int) -> tuple[list[int], int, int]:
    """Token lengths, and how many words (and entity words) truncation to max_length would cut."""
    # Truncation drops content tokens and keeps the special ones, so this many content tokens survive.
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    lengths, cut_words, cut_entities = [], 0, 0
    for start in range(0, len(examples), _BATCH):
        batch = examples.tokens[start:start + _BATCH]
        encoded = tokenizer(batch, is_split_into_words=True, truncation=False, verbose=False)
        for offset, ids in enumerate(encoded["input_ids"]):
            lengths.append(len(ids))
            if len(ids) <= max_length:
                continue
            tags = examples.labels[start + offset]
            # A word is cut when its first sub-word token lies beyond the budget: its tag is lost.
            content = [w for w in encoded.word_ids(offset) if w is not None]
            first_token = {}
            for position, word in enumerate(content):
                first_token.setdefault(word, position)
            cut = [word for word, position in first_token.items() if position >= budget]
            cut_words += len(cut)
            cut_entities += sum(tags[word] != "O" for word in cut)
    return lengths, cut_words, cut_entities


def _percentiles(lengths: list[int]) -> dict[str, int]:
    if not lengths:
        return {"p50": 0, "p90": 0, "p95": 0, "p99": 0, "max": 0}
    values = np.asarray(lengths)
    # method="higher" reports a length some example really has: "90% fit in N tokens".
    p50, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99], method="higher")
    return {"p50": int(p50), "p90": int(p90), "p95": int(p95), "p99": int(p99), "max": int(values.max())}
