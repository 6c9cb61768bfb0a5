"""The bad-input catalogue (tests/BAD_INPUT.md): malformed data files, specs, search spaces, command
lines, registry names and versions, and serve requests. Each one ends with exit code 2 and exactly
one `tunefleet: error:` line naming the file, line or field (or a 4xx for the service), before any
Ray work, and nothing is written to MLflow: no run and no registered model.

Every case runs the real command in-process (`cli.main`), against a SQLite store of this module's
own, set in `$MLFLOW_TRACKING_URI` as an operator would set it, with tracking enabled."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tunefleet import cli

HERE = Path(__file__).resolve().parent
# Ray's own Serve schema still uses pydantic v1-style Field extras; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")


def spec_file(tmp: Path, tiny_model: str, **sections: Any) -> Path:
    """A valid tiny sweep spec with tracking on (the default store), with `sections` merged in; a
    section value of None removes the section."""
    spec: dict[str, Any] = {
        "name": "bad-input",
        "task": "text-classification",
        "data": {"format": "synthetic", "synthetic_size": 60},
        "model": {"name_or_path": tiny_model, "max_length": 32},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1.0e-3, "metric": "accuracy"},
        "resources": {"workers": 1, "cpus_per_worker": 1, "storage_path": str(tmp / "runs")},
        "search": {"num_trials": 2, "space": {"train.lr": {"loguniform": [1.0e-4, 1.0e-3]}}},
    }
    for section, values in sections.items():
        if values is None:
            spec.pop(section)
        elif isinstance(values, dict) and isinstance(spec.get(section), dict) and section != "data":
            spec[section] = {**spec[section], **values}
        else:
            spec[section] = values
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def data_file(tmp: Path, name: str, content: str | bytes) -> str:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


@dataclass(frozen=True)
class Case:
    id: str
    where: str  # data | spec | search space | command line | registry
    argv: Callable[[Path, str], list[str]]  # (tmp_path, tiny_model) -> command line
    needles: tuple[str, ...]  # what the one error line must contain
    lines: int = 1


def sweep(**sections: Any) -> Callable[[Path, str], list[str]]:
    return lambda tmp, model: ["sweep", str(spec_file(tmp, model, **sections))]


def sweep_on(files: dict[str, str | bytes], fmt: str, task: str = "text-classification",
             **data: Any) -> Callable[[Path, str], list[str]]:
    """A sweep over data files written into the test's folder (`train`, `validation`, ... -> content)."""
    def build(tmp: Path, model: str) -> list[str]:
        paths = {split: data_file(tmp, f"{split}.{fmt}", content) for split, content in files.items()}
        # Every task but the spec default's takes its own default metric.
        extra = {"train": {"metric": None}} if task != "text-classification" else {}
        return ["sweep", str(spec_file(tmp, model, task=task, data={"format": fmt, **paths, **data}, **extra))]
    return build


def spec_text(text: str | bytes) -> Callable[[Path, str], list[str]]:
    return lambda tmp, model: ["sweep", data_file(tmp, "spec.yaml", text)]


def command(*argv: str) -> Callable[[Path, str], list[str]]:
    return lambda tmp, model: [a.replace("{tmp}", str(tmp)) for a in argv]


def existing_sweep(tmp: Path, model: str) -> list[str]:
    """A spec whose sweep already has results (a Tune state file), run without --resume/--restart."""
    from tunefleet.search.sweep import sweep_name
    from tunefleet.spec import load_spec

    path = spec_file(tmp, model)
    folder = tmp / "runs" / sweep_name(load_spec(path))
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(b"")
    return ["sweep", str(path)]


