"""Tests for the worker loop and what it stands on: atomic checkpoints, the tokenization cache, and
real Ray Train runs of the tiny model (it learns, two gloo workers stay in sync on disjoint shards,
a killed worker resumes exactly where the last checkpoint left off).

The Ray runs go through `trainer.build_trainer` with the loop wrapped by `_instrumented_loop`, which
calls the real `train_loop_per_worker` and records, per rank and per attempt, every report and the
summary the loop returns (Ray hands back only rank 0's return value).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tunefleet.search import single
from tunefleet.train import checkpoint as _checkpoint, launch as trainer
from tunefleet.train.batching import train_batches
from tunefleet.train.checkpoint import (
    IncompleteCheckpointError,
    load_for_inference,
    load_training_state,
    read_meta,
    save_checkpoint,
)
from tunefleet.train.models import build_model, load_tokenizer, resolve_precision
from tunefleet.train.tokenized import tokenize_splits
from tunefleet.data import load_data
from tunefleet.spec import DataConfig, Spec, spec_from_dict
from tunefleet.tasks import get_task
from tunefleet.train.loop import evaluate, train_loop_per_worker

CLS = "text-classification"
NER = "token-classification"


def spec_for(tiny_model: str, storage: Path, task: str = CLS, **sections: dict[str, Any]) -> Spec:
    """A small, fast spec: synthetic data, the tiny BERT, short sequences, no early stopping."""
    raw: dict[str, Any] = {
        "name": "tiny-" + task.split("-")[0],
        "task": task,
        "data": {"format": "synthetic", "synthetic_size": 600},
        "model": {"name_or_path": tiny_model, "max_length": 32},
        # The random 32-wide BERT needs a few hundred steps before it starts reading the reviews
        # (negations, "but"): small batches, no dropout, eight epochs. Tried on several random
        # inits of the tiny model: best validation accuracy 0.72-0.77, against ~0.5 untrained.
        "train": {"epochs": 8, "batch_size": 8, "lr": 2.0e-3, "dropout": 0.0, "warmup_ratio": 0.1,
                  "early_stopping_patience": None, "metric": "accuracy" if task == CLS else "f1"},
        "resources": {"workers": 1, "cpus_per_worker": 1, "storage_path": str(storage), "max_failures": 0},
        "tracking": {"enabled": False},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return spec_from_dict(raw)


# --------------------------------------------------------------------------------------------------
# Checkpoints


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    return (build_model(get_task("text-classification"), tiny_model, ["neg", "pos"], 0.1),
            load_tokenizer(tiny_model))


META = {"task": CLS, "model_class": "AutoModelForSequenceClassification", "label_names": ["neg", "pos"]}


def test_a_published_checkpoint_loads_for_inference(tmp_path, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    folder = save_checkpoint(tmp_path / "ckpt", model, tokenizer, META, {"next_epoch": 3})
    assert read_meta(folder)["label_names"] == ["neg", "pos"]
    loaded, _, meta = load_for_inference(folder)
    assert meta == META
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)
    assert load_training_state(folder) == {"next_epoch": 3}
    assert not (tmp_path / ".ckpt.partial").exists()


def test_a_crash_before_publishing_leaves_nothing_usable(tmp_path, model_and_tokenizer, monkeypatch):
    model, tokenizer = model_and_tokenizer

    def crash(*args):
        raise OSError("simulated crash between writing and publishing")

    monkeypatch.setattr(_checkpoint.os, "rename", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(tmp_path / "ckpt", model, tokenizer, META, {"next_epoch": 1})
    assert not (tmp_path / "ckpt").exists()
    with pytest.raises(IncompleteCheckpointError, match="tunefleet.json missing"):
        read_meta(tmp_path / "ckpt")
    with pytest.raises(IncompleteCheckpointError):
        load_for_inference(tmp_path / "ckpt")
    monkeypatch.undo()
    # The next save cleans the stale staging folder and publishes normally.
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, META, None)
    assert read_meta(tmp_path / "ckpt") == META
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_a_crash_mid_write_leaves_a_folder_that_is_refused(tmp_path, model_and_tokenizer, monkeypatch):
    model, tokenizer = model_and_tokenizer
    # Die while writing the training state: weights and tokenizer are on disk, the metadata is not.
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ckpt", model, tokenizer, META, {"next_epoch": 1})
    staging = tmp_path / ".ckpt.partial"
    assert (staging / "model.safetensors").is_file() and not (tmp_path / "ckpt").exists()
    for folder in (staging, tmp_path / "ckpt"):
        with pytest.raises(IncompleteCheckpointError, match=r"not a complete tunefleet checkpoint \(tunefleet.json missing\)"):
            load_for_inference(folder)


def test_a_folder_without_metadata_is_refused_with_a_clear_error(tmp_path, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    model.save_pretrained(tmp_path)  # a perfectly good HF folder, but never published by tunefleet
    with pytest.raises(IncompleteCheckpointError) as err:
        load_for_inference(tmp_path)
    assert str(tmp_path) in str(err.value) and "never published or its write was interrupted" in str(err.value)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_training_state_is_loaded_as_data_never_as_code(tmp_path):
    torch.save({"next_epoch": 2, "payload": _Payload()}, tmp_path / _checkpoint.STATE_FILE)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_training_state(tmp_path)
    assert load_training_state(tmp_path / "missing") is None


# --------------------------------------------------------------------------------------------------
# Tokenization cache


def test_second_tokenization_comes_from_the_cache_and_other_lengths_miss(tmp_path, tiny_model):
    splits = load_data(DataConfig(format="synthetic", synthetic_size=60), CLS)
    tokenizer = load_tokenizer(tiny_model)
    first, cached = tokenize_splits(splits, tokenizer, 32, cache=tmp_path)
    assert not cached
    again, cached = tokenize_splits(splits, tokenizer, 32, cache=tmp_path)
    assert cached
    for name in ("train", "validation", "test"):
        for key, array in first[name].to_arrays().items():
            np.testing.assert_array_equal(again[name].to_arrays()[key], array)
    assert not tokenize_splits(splits, tokenizer, 16, cache=tmp_path)[1]
    other = load_data(DataConfig(format="synthetic", synthetic_size=60, split_seed=1), CLS)
    assert not tokenize_splits(other, tokenizer, 32, cache=tmp_path)[1]
    # The same tokenizer object, last called with other settings, still hits (the key ignores the
    # truncation state the Rust tokenizer keeps); a tokenizer with another vocabulary misses.
    tokenizer(["a text"], truncation=True, max_length=8, padding="max_length")
    assert tokenize_splits(splits, tokenizer, 32, cache=tmp_path)[1]
    tokenizer.add_tokens(["zzqxv"])
    assert not tokenize_splits(splits, tokenizer, 32, cache=tmp_path)[1]
    assert len(list((tmp_path / "tokenized").glob("*.npz"))) == 4
    assert not list((tmp_path / "tokenized").glob(".*partial*"))


# --------------------------------------------------------------------------------------------------
# Real runs on Ray Train

# The instrumented loop below runs inside Ray workers: ship this module by value (the workers cannot
# import a test module).
import ray.cloudpickle  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _instrumented_loop(record_dir: str, crash_after_first_checkpoint: bool = False):
    """`train_loop_per_worker`, recording every report and every rank's summary under `record_dir`.

    With `crash_after_first_checkpoint`, the first attempt SIGKILLs its own worker process once Ray's
    controller has registered the first checkpoint (its snapshot file appears), as a machine loss
    would; a marker file keeps the second attempt from doing it again.
    """

    def loop(config: dict[str, Any]) -> dict[str, Any]:
        import ray.train
        import torch.distributed as dist

        record = Path(record_dir)
        attempt = 2 if (record / "crashed").exists() else 1
        rank = ray.train.get_context().get_world_rank()
        real_report = ray.train.report

        def report(metrics, checkpoint=None, **kwargs):
            _record_report(record, rank, attempt, metrics, checkpoint)
            real_report(metrics, checkpoint=checkpoint, **kwargs)
            if crash_after_first_checkpoint and checkpoint is not None and attempt == 1:
                snapshot = Path(ray.train.get_context().get_storage().checkpoint_manager_snapshot_path)
                deadline = time.monotonic() + 60
                while not snapshot.exists() and time.monotonic() < deadline:
                    time.sleep(0.2)
                (record / "crashed").touch()
                os.kill(os.getpid(), signal.SIGKILL)

        ray.train.report = report
        try:
            summary = train_loop_per_worker(config)
        finally:
            ray.train.report = real_report
        summary["backend"] = dist.get_backend() if dist.is_initialized() else None
        summary["world_size"] = ray.train.get_context().get_world_size()
        _record_summary(record, rank, attempt, summary)
        return summary

    return loop


def _record_report(record: Path, rank: int, attempt: int, metrics: dict[str, Any], checkpoint: Any) -> None:
    """One report as `reports` reads it back."""
    with open(record / f"reports-rank{rank}.jsonl", "a") as out:
        out.write(json.dumps({"attempt": attempt, "checkpoint": checkpoint is not None, **metrics}) + "\n")


def _record_summary(record: Path, rank: int, attempt: int, loop_summary: dict[str, Any]) -> None:
    """What the loop returned, as `summary` reads it back."""
    (record / f"summary-rank{rank}-attempt{attempt}.json").write_text(json.dumps(loop_summary))


def fit(spec: Spec, record_dir: Path, crash: bool = False) -> tuple[Any, trainer.PreparedData]:
    import ray

    record_dir.mkdir(parents=True, exist_ok=True)
    prepared = trainer.prepare_data(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "train_loop_per_worker", _instrumented_loop(str(record_dir), crash))
        run = trainer.build_trainer(spec, ray.put(prepared.arrays()), prepared.splits.label_names,
                                    f"{spec.name}-{record_dir.name}")
    return run.fit(), prepared


def reports(record_dir: Path, rank: int = 0) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (record_dir / f"reports-rank{rank}.jsonl").read_text().splitlines()]


def summary(record_dir: Path, rank: int = 0, attempt: int = 1) -> dict[str, Any]:
    return json.loads((record_dir / f"summary-rank{rank}-attempt{attempt}.json").read_text())


def untrained_scores(spec: Spec, prepared: trainer.PreparedData) -> dict[str, Any]:
    """The validation scores of the model the run starts from (same seed, fresh head)."""
    task = get_task(spec.task)
    torch.manual_seed(spec.train.seed)
    model = build_model(task, spec.model.name_or_path, prepared.splits.label_names,
                        spec.train.dropout)
    return evaluate(model, prepared.tokenized["validation"], task, prepared.splits.label_names, 32,
                    torch.device("cpu"), resolve_precision("auto", "cpu"),
                    load_tokenizer(spec.model.name_or_path).pad_token_id)


def expected_seen(spec: Spec, split, rank: int, world: int, epochs: range) -> tuple[str, int]:
    """What `_Seen` must report for a rank that trained on exactly its `train_batches` shards."""
    digest, count = hashlib.sha256(), 0
    for epoch in epochs:
        for batch in train_batches(split, spec.train.batch_size, spec.train.seed, epoch, rank, world,
                                   spec.train.group_by_length):
            digest.update(np.asarray(batch, dtype=np.int64).tobytes())
            count += len(batch)
    return digest.hexdigest(), count


@pytest.fixture(scope="module")
def classifier_run(ray_cluster, tiny_model, tmp_path_factory):
    """One uninterrupted run: the learning check and the reference for the resume test."""
    tmp = tmp_path_factory.mktemp("classifier")
    spec = spec_for(tiny_model, tmp / "runs")
    result, prepared = fit(spec, tmp / "record")
    return spec, result, prepared, tmp / "record"


@pytest.mark.slow
def test_training_improves_the_validation_metric_over_the_untrained_model(classifier_run):
    spec, result, prepared, record = classifier_run
    assert result.error is None
    before = untrained_scores(spec, prepared)
    with result.checkpoint.as_directory() as folder:
        after = trainer.score_checkpoint(folder, prepared.tokenized["validation"])
        assert read_meta(folder)["validation"]["accuracy"] == pytest.approx(after["accuracy"])
    # The untrained model guesses one class (accuracy ~0.5, macro-F1 ~0.33); trained, it reaches
    # 0.72-0.77 (the data has ~7% label noise).
    assert after["accuracy"] >= before["accuracy"] + 0.15, (before["accuracy"], after["accuracy"])
    assert after["f1"] >= before["f1"] + 0.25
    assert after["loss"] < before["loss"]
    history = result.return_value["history"]
    assert [h["epoch"] for h in history] == [float(e) for e in range(1, spec.train.epochs + 1)]
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.slow
def test_ner_training_improves_entity_f1(ray_cluster, tiny_model, tmp_path):
    spec = spec_for(tiny_model, tmp_path / "runs", task=NER, data={"synthetic_size": 300}, train={"epochs": 4})
    prepared = trainer.prepare_data(spec)
    before = untrained_scores(spec, prepared)
    out = single.run_train(spec)
    after = out["metrics"]["validation"]
    # Untrained: ~0.05 entity F1; trained: ~0.9.
    assert after["f1"] >= before["f1"] + 0.5, (before["f1"], after["f1"])
    assert set(after["report"]) == {"PER", "LOC", "ORG"}
    assert out["metrics"]["test"]["f1"] >= before["f1"] + 0.5


@pytest.mark.slow
def test_two_gloo_workers_train_disjoint_shards_and_end_identical(ray_cluster, tiny_model, tmp_path):
    spec = spec_for(tiny_model, tmp_path / "runs", train={"epochs": 2}, resources={"workers": 2})
    result, prepared = fit(spec, tmp_path / "record")
    assert result.error is None
    ranks = [summary(tmp_path / "record", rank) for rank in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in ranks)
    # DDP kept the replicas bit-identical.
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    # Each rank trained on exactly the shard train_batches gives it, and the shards are disjoint.
    train = prepared.tokenized["train"]
    for r in ranks:
        assert (r["seen_sha256"], r["examples_seen"]) == expected_seen(spec, train, r["rank"], 2, range(2))
    assert ranks[0]["seen_sha256"] != ranks[1]["seen_sha256"]
    assert ranks[0]["examples_seen"] == ranks[1]["examples_seen"]
    shards = [set(np.concatenate(train_batches(train, 8, 0, 0, rank, 2, True)).tolist()) for rank in (0, 1)]
    assert shards[0].isdisjoint(shards[1]) and len(shards[0] | shards[1]) > 0.9 * len(train)
    # Gathered evaluation: both ranks computed the same validation metric at every epoch.
    metrics = [[(h["epoch"], h["val_accuracy"], h["val_loss"]) for h in reports(tmp_path / "record", rank)]
               for rank in (0, 1)]
    assert metrics[0] == metrics[1] and len(metrics[0]) == 2


@pytest.mark.slow
def test_a_killed_worker_resumes_from_the_checkpoint_where_it_left_off(classifier_run, tiny_model, tmp_path):
    spec_ref, _, _, reference = classifier_run
    spec = spec_for(tiny_model, tmp_path / "runs", resources={"max_failures": 1})
    assert spec.train == spec_ref.train
    result, prepared = fit(spec, tmp_path / "record", crash=True)
    assert result.error is None and (tmp_path / "record" / "crashed").exists()

    seen = reports(tmp_path / "record")
    steps = len(train_batches(prepared.tokenized["train"], 8, 0, 0, 0, 1, True))  # per epoch
    # Attempt 1 published epoch 1 and died; attempt 2 went on with epoch 2 instead of starting over,
    # with the step counter (early-stopping progress) and the schedule (lr) carried over.
    assert [(r["attempt"], r["epoch"], r["step"]) for r in seen] == [
        (1, 1.0, steps)] + [(2, float(epoch), epoch * steps) for epoch in range(2, spec.train.epochs + 1)]
    uninterrupted = reports(reference)
    assert [r["lr"] for r in seen] == [r["lr"] for r in uninterrupted]
    assert [h["epoch"] for h in result.return_value["history"]] == [float(e) for e in range(1, spec.train.epochs + 1)]
    # The resumed attempt trained on epochs 2.. only, and ended with exactly the weights of the
    # uninterrupted run: weights, AdamW moments, schedule and RNG were all restored.
    resumed = summary(tmp_path / "record", attempt=2)
    assert (resumed["seen_sha256"], resumed["examples_seen"]) == expected_seen(
        spec, prepared.tokenized["train"], 0, 1, range(1, spec.train.epochs))
    assert resumed["weights_sha256"] == summary(reference)["weights_sha256"]


# --------------------------------------------------------------------------------------------------
# One worker in one Ray task (`tunefleet train`'s path for one worker, no Ray Train)


def _instrumented_task_loop(record_dir: str, crash_after_first_checkpoint: bool = False):
    """`run_loop` for `trainer.fit_in_task`, recording every report and each attempt's summary under
    `record_dir`; with `crash_after_first_checkpoint` the first attempt SIGKILLs its own process once
    its session has kept the first checkpoint, as a machine loss would."""

    def loop(config: dict[str, Any], session: Any) -> dict[str, Any]:
        from tunefleet.train.loop import run_loop

        record = Path(record_dir)
        attempt = 2 if (record / "crashed").exists() else 1
        real_report = session.report

        def report(metrics, checkpoint):
            _record_report(record, 0, attempt, metrics, checkpoint)
            real_report(metrics, checkpoint)
            if crash_after_first_checkpoint and checkpoint is not None and attempt == 1:
                (record / "crashed").touch()
                os.kill(os.getpid(), signal.SIGKILL)

        session.report = report
        summary = run_loop(config, session)
        _record_summary(record, 0, attempt, summary)
        return summary

    return loop


def fit_in_task(spec: Spec, record_dir: Path, crash: bool = False) -> tuple[dict[str, Any], trainer.PreparedData]:
    import ray

    record_dir.mkdir(parents=True, exist_ok=True)
    prepared = trainer.prepare_data(spec)
    summary = trainer.fit_in_task(spec, ray.put(prepared.arrays()), prepared.splits.label_names,
                                  f"{spec.name}-{record_dir.name}", None,
                                  loop=_instrumented_task_loop(str(record_dir), crash))
    return summary, prepared


@pytest.mark.slow
def test_a_one_worker_task_killed_mid_run_resumes_and_ends_like_the_uninterrupted_ray_train_run(
        classifier_run, tiny_model, tmp_path):
    spec_ref, _, _, reference = classifier_run
    spec = spec_for(tiny_model, tmp_path / "runs", resources={"max_failures": 1})
    assert trainer.trains_in_task(spec) and spec.train == spec_ref.train
    result, prepared = fit_in_task(spec, tmp_path / "record", crash=True)
    assert (tmp_path / "record" / "crashed").exists()

    seen = reports(tmp_path / "record")
    steps = len(train_batches(prepared.tokenized["train"], 8, 0, 0, 0, 1, True))  # per epoch
    # Ray ran the task again after its process was killed; attempt 2 resumed from the checkpoint of
    # epoch 1 with the step counter and the schedule carried over, as Ray Train's restart does.
    assert [(r["attempt"], r["epoch"], r["step"]) for r in seen] == [
        (1, 1.0, steps)] + [(2, float(epoch), epoch * steps) for epoch in range(2, spec.train.epochs + 1)]
    assert [r["lr"] for r in seen] == [r["lr"] for r in reports(reference)]
    # The same loop in a plain Ray task, killed and resumed, ends with exactly the weights of the
    # uninterrupted run on Ray Train.
    assert summary(tmp_path / "record", attempt=2)["weights_sha256"] == summary(reference)["weights_sha256"]
    # The run's folder holds the best checkpoint (the highest validation accuracy reported), and the
    # test metrics are that checkpoint's.
    assert result["checkpoint"] == str(tmp_path / "runs" / f"{spec.name}-record" / "checkpoint")
    best = max(r["val_accuracy"] for r in seen)
    assert result["validation"]["accuracy"] == pytest.approx(best)
    assert read_meta(result["checkpoint"])["epoch"] == next(r["epoch"] for r in seen if r["val_accuracy"] == best)
    assert result["test"]["accuracy"] == pytest.approx(
        trainer.score_checkpoint(result["checkpoint"], prepared.tokenized["test"])["accuracy"])


@pytest.mark.slow
def test_a_one_worker_task_killed_with_no_retries_left_fails_naming_max_failures(ray_cluster, tiny_model, tmp_path):
    spec = spec_for(tiny_model, tmp_path / "runs", train={"epochs": 2}, resources={"max_failures": 0})
    with pytest.raises(trainer.TrainingFailed, match=r"failed 1 time\(s\) \(resources.max_failures: 0\)") as failed:
        fit_in_task(spec, tmp_path / "record", crash=True)
    # Its checkpoint of epoch 1 is kept, and named in the error.
    kept = tmp_path / "runs" / f"{spec.name}-record" / "checkpoint"
    assert str(kept) in str(failed.value) and read_meta(kept)["epoch"] == 1.0
    assert [r["attempt"] for r in reports(tmp_path / "record")] == [1]


@pytest.mark.parametrize("grad, max_norm, expected", [
    # |g| = 5 > 1: clipped to [0.6, 0.8]. Fused AdamW's first step with lr 1, eps 1, no decay moves each
    # weight by -g / (|g| + 1): -0.6 / 1.6 and -0.8 / 1.8.
    ([3.0, 4.0], 1.0, [-0.6 / 1.6, -0.8 / 1.8]),
    # |g| = 0.5 < 1: untouched, -0.3 / 1.3 and -0.4 / 1.4.
    ([0.3, 0.4], 1.0, [-0.3 / 1.3, -0.4 / 1.4]),
    # No clipping asked: -3 / 4 and -4 / 5.
    ([3.0, 4.0], None, [-3.0 / 4.0, -4.0 / 5.0]),
])
def test_clipping_folded_into_the_fused_step_is_clip_grad_norm(grad, max_norm, expected):
    from tunefleet.train.loop import clip_in_step

    weight = torch.nn.Parameter(torch.zeros(2))
    weight.grad = torch.tensor(grad)
    optimizer = torch.optim.AdamW([weight], lr=1.0, eps=1.0, weight_decay=0.0, fused=True)
    norm = clip_in_step(optimizer, [weight], max_norm)
    optimizer.step()
    assert norm.item() == pytest.approx(float(np.hypot(*grad)))
    assert weight.detach().tolist() == pytest.approx(expected, rel=1e-5)


def test_the_validation_loss_is_the_mean_over_labelled_tokens_whatever_the_batches(tmp_path):
    """The lexicon model (conftest) gives every piece its tag with probability exactly 3/4, so a token
    whose gold tag is that one costs ln(4/3) and any other gold tag ln(4 (L-1)) = ln 8 with L = 3
    labels. A: "john" tagged B-PER (right), B: "the" tagged B-PER (wrong), C: four words tagged O
    (right). Over the 6 labelled tokens: (5 ln(4/3) + ln 8) / 6 = 0.5863. Evaluated in batches
    [A, B] and [C], weighting each batch's mean by its examples gave (2 ln(4/3) + ln 8) / 3 = 0.8849."""
    from conftest import lexicon_ner_checkpoint

    from tunefleet.data import Examples
    from tunefleet.train import loop
    from tunefleet.train.checkpoint import load_for_inference

    labels = ["O", "B-PER", "I-PER"]
    model, tokenizer, _ = load_for_inference(lexicon_ner_checkpoint(tmp_path / "ner", labels, {"john": "B-PER"}))
    task = get_task("token-classification")
    split = task.tokenize(Examples(None, [["john"], ["the"], ["the", "cat", "sat", "down"]],
                                   [["B-PER"], ["B-PER"], ["O", "O", "O", "O"]]), tokenizer, labels, 32)
    expected = (5 * np.log(4 / 3) + np.log(8)) / 6
    for batch_size in (1, 2):  # evaluation batches of 2: [A, B], [C]; then of 4: all three in one
        scores = loop.evaluate(model, split, task, labels, batch_size, torch.device("cpu"), "fp32", tokenizer.pad_token_id)
        assert scores["loss"] == pytest.approx(expected, rel=1e-4)


