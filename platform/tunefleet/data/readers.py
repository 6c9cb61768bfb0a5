"""One reader per `data.format`, turning files into `Examples` for a task.

What a reader takes from a file depends on what one example of the task is (`task.inputs`): words
with a tag each, a text, or a pair of texts. It never depends on the task's name. Each label value
is handed as read (a cell, a JSON value, the fastText tags, a folder name) to `task.parse_label`,
and a whole file's labels to `task.finish_labels`.

Formats and the inputs they can hold:

- conll: one word per line, its tag in the last column, a blank line between sentences (words);
- csv, tsv: a row per example; `data.text_columns` names one or more text columns (one text) or
  exactly two (a pair), `data.label_column` the label (texts, pairs);
- jsonl: a JSON object per line, fields named by `data.*_field` (all);
- fasttext: `__label__pos __label__new some text` per line (texts);
- folder: `<split>/<class>/*.txt`, one example per file, as IMDB ships (texts);
- hf: a Hugging Face data set, from the hub or `save_to_disk` (all).

Files must be UTF-8; every problem is a `DataError` naming `<file>:<line>`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import replace
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..spec import DataConfig
from .examples import PAIR, SPLITS, TEXT, TEXT_OR_PAIR, WORDS, DataError, Examples, Part

if TYPE_CHECKING:
    from ..tasks.base import Task

_ALL = (WORDS, TEXT, PAIR, TEXT_OR_PAIR)
# Which task inputs each format can hold. fasttext lines and class folders hold one text only, and a
# regression task takes one text as readily as a pair.
_FORMAT_INPUTS = {
    "conll": (WORDS,),
    "csv": (TEXT, PAIR, TEXT_OR_PAIR),
    "tsv": (TEXT, PAIR, TEXT_OR_PAIR),
    "jsonl": _ALL,
    "fasttext": (TEXT, TEXT_OR_PAIR),
    "folder": (TEXT, TEXT_OR_PAIR),
    "hf": _ALL,
    "synthetic": _ALL,
}
_ONE_EXAMPLE = {
    WORDS: "words with a tag each",
    TEXT: "a text and its label",
    PAIR: "a pair of texts and its label",
    TEXT_OR_PAIR: "a text (or a pair of texts) and its label",
}
# CoNLL columns and fastText words are separated by spaces or tabs only: a non-breaking space can be
# part of a token.
_BLANKS = re.compile(r"[ \t\v\f\r]+")
_FASTTEXT_LABEL = "__label__"


def check_format(data: DataConfig, task: Task) -> None:
    """Refuse, before reading anything, a format (or CSV text columns) that cannot hold the task's examples.

    Raises:
        DataError: naming data.format (or data.text_columns) and what would work.
    """
    if task.inputs not in _FORMAT_INPUTS[data.format]:
        able = [name for name, inputs in _FORMAT_INPUTS.items() if task.inputs in inputs]
        raise DataError(
            f"data.format: {data.format!r} cannot hold {task.name} examples ({_ONE_EXAMPLE[task.inputs]}); "
            f"use {', '.join(able)}"
        )
    if data.format in ("csv", "tsv"):
        count = len(data.text_columns)
        shown = "[" + ", ".join(str(c) for c in data.text_columns) + "]"
        if task.inputs == PAIR and count != 2:
            raise DataError(
                f"data.text_columns: {task.name} reads a pair of texts, so it needs exactly 2 text columns, "
                f"not {count} ({shown}); name both, e.g. data.text_columns: [sentence1, sentence2]"
            )
        if task.inputs == TEXT_OR_PAIR and count > 2:
            raise DataError(
                f"data.text_columns: {task.name} reads one text or a pair, so it takes 1 or 2 text columns, "
                f"not {count} ({shown}); name one column, or two for pairs (data.text_columns: [sentence1, sentence2])"
            )


def read_split(path: str, split: str, data: DataConfig, task: Task) -> Part:
    """One split from a file (or, for format folder, a folder of class folders).

    Raises:
        DataError: a missing, empty, non-UTF-8 or malformed file, naming `<file>:<line>`.
    """
    if data.format == "folder":
        examples, places = _read_folder(path, split, data, task)
        kind = "folder of class folders"
    else:
        text = read_text(path, split)
        parse = {"conll": _parse_conll, "csv": _parse_table, "tsv": _parse_table, "jsonl": _parse_jsonl,
                 "fasttext": _parse_fasttext}[data.format]
        examples, lines = parse(path, text, data, task)
        places = [f"{path}:{line}" for line in lines]
        kind = f"{data.format} file"
    if not len(examples):
        raise DataError(f"{path}: no examples found; check that data.{split} points at a {kind}")
    examples = replace(examples, labels=task.finish_labels(examples.labels, data.tag_scheme))
    return Part(examples, source=path, origin=path, places=places)


def read_text(path: str, split: str) -> str:
    """The file's text, decoded as UTF-8 (a byte-order mark is dropped)."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{path}: file not found; check data.{split} in the spec")
    text = _decode(file.read_bytes(), path)
    if not text.strip():
        raise DataError(f"{path}: file is empty; check data.{split} in the spec")
    return text


