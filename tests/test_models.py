"""Where models come from (train/models.py): a model that cannot be had fails at once, in one line naming
the model and the fix, before any Ray work; a checkpoint with another task's head gets a fresh head."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conftest import free_port
from tunefleet.tasks import get_task
from tunefleet.train.models import ModelError, available_model_path, build_model, load_tokenizer


def test_a_missing_local_folder_is_named_with_the_fix(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError) as info:
        load_tokenizer(str(missing))
    message = str(info.value)
    assert "\n" not in message
    assert str(missing) in message and "no such folder" in message


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        available_model_path(str(tmp_path))


def test_a_hub_id_while_offline_says_how_to_point_at_a_local_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        load_tokenizer("someone/model-that-is-not-cached")
    message = str(info.value)
    assert "'someone/model-that-is-not-cached' is not available here" in message
    assert "HF_HUB_OFFLINE" in message and "--local-dir DIR" in message and "model.name_or_path: DIR" in message


def test_an_unreachable_hub_is_reported_instead_of_retried(monkeypatch):
    """Without the probe, transformers retries for about 50 s before its OSError (measured here)."""
    port = free_port()  # nothing listens there: the connection is refused at once
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(ModelError) as info:
        load_tokenizer("bert-base-cased")
    assert f"127.0.0.1:{port} cannot be reached" in str(info.value)


def test_a_bad_model_path_fails_the_cli_with_exit_2_before_ray(tmp_path, monkeypatch, capsys):
    from tunefleet import cli
    from tunefleet.search import single
    from tunefleet.train import launch

    def forbidden(*args, **kwargs):
        raise AssertionError("Ray work started before the model was refused")

    monkeypatch.setattr(single, "start_ray", forbidden)
    monkeypatch.setattr(launch, "build_trainer", forbidden)
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\ntask: text-classification\ndata: {format: synthetic}\ntracking: {enabled: false}\n")
    code = cli.main(["train", str(spec), "--set", f"model.name_or_path={tmp_path / 'nope'}"])
    assert code == cli.EXIT_BAD_INPUT
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tunefleet: error:")]
    assert len(errors) == 1 and "no such folder" in errors[0]


def _checkpoint_with_head(tiny_model: str, folder: Path, labels: list[str]) -> Path:
    from tunefleet.train.checkpoint import save_checkpoint

    model = build_model(get_task("text-classification"), tiny_model, labels, None)
    meta = {"task": "text-classification", "model_class": "AutoModelForSequenceClassification",
            "label_names": labels}
    return save_checkpoint(folder, model, load_tokenizer(tiny_model), meta, None)


def test_a_checkpoint_with_another_heads_size_gets_a_fresh_head(tiny_model, tmp_path, caplog):
    source = _checkpoint_with_head(tiny_model, tmp_path / "three", ["a", "b", "c"])
    with caplog.at_level(logging.WARNING, logger="tunefleet"):
        model = build_model(get_task("text-classification"), str(source), ["neg", "pos"], None)
    assert model.classifier.out_features == 2
    assert model.config.id2label == {0: "neg", 1: "pos"}
    assert "head for 3 other labels (a, b, c)" in caplog.text and "2 labels (neg, pos)" in caplog.text


def test_a_head_of_the_same_size_for_other_labels_is_reinitialised(tiny_model, tmp_path):
    import torch

    source = _checkpoint_with_head(tiny_model, tmp_path / "xy", ["x", "y"])
    with torch.no_grad():
        saved = build_model(get_task("text-classification"), str(source), ["x", "y"], None)
        fresh = build_model(get_task("text-classification"), str(source), ["neg", "pos"], None)
    # Same labels: the checkpoint's head is kept (resuming); other labels: a new head, same encoder.
    assert not torch.equal(saved.classifier.weight, fresh.classifier.weight)
    assert torch.equal(saved.bert.embeddings.word_embeddings.weight, fresh.bert.embeddings.word_embeddings.weight)
    again = build_model(get_task("text-classification"), str(source), ["x", "y"], None)
    assert torch.equal(saved.classifier.weight, again.classifier.weight)