def test_every_labelled_token_weighs_the_same_in_the_training_loss_whatever_batch_it_is_in(tmp_path):
    """The lexicon model (as above) trains one epoch on four sentences in two batches of two, all in
    one optimizer step (accumulation over both batches, no dropout), so both batches' losses are taken
    at the lexicon's weights and the epoch's train_loss is worked out by hand. With x = ln(4/3) (a
    right tag) and y = ln 8 (a wrong one): A "john" B-PER (x), B "the" B-PER (y), C "the cat" (2x),
    D "the cat sat down on it" (6x). Over the 10 labelled tokens: (9x + y) / 10 = 0.4669, the
    gradient's weighting too, since the reported loss is the very tensor backpropagated. A mean of
    the two batches' means gives 0.7356 ({A,B} {C,D}), 0.4156 ({A,C} {B,D}) or 0.5862 ({A,D} {B,C}):
    one-word batches would weigh as much as long ones. Without length grouping (which would always
    pair A with B) the three seeds below shuffle the sentences into those three pairings."""
    from conftest import lexicon_ner_checkpoint

    from tunefleet.train.local import train_local

    model = lexicon_ner_checkpoint(tmp_path / "lexicon", ["O", "B-PER", "I-PER"], {"john": "B-PER"})
    sentences = [("john", "B-PER"), ("the", "B-PER"), ("the cat", "O O"), ("the cat sat down on it", "O O O O O O")]
    conll = "".join("".join(f"{w} {t}\n" for w, t in zip(words.split(), tags.split())) + "\n" for words, tags in sentences)
    for name in ("train", "validation", "test"):
        (tmp_path / f"{name}.txt").write_text(conll)
    x, y = np.log(4 / 3), np.log(8)
    pairings = set()
    for seed in (0, 1, 4):
        spec = spec_from_dict({
            "name": "token-weights", "task": NER,
            "data": {"format": "conll", **{name: str(tmp_path / f"{name}.txt") for name in ("train", "validation", "test")}},
            "model": {"name_or_path": model, "max_length": 32},
            "train": {"epochs": 1, "batch_size": 2, "grad_accum_steps": 2, "dropout": 0.0, "seed": seed,
                      "precision": "fp32", "group_by_length": False, "early_stopping_patience": None},
            "resources": {"workers": 1, "cpus_per_worker": 1, "storage_path": str(tmp_path / "runs")},
            "tracking": {"enabled": False},
        })
        prepared = trainer.prepare_data(spec)
        batches = train_batches(prepared.tokenized["train"], 2, seed, 0, 0, 1, False)
        pairings.add(frozenset(frozenset(b.tolist()) for b in batches))
        history = train_local(spec, tmp_path / f"run-{seed}", prepared=prepared)["history"]
        assert history[0]["train_loss"] == pytest.approx((9 * x + y) / 10, rel=1e-4)
    assert len(pairings) == 3  # every way of pairing four sentences, one loss


