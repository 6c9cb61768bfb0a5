"""The model registry against real stores: SQLite and a real `mlflow server` over HTTP.

Checkpoints are written with `save_checkpoint` (the same layout training publishes): a tiny random
BERT for classification, and for NER the hand-built lookup model of `conftest`, whose entities on
`TEXTS` are worked out by hand (`NER_ANSWERS`). "Better" and "worse" come from the test metrics
passed at registration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port, lexicon_ner_checkpoint, stop_process_group, wait_for_http
from tunefleet.tracking import registry
from tunefleet.train.predict import Predictor
from tunefleet.tracking.registry import RegistryError, parse_model_ref

TEXTS = ["great value, works as described", "broke after a week", "John Smith works for Acme in Berlin ."]
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]
# "Acme" is ac ##me: the word takes the tag of "ac". Every tag wins with probability 3/4.
NER_LEXICON = {"john": "B-PER", "smith": "I-PER", "ac": "B-ORG"}
# (type, start, end, text, score) per text, counted by hand on TEXTS.
NER_ANSWERS = [[], [], [("PER", 0, 10, "John Smith", 0.75), ("ORG", 21, 25, "Acme", 0.75)]]


def _checkpoint(tiny_model: str, folder: Path, task: str, seed: int = 0) -> str:
    import torch
    import transformers

    from tunefleet.train.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    labels = ["negative", "positive"] if task == "text-classification" else ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]
    model_class = "BertForSequenceClassification" if task == "text-classification" else "BertForTokenClassification"
    model = getattr(transformers, model_class).from_pretrained(
        tiny_model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    metric = "accuracy" if task == "text-classification" else "f1"
    meta = {"task": task, "model_class": model_class, "label_names": labels, "base_model": tiny_model,
            "max_length": 32, "metric": metric, "epoch": 1.0, "validation": {metric: 0.5}, "spec": {}}
    return str(save_checkpoint(folder, model, tokenizer, meta, {"next_epoch": 1}))


@pytest.fixture(scope="module")
def checkpoints(tiny_model, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {"cls": _checkpoint(tiny_model, folder / "cls", "text-classification"),
            "ner": lexicon_ner_checkpoint(folder / "ner", NER_LABELS, NER_LEXICON, max_length=32)}


def _entities(answers: list[dict]) -> list[list[tuple]]:
    return [[(e["type"], e["start"], e["end"], e["text"], round(e["score"], 5)) for e in a["entities"]] for a in answers]


@pytest.fixture(params=["sqlite", "http"])
def store(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlflow.db'}"
    return request.getfixturevalue("mlflow_server")


def _unique(name: str) -> str:
    return f"{name}-{os.getpid()}-{time.monotonic_ns() % 10**9}"


def test_model_refs_parse_and_reject_with_the_fix():
    assert parse_model_ref("conll2003-ner") == ("conll2003-ner", None, None)
    assert parse_model_ref("m.v2@challenger") == ("m.v2", "challenger", None)
    assert parse_model_ref("m/3") == ("m", None, 3)
    for bad, hint in [("m/0", "positive integer"), ("m/x", "positive integer"), ("m@Champion", "lowercase"),
                      ("bad name", "letters, digits"), ("", "letters, digits")]:
        with pytest.raises(RegistryError, match=hint):
            parse_model_ref(bad)


def test_champion_gate_promote_rollback(checkpoints, store):
    name = _unique("gate")
    first = registry.register_checkpoint(checkpoints["cls"], name, {"accuracy": 0.70}, tracking_uri=store,
                                         source_sweep="sweep-a")
    assert first["version"] == 1 and first["aliases"] == ["champion"] and first["promoted"]["promoted"]

    worse = registry.register_checkpoint(checkpoints["cls"], name, {"accuracy": 0.60}, tracking_uri=store)
    assert worse["aliases"] == ["challenger"] and not worse["promoted"]["promoted"]
    assert "does not beat" in worse["promoted"]["reason"]
    # Better, but not by the margin: stays challenger.
    close = registry.register_checkpoint(checkpoints["cls"], name, {"accuracy": 0.72}, tracking_uri=store, margin=0.05)
    assert close["aliases"] == ["challenger"] and not close["promoted"]["promoted"]
    better = registry.register_checkpoint(checkpoints["cls"], name, {"accuracy": 0.80}, tracking_uri=store, margin=0.05)
    assert better["aliases"] == ["champion"] and better["promoted"]["promoted"]
    assert registry.current_version(name, "champion", tracking_uri=store) == 4
    assert registry.current_version(name, "challenger", tracking_uri=store) == 3

    rows = {r["version"]: r for r in registry.list_models(name, tracking_uri=store)}
    assert rows[1]["source_sweep"] == "sweep-a" and rows[2]["decision"] == "kept challenger"
    assert rows[4]["metrics"]["test"] == {"accuracy": 0.80}

    rolled = registry.rollback(name, tracking_uri=store)
    assert rolled == {"name": name, "champion": 1, "rolled_back": 4}
    assert registry.current_version(name, "champion", tracking_uri=store) == 1
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback(name, tracking_uri=store)

    refused = registry.promote(name, 2, tracking_uri=store)
    assert not refused["promoted"]["promoted"]
    forced = registry.promote(name, 2, force=True, tracking_uri=store)
    assert forced["promoted"]["promoted"] and "champion" in forced["aliases"]
    assert registry.rollback(name, tracking_uri=store)["champion"] == 1

    resolved = registry.resolve_model(name, tracking_uri=store)
    assert (resolved.version, resolved.alias) == (1, "champion")
    assert (Path(resolved.checkpoint) / "tunefleet.json").is_file()
    assert not (Path(resolved.checkpoint) / "training_state.pt").exists()  # serving needs no optimizer state
    assert resolved.metrics["test"] == {"accuracy": 0.70}
    assert registry.resolve_model(f"{name}/3", tracking_uri=store).version == 3
    for bad in (f"{name}/99", f"{name}@nope", "no-such-model"):
        with pytest.raises(RegistryError):
            registry.resolve_model(bad, tracking_uri=store)
    assert registry.current_version("no-such-model", "champion", tracking_uri=store) is None


_RACER = """
import sys, time
from pathlib import Path
from tunefleet.tracking import registry

