"""One contract test over every registered task: a new task gets this coverage by being registered.

For each name in `tunefleet.plugins.TASKS`, on the tiny random BERT and the task's own synthetic data:
read -> tokenize -> train (the loop without Ray, `train.local`; the Ray Train path is the same loop and
has its own tests) -> evaluate -> register in a SQLite MLflow registry -> predict from the registry,
locally and through the MLflow pyfunc -> answer a real HTTP request to Ray Serve. Every answer must
have exactly the columns and types of the task's declared `output_schema`, and the served answers
must equal the local ones.

Training must beat the untrained model: the task's own validation loss falls, and its headline
metric rises. The 2-layer, 32-wide random BERT learns every task's synthetic data in about a hundred
steps except one, measured: it does not learn to compare the two texts of a paraphrase pair in a few
hundred steps (F1 stays at the one-class value, loss at ln 2). So `text-pair-classification` trains
the real bundled MiniLM for one epoch instead (macro-F1 ~0.35 untrained, ~0.78 after; about 10 s).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from conftest import free_port, tiny_spec_dict
from tunefleet import plugins
from tunefleet.spec import spec_from_dict
from tunefleet.tasks import get_task

pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")

# How each task trains the tiny model on its synthetic data. Measured: the random 2-layer, 32-wide
# BERT needs about a hundred steps before its metrics move (one epoch of 210 examples is 27 steps), so
# each gets four epochs of small batches at a high learning rate: 5-10 s per task on 2 cores.
TRAIN = {"epochs": 4, "batch_size": 8, "lr": 2.0e-3, "dropout": 0.0, "warmup_ratio": 0.1, "metric": None}
# Tasks the tiny model cannot learn in a few hundred steps get the real small model (module doc).
PRETRAINED = {"text-pair-classification": {"model": {"name_or_path": "bundled-minilm", "max_length": 48},
                                           "train": {**TRAIN, "epochs": 1, "lr": 1.0e-4, "batch_size": 16}}}


@pytest.fixture(scope="module")
def serve_url(ray_cluster):
    from ray import serve

    from tunefleet.serve.app import start_serve

    port = free_port()
    start_serve("127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def _untrained(spec: Any, prepared: Any) -> dict[str, Any]:
    """Validation scores of the model the run starts from: same seed, fresh head."""
    import torch

    from tunefleet.train.loop import evaluate
    from tunefleet.train.models import build_model, load_tokenizer

    task = get_task(spec.task)
    torch.manual_seed(spec.train.seed)
    model = build_model(task, spec.model.name_or_path, prepared.splits.label_names, spec.train.dropout)
    return evaluate(model, prepared.tokenized["validation"], task, prepared.splits.label_names, 32,
                    torch.device("cpu"), "fp32", load_tokenizer(spec.model.name_or_path).pad_token_id)


def _conforms(value: Any, kind: Any) -> bool:
    """Whether a JSON value has the MLflow schema type `kind` (string, double, long, Array, Object)."""
    from mlflow.types import DataType
    from mlflow.types.schema import Array, Object

    if isinstance(kind, Array):
        return isinstance(value, list) and all(_conforms(v, kind.dtype) for v in value)
    if isinstance(kind, Object):
        properties = {p.name: p.dtype for p in kind.properties}
        return (isinstance(value, dict) and set(value) == set(properties)
                and all(_conforms(value[k], t) for k, t in properties.items()))
    python = {DataType.string: str, DataType.double: float, DataType.long: int}[kind]
    return isinstance(value, python) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    """Equal answers, floats to 1e-6 (JSON and DataFrames may round the last digits)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-6, abs=1e-9)
    return a == b


def _check_answers(task: Any, answers: list[dict[str, Any]], count: int) -> None:
    columns = {spec.name: spec.type for spec in task.output_schema().inputs}
    assert len(answers) == count
    for answer in answers:
        assert set(answer) == set(columns), (answer, columns)
        for name, kind in columns.items():
            assert _conforms(answer[name], kind), (name, answer[name], kind)