def test_a_token_task_trains_on_packed_batches_as_on_the_same_batches_padded(tiny_model, tmp_path):
    """With packing (the default for token tasks) an epoch of NER on the tiny BERT takes the very
    batches that random padded batching takes, and without dropout ends with the same training loss,
    validation loss and F1, to fp32 rounding. Length grouping is on in the spec: packing leaves it
    out, since grouped batches would be different batches."""
    from tunefleet.train.local import train_local
    from tunefleet.train.packing import layout

    runs = {}
    for name, train in {"packed": {}, "random": {"pack_sequences": False, "group_by_length": False},
                        "grouped": {"pack_sequences": False}}.items():
        spec = spec_for(tiny_model, tmp_path / "runs", task=NER, data={"synthetic_size": 96},
                        train={"epochs": 2, "batch_size": 16, "group_by_length": True, **train})
        runs[name] = train_local(spec, tmp_path / name)
    # The synthetic sentences (8 to 21 tokens) do share rows: fewer rows than sentences in a batch.
    split = trainer.prepare_data(spec).tokenized["train"]
    assert any(len(layout(split.lengths()[b])[0]) < len(b) for b in train_batches(split, 16, 0, 0, 0, 1, False))
    assert [runs[name]["batching"] for name in runs] == ["packed", "random", "length-grouped"]
    packed, padded = runs["packed"]["history"], runs["random"]["history"]
    for a, b in zip(packed, padded, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        assert a["val_f1"] == pytest.approx(b["val_f1"], abs=1e-6)
    # Grouped batches are other batches: a different loss (this is what makes the comparison above mean something).
    assert runs["grouped"]["history"][0]["train_loss"] != pytest.approx(packed[0]["train_loss"], rel=1e-4)


def test_a_model_that_cannot_take_packed_rows_trains_on_padded_batches_and_says_so(tmp_path, capsys):
    """DeBERTa-v3 builds its relative positions over the whole row, so the loop's check refuses
    packing for it: the run trains on length-grouped padded batches and prints why."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_families import FAMILIES

    from tunefleet.train.local import train_local

    family = FAMILIES["deberta-v3"]
    tokenizer = family.make_tokenizer()
    torch.manual_seed(0)
    family.make_model(tokenizer).save_pretrained(tmp_path / "deberta")
    tokenizer.save_pretrained(tmp_path / "deberta")
    sentences = ["Anna Nowak visited Lyon .", "Lyon .", "Anna visited .", "Nowak visited Anna in Lyon today ."]
    tags = {"Anna": "B-PER", "Nowak": "I-PER", "Lyon": "B-LOC"}
    conll = "".join("".join(f"{w} {tags.get(w, 'O')}\n" for w in s.split()) + "\n" for s in sentences)
    for name in ("train", "validation", "test"):
        (tmp_path / f"{name}.txt").write_text(conll)
    spec = spec_for(str(tmp_path / "deberta"), tmp_path / "runs", task=NER,
                    data={"format": "conll", **{name: str(tmp_path / f"{name}.txt") for name in ("train", "validation", "test")}},
                    train={"epochs": 1, "batch_size": 2})
    summary = train_local(spec, tmp_path / "run")
    assert summary["batching"] == "length-grouped"
    assert "train.pack_sequences: this model does not take packed rows" in capsys.readouterr().out


@pytest.mark.slow
def test_ctrl_c_during_a_one_worker_task_cancels_its_training(ray_cluster, tiny_model, tmp_path):
    import _thread
    import threading

    # Many epochs of the tiny model (0.2-1 s each): the run is far from done when the interrupt
    # comes after its first report.
    spec = spec_for(tiny_model, tmp_path / "runs", train={"epochs": 100})
    kept = tmp_path / "runs" / f"{spec.name}-record" / "reports.jsonl"

    def press_ctrl_c_after_the_first_report() -> None:
        deadline = time.monotonic() + 120
        while not kept.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        _thread.interrupt_main()  # what Ctrl-C does to the driver waiting in ray.get

    # Python's own Ctrl-C handler, as the `tunefleet` command has: pytest-xdist's worker processes
    # ignore SIGINT, and `interrupt_main` does nothing where it is ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=press_ctrl_c_after_the_first_report, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            fit_in_task(spec, tmp_path / "record")
    finally:
        signal.signal(signal.SIGINT, previous)
    # The task was cancelled: no epoch is reported after a few seconds more, far fewer than the 100 planned.
    time.sleep(1.0)
    reported = len(kept.read_text().splitlines())
    time.sleep(4.0)
    assert len(kept.read_text().splitlines()) == reported < 50


@pytest.mark.parametrize("workers, runner, storage, in_task", [
    (1, "auto", "runs", True),
    (1, "in_trial", "runs", True),
    (1, "ray_train", "runs", False),  # asked for Ray Train
    (2, "auto", "runs", False),  # several workers need Ray Train's worker group
    (1, "auto", "s3://bucket/runs", False),  # Ray Train uploads checkpoints to a URI; the task writes a folder
])
def test_which_runs_train_in_one_ray_task(tiny_model, tmp_path, workers, runner, storage, in_task):
    spec = spec_for(tiny_model, tmp_path / storage if "://" not in storage else storage,
                    resources={"workers": workers}, search={"trial_runner": runner})
    assert trainer.trains_in_task(spec) is in_task