checkpoint, name, value, store, go = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
gate = registry._gate

def slow_gate(*args, **kwargs):
    # Widen the read-compare-set window: without the lock both racers would read "no champion".
    time.sleep(1.5)
    return gate(*args, **kwargs)

registry._gate = slow_gate
Path(str(go) + f".ready-{value}").touch()
while not go.exists():
    time.sleep(0.01)
print(registry.register_checkpoint(checkpoint, name, {"accuracy": value}, tracking_uri=store))
"""


@pytest.mark.slow
def test_two_racing_registrations_leave_one_consistent_champion(checkpoints, store, tmp_path):
    name = _unique("race")
    go = tmp_path / "go"
    script = tmp_path / "racer.py"
    script.write_text(_RACER)
    racers = [subprocess.Popen([sys.executable, str(script), checkpoints["cls"], name, value, store, str(go)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for value in ("0.6", "0.9")]
    deadline = time.monotonic() + 180
    while len(list(tmp_path.glob("go.ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    go.touch()
    for racer in racers:
        out, err = racer.communicate(timeout=240)
        assert racer.returncode == 0, err[-2000:]

    rows = {r["version"]: r for r in registry.list_models(name, tracking_uri=store)}
    assert sorted(rows) == [1, 2]
    champions = [v for v, r in rows.items() if "champion" in r["aliases"]]
    best = max(rows, key=lambda v: rows[v]["test_metric"])
    assert champions == [best]
    # Serialized: the second decision saw the first version, whichever order they ran in.
    client = registry.client_for(store)
    previous = {v: client.get_model_version(name, str(v)).tags["tunefleet.previous_champion"] for v in rows}
    assert sorted(previous.values()) == ["", "1"], previous


def test_registered_pyfunc_predicts_like_the_checkpoint(checkpoints, tmp_path, monkeypatch):
    import mlflow.pyfunc
    import pandas as pd

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for kind, metric in (("cls", "accuracy"), ("ner", "f1")):
        name = f"pyfunc-{kind}"
        registry.register_checkpoint(checkpoints[kind], name, {metric: 0.5}, tracking_uri=store)
        # Not mlflow.set_tracking_uri: it outlives the test (a global, and $MLFLOW_TRACKING_URI too).
        monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
        got = model.predict(pd.DataFrame({"text": TEXTS})).to_dict("records")
        if kind == "cls":
            want = Predictor(checkpoints[kind]).predict(TEXTS)
            assert [g["label"] for g in got] == [w["label"] for w in want]
            assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], abs=1e-5)
        else:
            assert _entities(got) == NER_ANSWERS
        signature = model.metadata.signature
        assert signature.inputs.input_names() == ["text"]
        assert signature.outputs.input_names() == (["label", "score"] if kind == "cls" else ["entities"])
        # The weights are a Hugging Face folder: plain transformers loads them.
        import transformers

        resolved = registry.resolve_model(name, tracking_uri=store)
        assert transformers.AutoTokenizer.from_pretrained(resolved.checkpoint) is not None
        assert transformers.AutoConfig.from_pretrained(resolved.checkpoint).num_labels == \
            len(json.loads((Path(resolved.checkpoint) / "tunefleet.json").read_text())["label_names"])


def test_cli_models_promote_rollback_predict(checkpoints, tmp_path, capsys):
    from tunefleet.cli import main

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry.register_checkpoint(checkpoints["cls"], "cli-model", {"accuracy": 0.7}, tracking_uri=store)
    registry.register_checkpoint(checkpoints["cls"], "cli-model", {"accuracy": 0.6}, tracking_uri=store)
    uri = ["--tracking-uri", store]

    assert main(["models", "cli-model", *uri]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"]
    assert [(r["version"], r["aliases"]) for r in rows] == [(2, ["challenger"]), (1, ["champion"])]
    assert main(["promote", "cli-model", "2", *uri]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["promoted"]["promoted"] is False
    assert main(["promote", "cli-model", "2", "--force", *uri]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["promoted"]["promoted"] is True
    assert main(["rollback", "cli-model", *uri]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["champion"] == 1

    texts = tmp_path / "texts.txt"
    texts.write_text("great value\n\nbroke after a week\n")
    assert main(["predict", "cli-model/2", "--file", str(texts), *uri]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = Predictor(checkpoints["cls"]).predict(["great value", "broke after a week"])
    assert [(l["model"], l["text"], l["label"]) for l in lines] == \
        [("cli-model/2", "great value", want[0]["label"]), ("cli-model/2", "broke after a week", want[1]["label"])]

    assert main(["predict", "cli-model@nope", "--text", "x", *uri]) == 2
    assert main(["promote", "no-such", "1", *uri]) == 2
    assert "no registered model" in capsys.readouterr().err


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_real_request(checkpoints, tmp_path):
    import requests

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry.register_checkpoint(checkpoints["ner"], "served-ner", {"f1": 0.5}, tracking_uri=store)
    port = free_port()
    # As with an activated venv: the scoring server execs `uvicorn` from PATH.
    env = {**os.environ, "MLFLOW_TRACKING_URI": store,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(tmp_path / "serve.log", "w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", "models:/served-ner@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
    try:
        try:
            wait_for_http(f"http://127.0.0.1:{port}/ping", process)
        except RuntimeError:
            log.flush()
            raise AssertionError((tmp_path / "serve.log").read_text()[-3000:]) from None
        response = requests.post(f"http://127.0.0.1:{port}/invocations", timeout=60,
                                 json={"dataframe_records": [{"text": t} for t in TEXTS]})
        assert response.status_code == 200, response.text
        got = response.json()["predictions"]
    finally:
        stop_process_group(process)
        log.close()
    assert _entities(got) == NER_ANSWERS