NER = "token-classification"
CASES = [
    # ---- data files
    Case("csv file missing", "data", sweep(data={"format": "csv", "train": "nowhere.csv"}),
         ("nowhere.csv", "file not found", "data.train")),
    Case("csv file empty", "data", sweep_on({"train": ""}, "csv"), ("train.csv", "file is empty", "data.train")),
    Case("csv not UTF-8", "data", sweep_on({"train": b"text,label\nbad \xff byte,positive\n"}, "csv"),
         ("train.csv:2", "not valid UTF-8", "column 5")),
    Case("csv empty label", "data", sweep_on({"train": "text,label\ngood,positive\nbad,\n"}, "csv"),
         ("train.csv:3", "empty label")),
    Case("csv empty text", "data", sweep_on({"train": "text,label\n,positive\n"}, "csv"), ("train.csv:2", "empty text")),
    Case("csv unknown label column", "data",
         sweep_on({"train": "text,label\ngood,positive\n"}, "csv", label_column="sentiment"),
         ("train.csv", "sentiment", "data.label_column")),
    Case("csv single class", "data", sweep_on({"train": "text,label\n" + "good,positive\n" * 30}, "csv"),
         ("train.csv", "positive")),
    Case("pair task with one text column", "data",
         sweep_on({"train": "a,b,label\nx,y,1\n"}, "csv", task="text-pair-classification", text_columns=["a"]),
         ("data.text_columns", "text-pair-classification", "[sentence1, sentence2]")),
    Case("fasttext line with two labels for a single-label task", "data",
         sweep_on({"train": "__label__pos good\n__label__pos __label__neg so so\n"}, "fasttext"),
         ("train.fasttext:2", "2 labels", "multi-label-classification")),
    Case("multi-label cell that is not a JSON list", "data",
         sweep_on({"train": 'text\tlabel\nsports news\t["sports"\n'}, "tsv", task="multi-label-classification"),
         ("train.tsv:2", "not one")),
    Case("regression label that is not a number", "data",
         sweep_on({"train": "text,label\nfine,3.5\nmeh,high\n"}, "csv", task="text-regression"),
         ("train.csv:3", "'high'", "not a finite number")),
    Case("conll file for a text task", "data",
         sweep_on({"train": "EU B-ORG\n"}, "conll"), ("data.format", "conll")),
    Case("validation label unseen in train", "data",
         sweep_on({"train": "text,label\n" + "good,positive\nbad,negative\n" * 15,
                   "validation": "text,label\nmeh,neutral\n"}, "csv"),
         ("validation.csv:2", "neutral")),
    Case("jsonl invalid JSON", "data", sweep_on({"train": '{"text": "a", "label": "x"}\n{"text": \n'}, "jsonl"),
         ("train.jsonl:2",)),
    Case("jsonl not an object", "data", sweep_on({"train": '["a", "b"]\n'}, "jsonl"),
         ("train.jsonl:1", "expected a JSON object")),
    Case("jsonl missing field", "data", sweep_on({"train": '{"text": "a"}\n'}, "jsonl"),
         ("train.jsonl:1", "missing field 'label'", "data.label_field")),
    Case("jsonl tokens and tags differ", "data",
         sweep_on({"train": '{"tokens": ["EU", "rejects"], "tags": ["B-ORG"]}\n'}, "jsonl", task=NER),
         ("train.jsonl:1", "2 tokens but 1 tags")),
    Case("conll token without tag", "data", sweep_on({"train": "EU B-ORG\nrejects\n. O\n"}, "conll", task=NER),
         ("train.conll:2", "expected at least 2 columns")),
    Case("conll bad tag", "data", sweep_on({"train": "EU X-ORG\n. O\n"}, "conll", task=NER),
         ("train.conll:1", "'X-ORG'", "B-TYPE")),
    Case("conll ragged columns", "data", sweep_on({"train": "EU NNP B-ORG\nrejects O\n"}, "conll", task=NER),
         ("train.conll:2", "expected 3 columns like line 1")),
    Case("conll for classification", "data", sweep_on({"train": "EU B-ORG\n"}, "conll"),
         ("data.format", "conll", "text-classification")),
    # ---- specs
    Case("spec file missing", "spec", command("sweep", "{tmp}/missing.yaml"), ("missing.yaml", "spec file not found")),
    Case("spec invalid YAML", "spec", spec_text("name: x\ntask: [unclosed\n"), ("spec.yaml", "line", "invalid YAML")),
    Case("spec not a mapping", "spec", spec_text("- name\n- task\n"), ("spec.yaml", "YAML mapping")),
    Case("spec not UTF-8", "spec", spec_text(b"name: caf\xe9\n"), ("spec.yaml", "not UTF-8")),
    Case("spec misspelt field", "spec", sweep(train={"lerning_rate": 1e-4}),
         ("spec.yaml", "train.lerning_rate", "unknown field")),
    Case("spec negative lr", "spec", sweep(train={"lr": -1}), ("spec.yaml", "train.lr", "greater than 0")),
    Case("spec wrong type", "spec", sweep(train={"epochs": "three"}), ("spec.yaml", "train.epochs", "'three'")),
    Case("spec unknown task", "spec", sweep(task="ner"), ("spec.yaml", "task", "token-classification")),
    Case("spec metric of another task", "spec", sweep(train={"metric": "bleu"}),
         ("spec.yaml", "train.metric", "'bleu'", "accuracy")),
    Case("spec name unsafe for the registry", "spec", sweep(name="my model/1"), ("spec.yaml", "name", "letters, digits")),
    Case("spec without data", "spec", sweep(data=None), ("spec.yaml", "data", "required field is missing")),
    Case("spec zero workers", "spec", sweep(resources={"workers": 0}), ("spec.yaml", "resources.workers")),
    Case("spec bad time budget", "spec", sweep(search={"time_budget": "soon"}), ("spec.yaml", "search.time_budget", "90s")),
    Case("spec two bad fields", "spec", sweep(train={"lr": -1, "epochs": 0}), ("spec.yaml",), lines=2),
    # ---- search spaces
    Case("spec LoRA rank zero", "spec", sweep(train={"peft": {"r": 0}}),
         ("spec.yaml", "train.peft.r", "greater than or equal to 1")),
    Case("spec LoRA target module not in the model", "spec", sweep(train={"peft": {"target_modules": ["query", "qkv"]}}),
         ("spec.yaml", "train.peft.target_modules", "'qkv'", "dense, key, query, value")),
    Case("space LoRA setting without train.peft", "search space",
         sweep(search={"space": {"train.peft.r": {"choice": [4, 8]}}}),
         ("spec.yaml", "search.space.train.peft.r", "train.peft is not set")),
    Case("space loguniform from 0", "search space", sweep(search={"space": {"train.lr": {"loguniform": [0, 1e-3]}}}),
         ("spec.yaml", "search.space.train.lr.loguniform", "low > 0")),
    Case("space unknown path", "search space", sweep(search={"space": {"train.learning_rate": {"uniform": [0, 1]}}}),
         ("spec.yaml", "search.space.train.learning_rate", "unknown spec path")),
    Case("space low above high", "search space", sweep(search={"space": {"train.dropout": {"uniform": [0.3, 0.1]}}}),
         ("search.space.train.dropout.uniform", "low 0.3 must be below high 0.1")),
    Case("space unknown distribution", "search space",
         sweep(search={"space": {"train.lr": {"normal": [1e-4, 1e-3]}}}), ("search.space.train.lr", "'normal'")),
    Case("space two distributions", "search space",
         sweep(search={"space": {"train.lr": {"uniform": [0, 1], "choice": [1]}}}),
         ("search.space.train.lr", "one distribution")),
    Case("space empty choice", "search space", sweep(search={"space": {"train.epochs": {"choice": []}}}),
         ("search.space.train.epochs.choice", "non-empty list")),
    Case("space int with fractions", "search space", sweep(search={"space": {"train.epochs": {"int": [1, 2.5]}}}),
         ("search.space.train.epochs.int", "whole numbers")),
    Case("grid over a continuous range", "search space", sweep(search={"algorithm": "grid"}),
         ("search.algorithm", "grid", "train.lr")),
    Case("space unknown algorithm", "search space", sweep(search={"algorithm": "bayes"}),
         ("search.algorithm", "'bayes'")),
    Case("max_concurrent zero", "search space", sweep(search={"max_concurrent": 0}), ("search.max_concurrent",)),
    # ---- command lines
    Case("--set without =", "command line", lambda tmp, m: [*sweep()(tmp, m), "--set", "train.lr"],
         ("--set 'train.lr'", "dotted.key=value")),
    Case("--set of a bad value", "command line", lambda tmp, m: [*sweep()(tmp, m), "--set", "train.epochs=abc"],
         ("spec.yaml", "train.epochs", "'abc'")),
    Case("--set of an unknown field", "command line", lambda tmp, m: [*sweep()(tmp, m), "--set", "trian.lr=1"],
         ("spec.yaml", "trian", "unknown field")),
    Case("--resume with nothing to resume", "command line", lambda tmp, m: [*sweep()(tmp, m), "--resume"],
         ("spec.yaml", "no sweep", "to resume")),
    Case("sweep results exist", "command line", existing_sweep, ("spec.yaml", "already has results", "--resume")),
    Case("--resume with --restart", "command line", lambda tmp, m: [*sweep()(tmp, m), "--resume", "--restart"],
         ("sweep:", "--restart", "not allowed with")),
    Case("unknown command", "command line", command("tune", "spec.yaml"), ("invalid choice: 'tune'",)),
    Case("missing spec argument", "command line", command("sweep"), ("sweep:", "required", "spec")),
    Case("unknown option", "command line", lambda tmp, m: [*sweep()(tmp, m), "--fast"], ("unrecognized arguments: --fast",)),
    Case("version not a number", "command line", command("promote", "m", "two"), ("promote:", "version", "'two'")),
    Case("serve port not a number", "command line", command("serve", "m", "--port", "http"), ("serve:", "--port", "'http'")),
    Case("serve batch size zero", "command line", command("serve", "m", "--max-batch-size", "0"), ("max_batch_size",)),
    Case("predict file missing", "command line", command("predict", "m", "--file", "{tmp}/texts.txt"),
         ("--file", "texts.txt", "no such file")),
    Case("predict nothing to label", "command line", command("predict", "m", "--text", "  "), ("no text to label",)),
    Case("unreachable tracking store", "command line",
         sweep(tracking={"uri": "http://127.0.0.1:9/", "enabled": True}),
         ("tracking", "http://127.0.0.1:9/", "tracking.enabled=false")),
    # ---- registry names and versions
    Case("model name with path traversal", "registry", command("predict", "../../etc/passwd", "--text", "hi"),
         ("model '../../etc/passwd'", "must be")),
    Case("model name with shell characters", "registry", command("serve", "m;rm -rf ~"), ("'m;rm -rf ~'", "letters")),
    Case("alias in capitals", "registry", command("predict", "m@Champion", "--text", "hi"), ("alias 'Champion'", "lowercase")),
    Case("version zero", "registry", command("predict", "m/0", "--text", "hi"), ("version '0'", "positive integer")),
    Case("negative version", "registry", command("promote", "m", "-1"), ("version '-1'", "positive integer")),
    Case("unknown model", "registry", command("models", "ghost"), ("no registered model 'ghost'", "tunefleet models")),
    Case("unknown model to promote", "registry", command("promote", "ghost", "1"), ("no registered model 'ghost'",)),
    Case("unknown model to roll back", "registry", command("rollback", "ghost"), ("no registered model 'ghost'",)),
    Case("unknown model to serve", "registry", command("serve", "ghost@champion"), ("no registered model 'ghost'",)),
    Case("bad name to list", "registry", command("models", "bad name!"), ("'bad name!'", "letters")),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('bad-input-store') / 'mlflow.db'}"
    from tunefleet.tracking.runs import client_for

    client_for(uri)  # created once, so every case runs against a ready store
    return uri


