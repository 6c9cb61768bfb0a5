"""LoRA (`train.peft`): the spec fields validate at the edge and can be searched; only the adapters
and the task head train, and the optimizer holds state for nothing else; the encoder's pretrained
weights stay as they were; the checkpoint (and so what is registered) is a plain transformers model
whose answers equal the LoRA model's; a LoRA run resumes exactly; and a small LoRA sweep through the
public API records its settings and registers a model that predicts.

The counts are worked by hand for the tiny BERT (conftest `tiny_model`: 2 layers, hidden size 32).
LoRA of rank r on a Linear layer of in x out adds A (r x in) and B (out x r): r * (in + out)
parameters; the default targets are each layer's query and value (32 -> 32), so
2 layers x 2 x r x 64 = 256 r, plus the head: a classifier of num_labels x 32 weights + num_labels biases.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import tiny_spec_dict
from tunefleet.search.space import seed_point, tune_space
from tunefleet.spec import SpecError, load_spec, spec_from_dict
from tunefleet.tasks import get_task
from tunefleet.train.checkpoint import ADAPTER_DIR, STATE_FILE, load_training_state, read_meta
from tunefleet.train.launch import prepare_data
from tunefleet.train.loop import run_loop
from tunefleet.train.models import build_model
from tunefleet.train.peft import apply_lora, check_lora, lora_targets, merged_copy
from tunefleet.train.session import LocalSession

CLS = "text-classification"
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}
BASE = {"name": "t", "task": CLS, "data": {"format": "synthetic"}}


def lora_spec(tiny_model: str, tmp_path: Path, peft: dict[str, Any] | None = None, **sections: Any):
    train = {"epochs": 2, "lr": 1.0e-2, "dropout": 0.0, "peft": LORA if peft is None else peft,
             **sections.pop("train", {})}
    return spec_from_dict(tiny_spec_dict(tiny_model, tmp_path / "runs", train=train, **sections),
                          source=str(tmp_path / "spec.yaml"))


def problems(raw: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as err:
        spec_from_dict(raw, source="spec.yaml")
    return str(err.value)


# ---- the spec -------------------------------------------------------------------------------------

def test_lora_settings_validate_at_the_edge():
    spec = spec_from_dict({**BASE, "train": {"peft": {}}})
    assert spec.train.peft.model_dump() == {"method": "lora", "r": 8, "alpha": 16.0, "dropout": 0.1,
                                            "target_modules": None}
    assert spec_from_dict(BASE).train.peft is None  # full fine-tuning unless asked
    for peft, needles in [
        ({"r": 0}, ("spec.yaml: train.peft.r", "greater than or equal to 1")),
        ({"r": "eight"}, ("train.peft.r", "'eight'")),
        ({"alpha": -1}, ("train.peft.alpha", "greater than 0")),
        ({"dropout": 1.0}, ("train.peft.dropout", "less than 1")),
        ({"method": "prefix"}, ("train.peft.method", "'lora'")),
        ({"rank": 8}, ("train.peft.rank", "unknown field")),
        ({"target_modules": []}, ("train.peft.target_modules", "at least one layer name")),
        ({"target_modules": ["query value"]}, ("train.peft.target_modules", "'query value' is not a module name")),
    ]:
        message = problems({**BASE, "train": {"peft": peft}})
        assert all(needle in message for needle in needles), (peft, message)


def test_lora_settings_can_be_searched_like_any_other(tmp_path):
    space = {"train.peft.r": {"choice": [4, 8, 16]}, "train.peft.alpha": {"uniform": [8, 32]}}
    spec = spec_from_dict({**BASE, "train": {"peft": {"r": 8}}, "search": {"space": space}})
    assert tune_space(spec)["train.peft.r"].categories == [4, 8, 16]
    assert seed_point(spec) == {"train.peft.r": 8, "train.peft.alpha": 16.0}  # the spec's own values first
    trial = spec.with_overrides({"train.peft.r": 16, "train.peft.alpha": 20.0})
    assert (trial.train.peft.r, trial.train.peft.alpha, trial.train.peft.dropout) == (16, 20.0, 0.1)
    assert "train.peft.r: Input should be greater" in str(pytest.raises(SpecError, spec.with_overrides,
                                                                        {"train.peft.r": 0}).value)
    # Searching a LoRA setting of a spec that trains every weight is refused, not a silent switch to LoRA.
    message = problems({**BASE, "search": {"space": {"train.peft.r": {"choice": [4, 8]}}}})
    assert "search.space.train.peft.r: train.peft is not set" in message and "peft: {method: lora}" in message
    assert "search.space.train.peft.rank: unknown spec path" in problems(
        {**BASE, "train": {"peft": {}}, "search": {"space": {"train.peft.rank": {"choice": [4]}}}})
    # On the command line, setting one LoRA field turns LoRA on with the other defaults.
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_spec(path, ["train.peft.r=4"]).train.peft.model_dump()["r"] == 4


def test_target_modules_must_name_layers_of_the_encoder(tiny_model, tmp_path):
    spec = lora_spec(tiny_model, tmp_path, {"target_modules": ["query", "qkv"]})
    with pytest.raises(SpecError) as err:
        prepare_data(spec)  # the driver's check, before any Ray work
    message = str(err.value)
    assert message.startswith(f"{spec.source}: train.peft.target_modules: 'qkv' matches no Linear layer")
    assert "its Linear layers are named dense, key, query, value" in message
    check_lora(lora_spec(tiny_model, tmp_path, {"target_modules": ["attention.output.dense", "key"]}))
    # A model type with no default of its own nor peft's: the field to set, and what to set it to.
    encoder = build_model(get_task(CLS), tiny_model, ["a", "b"], None).bert
    with pytest.raises(SpecError, match=r"train.peft.target_modules: model .* \(type 'made-up'\) has no default "
                                        r"LoRA targets; name the Linear layers to adapt, e\.g\. target_modules: "
                                        r"\[dense, key, query, value\]"):
        lora_targets(encoder, "made-up", lora_spec(tiny_model, tmp_path, {}))


# ---- what trains ----------------------------------------------------------------------------------

@pytest.mark.parametrize("task_name, labels, peft, adapted", [
    (CLS, ["negative", "positive"], LORA, 256 * 4),
    ("token-classification", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"], LORA, 256 * 4),
    # four Linear layers a layer, rank 2: 2 layers x 4 x 2 x 64
    (CLS, ["negative", "positive"], {"r": 2, "target_modules": ["query", "key", "value", "attention.output.dense"]},
     2 * 4 * 2 * 64),
])
def test_only_the_adapters_and_the_head_train(tiny_model, tmp_path, task_name, labels, peft, adapted):
    spec = lora_spec(tiny_model, tmp_path, peft, task=task_name, train={"metric": None})
    model = apply_lora(build_model(get_task(task_name), tiny_model, labels, 0.0), spec)
    trainable = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
    head = len(labels) * 32 + len(labels)
    assert sum(trainable.values()) == adapted + head
    assert all(".lora_A." in name or ".lora_B." in name or ".classifier.modules_to_save." in name
               for name in trainable), sorted(trainable)
    assert sum(p.numel() for p in model.parameters()) > 100 * sum(trainable.values())


def _run(spec, prepared, output: Path, resume_from: str | None = None, crash_after_first_checkpoint: bool = False):
    """The loop in this process, as `train.local` runs it; optionally dying once its first checkpoint
    is published (a lost worker), to be resumed from that checkpoint."""

    class Session(LocalSession):
        def report(self, metrics, checkpoint):
            super().report(metrics, checkpoint)
            if crash_after_first_checkpoint and checkpoint is not None:
                raise KeyboardInterrupt("the worker died")

    config = {"spec": spec.to_dict(), "data": prepared.arrays(), "label_names": prepared.splits.label_names,
              "tracking": None}
    return run_loop(config, Session(output, resume_from=resume_from))


@pytest.fixture(scope="module")
def lora_run(tiny_model, tmp_path_factory):
    """One uninterrupted 2-epoch LoRA run of the tiny model; its summary and best checkpoint."""
    tmp = tmp_path_factory.mktemp("lora-run")
    spec = lora_spec(tiny_model, tmp, train={"early_stopping_patience": None})
    prepared = prepare_data(spec)
    summary = _run(spec, prepared, tmp / "out")
    return spec, prepared, summary, tmp / "out" / "checkpoint"


def test_the_optimizer_holds_state_only_for_what_trains(lora_run):
    _, _, summary, checkpoint = lora_run
    assert summary["parameters"]["trainable"] == 256 * 4 + 66 == read_meta(checkpoint)["parameters"]["trainable"]
    state = load_training_state(checkpoint)["optimizer"]["state"]
    assert sum(s["exp_avg"].numel() for s in state.values()) == 256 * 4 + 66
    assert sum(s["exp_avg_sq"].numel() for s in state.values()) == 256 * 4 + 66


def test_the_encoder_keeps_its_pretrained_weights_while_the_adapters_and_head_move(lora_run, tiny_model):
    spec, prepared, _, checkpoint = lora_run
    pretrained = load_file(str(Path(tiny_model) / "model.safetensors"))
    merged = load_file(str(checkpoint / "model.safetensors"))
    adapter = load_file(str(checkpoint / ADAPTER_DIR / "adapter_model.safetensors"))
    scale = LORA["alpha"] / LORA["r"]
    adapted = 0
    for name, weight in pretrained.items():
        key = f"bert.{name}"
        if name.endswith(("query.weight", "value.weight")):
            # merged = pretrained + (alpha / r) B A: the frozen part is exactly the pretrained weight.
            lora = f"base_model.model.{key.removesuffix('.weight')}"
            a, b = adapter[f"{lora}.lora_A.weight"], adapter[f"{lora}.lora_B.weight"]
            assert b.abs().max() > 0, f"{name}: B starts at zero and must have moved"
            torch.testing.assert_close(merged[key], weight + scale * b @ a, rtol=0, atol=1e-6)
            assert not torch.equal(merged[key], weight)
            adapted += 1
        else:
            assert torch.equal(merged[key], weight), f"{name} changed: frozen weights must not"
    assert adapted == 4
    # The head trained: not the head it started from (same seed, same init), and the adapter's copy.
    torch.manual_seed(spec.train.seed)
    initial = build_model(get_task(CLS), tiny_model, prepared.splits.label_names, 0.0).classifier.weight
    assert not torch.allclose(merged["classifier.weight"], initial, atol=1e-3)
    assert torch.equal(merged["classifier.weight"], adapter["base_model.model.classifier.weight"])


def test_the_checkpoint_is_a_plain_model_answering_as_the_lora_model_does(lora_run, tiny_model):
    from transformers import AutoModelForSequenceClassification

    from tunefleet.train.predict import Predictor

    spec, prepared, _, checkpoint = lora_run
    assert not any(part in key for key in load_file(str(checkpoint / "model.safetensors"))
                   for part in ("lora_", "base_layer", "modules_to_save", "original_module", "base_model.model"))
    plain, info = AutoModelForSequenceClassification.from_pretrained(checkpoint, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    # The LoRA model in memory, as the run held it (rebuilt from the pretrained model and the adapter).
    lora = apply_lora(build_model(get_task(CLS), tiny_model, prepared.splits.label_names, 0.0), spec,
                      resume_from=str(checkpoint)).eval()
    texts = ["great value, would buy again", "it broke after a day", "not bad at all"]
    predictor = Predictor(checkpoint)
    batch = predictor.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = lora(**batch).logits
        torch.testing.assert_close(plain.eval()(**batch).logits, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(merged_copy(lora).eval()(**batch).logits, expected, rtol=0, atol=1e-5)
    answers = predictor.predict(texts)
    assert [a["label"] for a in answers] == [prepared.splits.label_names[i] for i in expected.argmax(-1).tolist()]


def test_a_lora_run_resumes_exactly_where_its_checkpoint_left_off(lora_run, tmp_path):
    spec, prepared, uninterrupted, _ = lora_run
    with pytest.raises(KeyboardInterrupt):
        _run(spec, prepared, tmp_path / "out", crash_after_first_checkpoint=True)
    checkpoint = tmp_path / "out" / "checkpoint"
    assert load_training_state(checkpoint)["next_epoch"] == 1 and (checkpoint / ADAPTER_DIR).is_dir()
    resumed = _run(spec, prepared, tmp_path / "resumed", resume_from=str(checkpoint))
    # Epoch 2 only, from the adapter, head, AdamW moments, schedule and RNG of epoch 1: the very
    # weights (adapters, head and the untouched pretrained ones) of the run that was never interrupted.
    assert [h["epoch"] for h in resumed["history"]] == [1.0, 2.0]
    assert resumed["weights_sha256"] == uninterrupted["weights_sha256"]
    assert [h["lr"] for h in resumed["history"]] == [h["lr"] for h in uninterrupted["history"]]


# ---- a sweep, registered --------------------------------------------------------------------------

@pytest.mark.slow
def test_a_lora_sweep_records_its_settings_and_registers_a_plain_model_that_predicts(
        tiny_model, tmp_path, ray_cluster, monkeypatch):
    from tunefleet import resolve_model, run_sweep
    from tunefleet.tracking.runs import client_for
    from tunefleet.train.predict import Predictor

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = lora_spec(tiny_model, tmp_path, train={"epochs": 1}, data={"format": "synthetic", "synthetic_size": 200},
                     tracking={"enabled": True, "uri": uri},
                     search={"algorithm": "grid", "scheduler": "none", "space": {"train.peft.r": {"grid": [2, 4]}}})
    summary = run_sweep(spec)
    assert summary["trials"]["completed"] == 2, summary["trials"]

    client = client_for(uri)
    parent = client.get_run(summary["mlflow"]["parent_run_id"])
    assert parent.data.tags["tunefleet.finetuning"] == "lora"
    assert parent.data.tags["tunefleet.peft"] == "r=4 alpha=8 dropout=0 target_modules=default"
    assert parent.data.params["train.peft.r"] == "4" and parent.data.params["train.peft.method"] == "lora"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    trained = {int(run.data.params["train.peft.r"]): int(run.data.metrics["trainable_parameters"]) for run in children}
    assert trained == {2: 256 * 2 + 66, 4: 256 * 4 + 66}

    version = summary["registered"]["version"]
    tags = client.get_model_version(spec.name, str(version)).tags
    best_r = json.loads(tags["tunefleet.spec"])["train"]["peft"]["r"]
    assert tags["tunefleet.finetuning"] == "lora" and tags["tunefleet.trainable_parameters"] == str(trained[best_r])
    registered = Path(resolve_model(f"{spec.name}/{version}", tracking_uri=uri).checkpoint)
    assert not (registered / ADAPTER_DIR).exists() and not (registered / STATE_FILE).exists()
    assert (registered / "model.safetensors").read_bytes() == (
        Path(summary["best"]["checkpoint"]) / "model.safetensors").read_bytes()
    answers = Predictor(registered).predict(["great value", "it broke after a day"])
    assert [set(a) for a in answers] == [{"label", "score"}] * 2