def _decode(raw: bytes, path: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        # Count characters, not bytes, so the column matches what an editor shows.
        column = len(raw[line_start:exc.start].decode("utf-8", errors="replace")) + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {column}); "
            f"re-save the file as UTF-8"
        ) from None


# --------------------------------------------------------------------------------------------------
# CoNLL


def _parse_conll(path: str, text: str, data: DataConfig, task: Task) -> tuple[Examples, list[int]]:
    """CoNLL columns: token first, tag last, blank line between sentences, -DOCSTART- lines skipped."""
    sentences: list[list[str]] = []
    sentence_tags: list[list[Any]] = []
    starts: list[int] = []
    words: list[str] = []
    tags: list[Any] = []
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
        columns = _BLANKS.split(stripped)
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
        if not words:
            starts.append(lineno)
        words.append(columns[0])
        # A sentence's label is its list of tags; each line's tag is parsed on its own so that a bad
        # tag is reported on its own line, not the sentence's first.
        tags.extend(task.parse_label([columns[-1]], f"{path}:{lineno}"))
    if words:
        sentences.append(words)
        sentence_tags.append(tags)
    return Examples(texts=None, tokens=sentences, labels=sentence_tags), starts


# --------------------------------------------------------------------------------------------------
# CSV / TSV


def _parse_table(path: str, text: str, data: DataConfig, task: Task) -> tuple[Examples, list[int]]:
    """CSV or TSV rows. One text: the text columns joined with a space. A pair: two columns, kept apart."""
    if data.format == "tsv":
        # SST-2, MRPC, STS-B and most TSV exports quote nothing: a `"` is part of the sentence.
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
    # check_format has made sure a pair task names two columns.
    pair = task.inputs == PAIR or (task.inputs == TEXT_OR_PAIR and len(text_idx) == 2)

    texts, pairs, labels, lines = [], [], [], []
    for lineno, row in rows[1:] if has_header else rows:
        where = f"{path}:{lineno}"
        if len(row) != width:
            raise DataError(
                f"{where}: expected {width} columns, found {len(row)}; check the delimiter and quoting on this row"
            )
        if pair:
            for column, index in zip(data.text_columns, text_idx):
                if not row[index].strip():
                    raise DataError(f"{where}: empty text in column {column!r}; fill it in or remove the row")
            texts.append(row[text_idx[0]].strip())
            pairs.append(row[text_idx[1]].strip())
        else:
            joined = " ".join(part for part in (row[i].strip() for i in text_idx) if part)
            if not joined:
                raise DataError(f"{where}: empty text; fill in the text or remove the row")
            texts.append(joined)
        # The cell as written (stripped); an empty cell is for the task to judge (no labels, or an error).
        labels.append(task.parse_label(row[label_idx].strip(), where))
        lines.append(lineno)
    return Examples(texts=texts, tokens=None, labels=labels, text_pairs=pairs if pair else None), lines


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


# --------------------------------------------------------------------------------------------------
# JSON Lines