@pytest.fixture
def guarded(store, monkeypatch):
    """The module's store in $MLFLOW_TRACKING_URI, and a failure if any case reaches Ray or Serve."""
    import ray
    from ray import serve

    from tunefleet.search import single, sweep
    from tunefleet.train import launch

    def forbidden(*args, **kwargs):
        raise AssertionError("Ray work started before the input was refused")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    for target, name in ((ray, "init"), (single, "start_ray"), (sweep, "start_ray"), (launch, "build_trainer"),
                         (serve, "start"), (serve, "run")):
        monkeypatch.setattr(target, name, forbidden)
    return store


def written(uri: str) -> dict[str, int]:
    from tunefleet.tracking.runs import client_for

    client = client_for(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {"registered models": len(client.search_registered_models()),
            "runs": len(client.search_runs(experiments)) if experiments else 0}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_exit_2_with_one_line_and_nothing_written(case, guarded, tiny_model, tmp_path, capsys):
    argv = case.argv(tmp_path, tiny_model)
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    captured = capsys.readouterr()
    # Only our own lines: a Ray started by other tests in this process forwards its workers' logs here.
    ours = [line for line in captured.err.splitlines() if line.startswith("tunefleet:")]
    assert len(ours) == case.lines, captured.err
    assert all(line.startswith("tunefleet: error: ") for line in ours), ours
    for needle in case.needles:
        assert needle in ours[0], f"{needle!r} not in {ours[0]!r}"
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert written(guarded) == {"registered models": 0, "runs": 0}


# ---- serve requests: the body rules, without HTTP (tests/test_serve.py sends them over HTTP) ------

REQUESTS = [
    ("body a list", ["a"], 400, "JSON list"),
    ("body a string", "texts", 400, "JSON str"),
    ("unknown field", {"texts": ["a"], "top_k": 3}, 400, "unknown field(s) ['top_k']"),
    ("texts missing", {}, 400, 'missing field "texts"'),
    ("texts a string", {"texts": "one"}, 400, '"texts" is a str'),
    ("texts empty", {"texts": []}, 400, '"texts" is empty'),
    ("item a number", {"texts": ["ok", 3]}, 400, '"texts"[1] is a int'),
    ("item null", {"texts": [None]}, 400, '"texts"[0] is a NoneType'),
    ("too many texts", {"texts": ["x"] * 9}, 413, "limit is 8"),
    ("text too long", {"texts": ["y" * 201]}, 413, '"texts"[0] has 201 characters'),
]


@pytest.mark.parametrize("case, body, status, needle", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_bad_request_bodies_are_4xx_naming_the_field(case, body, status, needle):
    from tunefleet.serve.http import ApiError, check_texts

    with pytest.raises(ApiError) as refused:
        check_texts(body, max_texts=8, max_chars=200)
    assert refused.value.status == status
    assert needle in refused.value.message and "\n" not in refused.value.message


# ---- the catalogue stays in step with the tests ---------------------------------------------------

def test_the_catalogue_lists_every_case():
    catalogue = (HERE / "BAD_INPUT.md").read_text()
    rows = {m.group(1).strip() for m in re.finditer(r"^\|\s*([^|]+?)\s*\|", catalogue, re.M)}
    missing = [c.id for c in CASES if c.id not in rows] + [r[0] for r in REQUESTS if r[0] not in rows]
    assert missing == [], f"add these to tests/BAD_INPUT.md: {missing}"
    assert len(CASES) + len(REQUESTS) >= 25