@pytest.mark.slow
@pytest.mark.parametrize("task_name", sorted(plugins.TASKS))
def test_every_task_reads_trains_registers_predicts_and_serves(task_name, tiny_model, tmp_path, ray_cluster,
                                                               serve_url, monkeypatch):
    import mlflow.pyfunc
    import pandas as pd
    from ray import serve

    from tunefleet.serve.app import ServeOptions, build_app
    from tunefleet.tracking.registry import register_checkpoint, resolve_model
    from tunefleet.train.launch import prepare_data
    from tunefleet.train.local import train_local
    from tunefleet.train.predict import Predictor

    task = get_task(task_name)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # the pyfunc's artifacts land beside the store, not in the repo
    spec = spec_from_dict(tiny_spec_dict(
        tiny_model, tmp_path / "runs", name=f"contract-{task_name}", task=task_name,
        data={"format": "synthetic", "synthetic_size": 300}, **PRETRAINED.get(task_name, {"train": TRAIN})))
    assert spec.train.metric == task.default_metric

    # read and tokenize
    prepared = prepare_data(spec)
    assert set(prepared.tokenized) == {"train", "validation", "test"}
    assert all(len(prepared.tokenized[name]) == len(getattr(prepared.splits, name)) > 0
               for name in ("train", "validation", "test"))

    # train, evaluate: better than the untrained model on the task's own headline metric
    before = _untrained(spec, prepared)
    summary = train_local(spec, tmp_path / "trained", prepared=prepared)
    after = summary["metrics"]["validation"]
    metric = spec.train.metric
    sign = -1 if spec.metric_mode() == "min" else 1
    assert after["loss"] < before["loss"], (before["loss"], after["loss"])
    assert sign * after[metric] > sign * before[metric], (metric, before[metric], after[metric])
    assert metric in summary["metrics"]["test"]

    # register, then predict from the registry: locally and through the MLflow pyfunc
    registered = register_checkpoint(summary["checkpoint"], spec.name, summary["metrics"]["test"], tracking_uri=uri)
    assert registered["promoted"]["promoted"] and registered["version"] == 1
    resolved = resolve_model(spec.name, tracking_uri=uri)
    inputs = task.example_inputs
    local = Predictor(resolved.checkpoint).predict(inputs)
    _check_answers(task, local, len(inputs))

    # Not mlflow.set_tracking_uri: it outlives the test (a global, and $MLFLOW_TRACKING_URI too).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    frame = mlflow.pyfunc.load_model(f"models:/{spec.name}@champion").predict(pd.DataFrame(inputs))
    assert list(frame.columns) == [c.name for c in task.output_schema().inputs]
    assert _same(json.loads(frame.to_json(orient="records")), local)

    # answer a real HTTP request through Ray Serve
    app = f"contract-{task_name}"
    serve.run(build_app(ServeOptions(model=spec.name, tracking_uri=uri, num_cpus=0.25, batching=False)),
              name=app, route_prefix=f"/{task_name}")
    try:
        response = requests.post(f"{serve_url}/{task_name}/predict", json={"texts": inputs}, timeout=60)
        assert response.status_code == 200, response.text
        served = response.json()
        assert served["model"]["version"] == 1
        _check_answers(task, served["predictions"], len(inputs))
        assert _same(served["predictions"], local)
        # A wrong input shape for this task is the caller's mistake: a 400 naming the field.
        bad = {"texts": [{"text_pair": "only half of a pair"}]}
        refused = requests.post(f"{serve_url}/{task_name}/predict", json=bad, timeout=60)
        assert refused.status_code == 400 and '"texts"[0]' in refused.json()["error"]["message"]
    finally:
        serve.delete(app)


@pytest.mark.parametrize("task_name", sorted(plugins.TASKS))
def test_every_task_paired_statistics_sum_to_its_own_scores(task_name, tiny_model):
    """The promotion gate resamples `example_stats` rows (`tracking/paired.py`); on all examples their
    sums must give exactly the metrics `score` reports, or the gate would compare the wrong numbers.
    Predictions come from random logits through the task's own `predictions`, so every kind of error
    (missed entities, truncated sentences, wrong classes, constant scores) shows up."""
    import numpy as np

    from tunefleet.train.batching import collate
    from tunefleet.train.models import load_tokenizer

    task = get_task(task_name)
    train, _, test = task.synthetic(300, seed=1)
    names = task.label_names(train.labels, "synthetic")
    tokenizer = load_tokenizer(tiny_model)
    # max_length 12 cuts long NER sentences: their cut words must count as missed in both.
    split = task.tokenize(test, tokenizer, names, 12 if task.per_token_labels else 64)
    width = task.model_config(names).get("num_labels", len(names))
    rng = np.random.default_rng(0)
    predicted, indices = [], np.arange(len(split))
    for start in range(0, len(split), 16):
        batch = collate(split, indices[start:start + 16], tokenizer.pad_token_id, task.per_token_labels)
        labels = batch["labels"].numpy()
        shape = (*labels.shape, width) if task.per_token_labels else (len(labels), width)
        predicted += task.predictions(rng.normal(size=shape).astype(np.float32), labels)
    scores = task.score(predicted, split, indices.tolist(), names)
    totals = task.example_stats(predicted, task.gold(split), names).sum(axis=0)
    assert len(task.gold(split)) == len(split)
    for metric in task.metrics:
        paired = task.metric_from_totals(totals[None, :], metric, names)
        assert paired.shape == (1,)
        assert paired[0] == pytest.approx(scores[metric], abs=1e-9), (metric, paired[0], scores[metric])