def _parse_jsonl(path: str, text: str, data: DataConfig, task: Task) -> tuple[Examples, list[int]]:
    """One JSON object per line: tokens/tags fields for words, text (+ text_pair) and label otherwise."""
    tokens, texts, pairs, labels, lines = [], [], [], [], []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); write one JSON object per line"
            ) from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, found {type(record).__name__}")
        if task.inputs == WORDS:
            words = _check_words(_field(record, data.tokens_field, "tokens_field", where), where)
            tags = _field(record, data.tags_field, "tags_field", where)
            tokens.append(words)
            labels.append(_check_one_tag_each(words, task.parse_label(tags, where), where))
        else:
            texts.append(_text(_field(record, data.text_field, "text_field", where), data.text_field, where))
            if task.inputs == PAIR or (task.inputs == TEXT_OR_PAIR and data.text_pair_field in record):
                value = _field(record, data.text_pair_field, "text_pair_field", where)
                pairs.append(_text(value, data.text_pair_field, where))
            else:
                pairs.append(None)
            labels.append(task.parse_label(_field(record, data.label_field, "label_field", where), where))
        lines.append(lineno)
    if task.inputs == WORDS:
        return Examples(texts=None, tokens=tokens, labels=labels), lines
    return Examples(texts=texts, tokens=None, labels=labels,
                    text_pairs=_all_or_none(pairs, [f"{path}:{n}" for n in lines], data)), lines


def _field(record: dict, name: str, option: str, where: str) -> Any:
    if name not in record:
        keys = ", ".join(repr(k) for k in record) or "no fields"
        raise DataError(f"{where}: missing field {name!r} (data.{option}); the object has {keys}")
    return record[name]


