"""Tests for the `tunefleet` command: a real `train` on a tiny synthetic spec ends with the JSON
summary; bad input (spec, data, resources) ends with exit code 2 and one line naming the file and
field, before any Ray work; `data check` prints its JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunefleet import cli
from tunefleet.search import single
from tunefleet.train import launch
from tunefleet.train.checkpoint import read_meta

ROOT = Path(__file__).resolve().parents[1]


def write_spec(folder: Path, tiny_model: str, **sections: Any) -> Path:
    spec: dict[str, Any] = {
        "name": "cli-tiny",
        "task": "text-classification",
        "data": {"format": "synthetic", "synthetic_size": 60},
        "model": {"name_or_path": tiny_model, "max_length": 32},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1.0e-3, "metric": "accuracy"},
        "resources": {"workers": 1, "cpus_per_worker": 1, "storage_path": str(folder / "runs"), "max_failures": 0},
        "tracking": {"enabled": False},
    }
    for section, values in sections.items():
        spec[section] = {**spec[section], **values} if isinstance(values, dict) else values
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("tunefleet: error:")]


@pytest.fixture
def no_ray_work(monkeypatch):
    """Fail the test if the command gets as far as starting Ray or building a trainer."""
    import ray

    def forbidden(*args, **kwargs):
        raise AssertionError("Ray work started before the input was validated")

    monkeypatch.setattr(ray, "init", forbidden)
    monkeypatch.setattr(single, "start_ray", forbidden)
    monkeypatch.setattr(launch, "build_trainer", forbidden)


@pytest.mark.slow
def test_train_prints_the_summary_as_the_last_line(ray_cluster, tiny_model, tmp_path, capsys, monkeypatch):
    spec = write_spec(tmp_path, tiny_model)
    # One worker trains in one Ray task: no Ray Train run (its controller and worker group) is built.
    monkeypatch.setattr(launch, "build_trainer", lambda *a, **k: pytest.fail("a Ray Train run was built"))
    assert cli.main(["train", str(spec), "--set", "train.seed=1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["task"] == "text-classification"
    assert summary["model"] == tiny_model
    for split in ("validation", "test"):
        assert 0.0 <= summary["metrics"][split]["accuracy"] <= 1.0
        assert set(summary["metrics"][split]["report"]) == {"negative", "positive"}
    assert read_meta(summary["checkpoint"])["spec"]["train"]["seed"] == 1
    assert summary["epochs_run"] == 1
    assert summary["train_seconds"] > 0
    assert summary["train_tokens_per_second"] > 0


@pytest.mark.slow
def test_two_runs_of_one_spec_started_in_the_same_second_keep_their_own_folders(ray_cluster, tiny_model, tmp_path,
                                                                                  capsys, monkeypatch):
    # Runs are named by the second; a scheduler or a shell loop can start two in one. Frozen clock:
    # both runs ask for the same name.
    monkeypatch.setattr(single.time, "strftime", lambda *a: "20261203-120000")
    spec = write_spec(tmp_path, tiny_model)
    checkpoints = []
    for seed in (1, 2):
        assert cli.main(["train", str(spec), "--set", f"train.seed={seed}"]) == 0
        checkpoints.append(Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["checkpoint"]))
    runs = tmp_path / "runs"
    assert checkpoints == [runs / "cli-tiny-train-20261203-120000" / "checkpoint",
                           runs / "cli-tiny-train-20261203-120000-2" / "checkpoint"]
    # Each kept its own model: the second did not resume from (or overwrite) the first's checkpoint.
    assert [read_meta(c)["spec"]["train"]["seed"] for c in checkpoints] == [1, 2]


def conll_with_a_missing_tag(tmp: Path) -> dict[str, Any]:
    path = tmp / "train.txt"
    path.write_text("EU B-ORG\nrejects\n. O\n")
    return {"task": "token-classification", "data": {"format": "conll", "train": str(path)}, "train": {"metric": "f1"}}


# (case, spec sections or None for a missing spec file, what the one error line must contain)
BAD_INPUT = [
    ("missing spec file", None, ["missing.yaml", "spec file not found"]),
    ("bad field", {"train": {"lr": -1}}, ["spec.yaml", "train.lr", "greater than 0"]),
    ("misspelt field", {"train": {"lerning_rate": 1e-4}}, ["spec.yaml", "train.lerning_rate", "unknown field"]),
    ("unknown task", {"task": "ner"}, ["spec.yaml", "task:", "token-classification"]),
    ("missing data file", {"data": {"format": "csv", "train": "nowhere.csv"}},
     ["nowhere.csv", "file not found", "data.train"]),
    ("token without tag", conll_with_a_missing_tag, ["train.txt:2", "expected at least 2 columns"]),
]


@pytest.mark.parametrize("case, sections, needles", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_code_2_before_any_ray_work(case, sections, needles, tiny_model,
                                                                    tmp_path, capsys, no_ray_work):
    if sections is None:
        spec = tmp_path / "missing.yaml"
    else:
        spec = write_spec(tmp_path, tiny_model, **(sections(tmp_path) if callable(sections) else sections))
    assert cli.main(["train", str(spec)]) == cli.EXIT_BAD_INPUT
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert len(lines) == 1, captured.err
    for needle in needles:
        assert needle in lines[0]
    assert captured.out == ""


def test_a_run_the_cluster_cannot_host_is_refused_before_launch(ray_cluster, tiny_model, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.setattr(launch, "build_trainer", lambda *a, **k: pytest.fail("a trainer was built"))
    spec = write_spec(tmp_path, tiny_model)
    assert cli.main(["train", str(spec), "--set", "resources.workers=99"]) == cli.EXIT_BAD_INPUT
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "spec.yaml: resources: the run needs 99 CPUs" in lines[0]
    assert "lower resources.workers" in lines[0]


def test_the_installed_command_exits_2_with_one_line(tmp_path):
    command = Path(sys.executable).with_name("tunefleet")
    done = subprocess.run([str(command), "train", str(tmp_path / "missing.yaml")], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert error_lines(done.stderr) == [f"tunefleet: error: {tmp_path / 'missing.yaml'}: spec file not found; "
                                        "pass a YAML file such as search_spaces/demo.yaml"]
    assert done.stdout == ""


def test_data_check_prints_the_json_report(tiny_model, tmp_path, capsys, no_ray_work):
    spec = write_spec(tmp_path, tiny_model, model={"max_length": 12})
    assert cli.main(["data", "check", str(spec)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["spec"] == str(spec) and report["task"] == "text-classification"
    assert report["labels"] == ["negative", "positive"]
    splits = report["report"]["splits"]
    assert {name: splits[name]["examples"] for name in splits} == {"train": 42, "validation": 9, "test": 9}
    assert splits["train"]["token_length"]["max"] > 12 and splits["train"]["truncated_examples"] > 0


def test_data_check_table_lists_every_split(tiny_model, tmp_path, capsys):
    spec = write_spec(tmp_path, tiny_model)
    assert cli.main(["data", "check", str(spec)]) == 0
    table = capsys.readouterr().err
    for split, count in (("train", 42), ("validation", 9), ("test", 9)):
        rows = [[cell.strip() for cell in line.split("│")[1:3]] for line in table.splitlines()]
        assert [split, str(count)] in rows, table


def test_data_check_of_bad_data_exits_2(tiny_model, tmp_path, capsys, no_ray_work):
    spec = write_spec(tmp_path, tiny_model, **conll_with_a_missing_tag(tmp_path))
    assert cli.main(["data", "check", str(spec)]) == cli.EXIT_BAD_INPUT
    assert len(error_lines(capsys.readouterr().err)) == 1
