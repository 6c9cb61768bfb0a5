"""The spec is validated once, at the edge: every shipped YAML loads, and every bad field is named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunefleet.spec import SpecError, load_spec, parse_duration, spec_from_dict

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))


def write(tmp_path: Path, raw: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


BASE = {"name": "t", "task": "text-classification", "data": {"format": "synthetic"}}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_spec_loads(path):
    spec = load_spec(path)
    assert spec.source == str(path)
    assert spec.search.space, "shipped specs carry a ready search space"
    for split in ("train", "validation", "test"):
        value = getattr(spec.data, split)
        assert value is None or Path(value).is_absolute()


def test_shipped_specs_cover_the_tasks():
    from tunefleet import plugins

    assert {p.stem for p in SHIPPED} >= {"demo", "conll2003", "sst2", "ag_news", "mrpc", "stsb", "topics"}
    assert {load_spec(p).task for p in SHIPPED} == set(plugins.TASKS), "every registered task has a shipped spec"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_spec_reads_its_data(path):
    """The spec's data section really reads its files (../shared/data for the real data sets): the
    right columns, a label set of the task's kind, non-empty splits."""
    from tunefleet.data import load_data

    spec = load_spec(path)
    splits = load_data(spec.data, spec.task)
    assert all(len(getattr(splits, name)) > 0 for name in ("train", "validation", "test"))
    expected_labels = {"mrpc": ["0", "1"], "stsb": ["score"], "sst2": ["0", "1"],
                       "conll2003": ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER"]}
    if path.stem in expected_labels:
        assert sorted(splits.label_names) == sorted(expected_labels[path.stem])
    if path.stem in ("mrpc", "stsb"):
        # Pairs are kept apart, never joined into one text.
        assert splits.train.text_pairs is not None and len(splits.train.text_pairs) == len(splits.train.texts)
    if path.stem == "stsb":
        assert (len(splits.train), len(splits.validation), len(splits.test)) == (5749, 1500, 1379)
        assert splits.train.texts[0] == "A plane is taking off." and splits.train.labels[0] == 5.0


def test_numbers_without_a_decimal_point_are_numbers(tmp_path):
    """YAML 1.1 reads `2e-5` as a string; a spec reads it as the number everyone means."""
    path = tmp_path / "spec.yaml"
    path.write_text("name: t\ntask: text-classification\ndata: {format: synthetic}\ntrain: {lr: 3e-5}\n"
                    "search:\n  space:\n    train.lr: {loguniform: [2e-5, 3e-4]}\n")
    spec = load_spec(path, overrides=["train.weight_decay=1e-3"])
    assert spec.train.lr == 3e-5 and spec.train.weight_decay == 1e-3
    assert spec.search.space["train.lr"] == {"loguniform": [2e-5, 3e-4]}


def test_defaults_live_in_one_place():
    spec = spec_from_dict(BASE)
    assert spec.model.name_or_path == "bundled-minilm"
    assert spec.train.lr == 5e-5 and spec.train.precision == "auto"
    assert spec.resources.workers == 1 and spec.resources.storage_path == "runs"


def test_overrides_parse_yaml_values(tmp_path):
    spec = load_spec(write(tmp_path, BASE), ["train.lr=1e-4", "train.group_by_length=false",
                                              "resources.workers=2", "search.space.train.epochs={choice: [1, 2]}"])
    assert spec.train.lr == 1e-4 and spec.train.group_by_length is False
    assert spec.resources.workers == 2
    assert spec.search.space["train.epochs"] == {"choice": [1, 2]}


def test_relative_data_paths_resolve_against_the_spec_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write(tmp_path / "sub", {**BASE, "data": {"format": "csv", "train": "../d/train.csv"}})
    assert load_spec(path).data.train == str((tmp_path / "d" / "train.csv").resolve())


@pytest.mark.parametrize("change, expected", [
    ({"task": "summarization"}, "task: unknown task 'summarization'; use one of token-classification, text-classification, text-pair-classification, text-regression, multi-label-classification"),
    ({"name": "bad name!"}, "name: name must be"),
    ({"train": {"lr": 0}}, "train.lr: Input should be greater than 0"),
    ({"train": {"lerning_rate": 1e-4}}, "train.lerning_rate: unknown field"),
    ({"train": {"metric": "bleu"}}, "train.metric: 'bleu' is not a text-classification metric"),
    ({"resources": {"workers": 0}}, "resources.workers: Input should be greater than or equal to 1"),
    ({"data": {"format": "parquet"}}, "data.format: Input should be"),
    ({"data": {"format": "csv"}}, "data: format 'csv' needs data.train"),
    ({"search": {"time_budget": "soon"}}, "search.time_budget"),
    ({"search": {"space": {"train.lr": {"loguniform": [0, 1e-3]}}}}, "search.space.train.lr.loguniform: low is 0; a log-scale range needs low > 0"),
    ({"search": {"space": {"train.lr": {"uniform": [1e-3, 1e-4]}}}}, "low 0.001 must be below high 0.0001"),
    ({"search": {"space": {"train.epochs": {"choice": []}}}}, "search.space.train.epochs.choice: needs a non-empty list"),
    ({"search": {"space": {"train.learning_rate": {"uniform": [0, 1]}}}}, "search.space.train.learning_rate: unknown spec path"),
    ({"search": {"space": {"lr": {"uniform": [0, 1]}}}}, "did you mean train.lr?"),
    ({"search": {"space": {"train.lr": {"normal": [0, 1]}}}}, "unknown distribution 'normal'"),
    ({"search": {"space": {"train.epochs": {"int": [1.5, 3]}}}}, "bounds must be whole numbers"),
    ({"search": {"algorithm": "grid", "space": {"train.lr": {"uniform": [0.1, 0.2]}}}}, "grid search needs grid or choice values"),
    ({"search": {"trial_runner": "in_trial"}, "resources": {"workers": 2}},
     "search.trial_runner: in_trial trains in the trial's own process, one worker, but resources.workers is 2"),
    ({"search": {"trial_runner": "subprocess"}}, "search.trial_runner: Input should be 'auto', 'in_trial' or 'ray_train'"),
])
def test_bad_fields_are_named_with_the_file(tmp_path, change, expected):
    raw = {**BASE, **change}
    if "data" in change:
        raw["data"] = change["data"]
    path = write(tmp_path, raw)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert expected in message
    assert message.startswith(str(path) + ": ")


def test_all_problems_are_reported_at_once(tmp_path):
    path = write(tmp_path, {**BASE, "train": {"lr": -1, "epochs": 0}, "resources": {"workers": 0}})
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert len(info.value.problems) == 3


@pytest.mark.parametrize("text, problem", [
    ("name: [unclosed", "invalid YAML"),
    ("- a list", "must be a YAML mapping"),
])
def test_unreadable_specs(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=problem):
        load_spec(path)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_malformed_override(tmp_path):
    with pytest.raises(SpecError, match="write --set dotted.key=value"):
        load_spec(write(tmp_path, BASE), ["train.lr"])


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800 and parse_duration("2h") == 7200
    assert parse_duration("15") == 15
    with pytest.raises(ValueError):
        parse_duration("two hours")