def _text(value: Any, field: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: empty text in field {field!r}; fill it in or drop the line")
    return value.strip()


def _check_words(words: Any, where: str) -> list[str]:
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise DataError(f"{where}: tokens must be a list of strings such as ['EU', 'rejects']")
    if not words:
        raise DataError(f"{where}: empty token list; drop the sentence or add its tokens")
    return list(words)


def _check_one_tag_each(words: list[str], tags: list[Any], where: str) -> list[Any]:
    if len(words) != len(tags):
        raise DataError(f"{where}: {len(words)} tokens but {len(tags)} tags; every token needs exactly one tag")
    return tags


def _all_or_none(pairs: list[str | None], places: list[str], data: DataConfig) -> list[str] | None:
    """The second texts when every example has one, None when none has; a mix is refused, since a
    model is trained on pairs or on single texts, not both."""
    missing = [i for i, pair in enumerate(pairs) if pair is None]
    if len(missing) == len(pairs):
        return None
    if missing:
        first_pair = next(i for i, pair in enumerate(pairs) if pair is not None)
        raise DataError(
            f"{places[missing[0]]}: no field {data.text_pair_field!r} (data.text_pair_field) although "
            f"{places[first_pair]} has one; give every example a second text, or none"
        )
    return pairs  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# fastText


def _parse_fasttext(path: str, text: str, data: DataConfig, task: Task) -> tuple[Examples, list[int]]:
    """`__label__a __label__b words of the text`: every word starting with __label__ is a label (usually
    they come first), the other words, joined by single spaces, are the text."""
    texts, labels, lines = [], [], []
    for lineno, line in enumerate(text.split("\n"), start=1):
        words = [w for w in _BLANKS.split(line) if w]
        if not words:
            continue
        where = f"{path}:{lineno}"
        names = [w[len(_FASTTEXT_LABEL):] for w in words if w.startswith(_FASTTEXT_LABEL)]
        rest = [w for w in words if not w.startswith(_FASTTEXT_LABEL)]
        if "" in names:
            raise DataError(f"{where}: {_FASTTEXT_LABEL!r} without a name; write {_FASTTEXT_LABEL}<name>, "
                            f"e.g. {_FASTTEXT_LABEL}positive")
        if not rest:
            raise DataError(f"{where}: no text after the labels; write `{_FASTTEXT_LABEL}<name> <text>` on one line")
        texts.append(" ".join(rest))
        labels.append(task.parse_label(names, where))
        lines.append(lineno)
    return Examples(texts=texts, tokens=None, labels=labels), lines


# --------------------------------------------------------------------------------------------------
# A folder per class


def _read_folder(path: str, split: str, data: DataConfig, task: Task) -> tuple[Examples, list[str]]:
    """`<path>/<class>/*.txt`: each file one example (its whole text, stripped), labelled by its folder."""
    root = Path(path)
    if not root.is_dir():
        problem = "not a folder" if root.exists() else "folder not found"
        raise DataError(
            f"{path}: {problem}; format folder needs data.{split} to be a folder with one sub-folder of "
            f".txt files per class, e.g. train/pos/0_9.txt"
        )
    present = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if data.classes is not None:
        if not data.classes:
            raise DataError("data.classes is empty; list the class folders to read, e.g. [pos, neg], or leave it out")
        for name in data.classes:
            if name not in present:
                raise DataError(
                    f"{root / name}: no such folder for class {name!r} (data.classes); {path} has "
                    f"{', '.join(present) or 'no sub-folders'}; fix data.classes or data.{split}"
                )
        classes = list(dict.fromkeys(data.classes))
    else:
        classes = present
    if not classes:
        raise DataError(f"{path}: no class folders; put each class's .txt files in a folder named after it, "
                        f"e.g. {path}/pos/0_9.txt")

    texts, labels, places = [], [], []
    for name in classes:
        files = sorted(f for f in (root / name).glob("*.txt") if f.is_file())
        if not files:
            raise DataError(f"{root / name}: no .txt files for class {name!r}; add its examples, or leave "
                            f"the class out with data.classes")
        for file in files:
            text = _decode(file.read_bytes(), str(file)).strip()
            if not text:
                raise DataError(f"{file}: empty text; fill it in or delete the file")
            texts.append(text)
            labels.append(task.parse_label(name, str(file)))
            places.append(str(file))
    return Examples(texts=texts, tokens=None, labels=labels), places


# --------------------------------------------------------------------------------------------------
# Hugging Face datasets


def read_hf(data: DataConfig, task: Task) -> dict[str, Part]:
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


def _hf_part(table: Any, origin: str, data: DataConfig, task: Task) -> Part:
    if task.inputs == WORDS:
        options = ["tokens_field", "tags_field"]
    else:
        options = ["text_field", "label_field"]
        if task.inputs == PAIR or (task.inputs == TEXT_OR_PAIR and data.text_pair_field in table.column_names):
            options.insert(1, "text_pair_field")
    columns = {option: getattr(data, option) for option in options}
    for option, column in columns.items():
        if column not in table.column_names:
            raise DataError(
                f"{origin}: no column {column!r}; the data set has {', '.join(table.column_names)}; "
                f"set data.{option}"
            )
    label_option = "tags_field" if task.inputs == WORDS else "label_field"
    # A ClassLabel feature (or a sequence of them) stores ints; its `names` turn them back into the
    # tags and labels people wrote.
    feature = table.features[columns[label_option]]
    names = getattr(getattr(feature, "feature", feature), "names", None)

    has_pairs = "text_pair_field" in columns
    inputs_column = table[columns["tokens_field" if task.inputs == WORDS else "text_field"]]
    pair_column = table[columns["text_pair_field"]] if has_pairs else repeat(None)
    inputs, pairs, labels = [], [], []
    rows = zip(inputs_column, pair_column, table[columns[label_option]])
    for row, (value, pair, label) in enumerate(rows, start=1):
        where = f"{origin}:{row}"
        label = task.parse_label(_class_names(label, names), where)
        if task.inputs == WORDS:
            words = _check_words(value, where)
            inputs.append(words)
            labels.append(_check_one_tag_each(words, label, where))
            continue
        inputs.append(_text(value, columns["text_field"], where))
        if has_pairs:
            pairs.append(_text(pair, columns["text_pair_field"], where))
        labels.append(label)
    if not labels:
        raise DataError(f"{origin}: no examples; check data.hf_splits")
    labels = task.finish_labels(labels, data.tag_scheme)
    if task.inputs == WORDS:
        examples = Examples(texts=None, tokens=inputs, labels=labels)
    else:
        examples = Examples(texts=inputs, tokens=None, labels=labels, text_pairs=pairs if has_pairs else None)
    return Part(examples, source=origin, origin=origin, places=[f"{origin}:{i}" for i in range(1, len(labels) + 1)])


def _class_names(value: Any, names: list[str] | None) -> Any:
    # Only valid ids are names: -1 (GLUE's "no label" in test splits) stays -1 for the task to refuse.
    def name(item: Any) -> Any:
        valid = names and isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(names)
        return names[item] if valid else item

    return [name(item) for item in value] if isinstance(value, list) else name(value)
