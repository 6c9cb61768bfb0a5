"""Sweeps with second objectives (`search.objectives`, `search/pareto.py`): the Pareto front worked
out by hand on made-up trials, the constraint that decides what is registered, the spec's check, and a
small real sweep over two model sizes whose parameter counts are counted here with torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tiny_spec_dict
from tunefleet.search.pareto import pareto_front, within
from tunefleet.search.results import TrialRecord, pick_best
from tunefleet.spec import SpecError, spec_from_dict


def _trial(name: str, value: float | None, latency: float | None, checkpoint: str | None = None) -> TrialRecord:
    return TrialRecord(trial_id=name, config={}, status="completed", best_value=value, checkpoint=checkpoint,
                       objectives={} if latency is None else {"latency_ms": latency})


# F1 against latency. Hand-worked: b (0.80, 30 ms) dominates d (0.75, 35 ms); e (0.80, 40 ms) is
# dominated by b (same F1, slower); a, b, c trade F1 for speed, so the front is a, b, c by F1.
TRIALS = [_trial("a", 0.90, 50.0), _trial("b", 0.80, 30.0), _trial("c", 0.60, 10.0), _trial("d", 0.75, 35.0),
          _trial("e", 0.80, 40.0), _trial("unmeasured", 0.95, None), _trial("failed", None, 5.0)]


def test_the_front_holds_the_trials_nothing_beats_on_both():
    assert [t.trial_id for t in pareto_front(TRIALS, "max", ["latency_ms"])] == ["a", "b", "c"]
    # For a metric where lower is better (a loss), the same numbers give another front: c is then
    # best on both, and dominates everything.
    assert [t.trial_id for t in pareto_front(TRIALS, "min", ["latency_ms"])] == ["c"]


def test_the_registered_trial_is_the_best_within_the_constraints(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "tunefleet.json").write_text("{}")  # a complete checkpoint, as pick_best requires
    trials = [_trial(t.trial_id, t.best_value, t.objectives.get("latency_ms"), str(folder)) for t in TRIALS]
    assert pick_best(trials, "max").trial_id == "unmeasured"  # no constraint: the best F1
    assert pick_best(trials, "max", {"latency_ms": 30.0}).trial_id == "b"  # a is too slow; b exactly at the bound
    assert pick_best(trials, "max", {"latency_ms": 29.9}).trial_id == "c"
    assert pick_best(trials, "max", {"latency_ms": 1.0}) is None
    assert not within(trials[5], {"latency_ms": 1000.0})  # unmeasured never counts as within


def test_a_constraint_on_an_unmeasured_objective_is_refused_with_the_fix(tiny_model, tmp_path):
    with pytest.raises(SpecError, match=r"add them to search.objectives, e.g. objectives: \['latency_ms'\]"):
        spec_from_dict(tiny_spec_dict(tiny_model, tmp_path, search={"constraints": {"latency_ms": 20}}))
    with pytest.raises(SpecError, match="search.objectives"):
        spec_from_dict(tiny_spec_dict(tiny_model, tmp_path, search={"objectives": ["flops"]}))


@pytest.mark.slow
def test_a_small_sweep_reports_its_pareto_front_and_registers_within_the_constraint(tiny_model, tmp_path, ray_cluster):
    """Two models: the tiny BERT (2 layers, 32 wide) and a wider one (2 layers, 64 wide). With
    `parameters` capped at the tiny one's count, the wider one may be on the front but is never
    registered, whatever it scores."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    from tunefleet.search.sweep import run_sweep
    from tunefleet.train.models import load_tokenizer

    wide = tmp_path / "wide-bert"
    tokenizer = load_tokenizer(tiny_model)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128, max_position_embeddings=128)).save_pretrained(wide)
    tokenizer.save_pretrained(wide)
    # The served models' sizes, counted here: the encoder plus the two-class head.
    sizes = {str(path): sum(p.numel() for p in BertForSequenceClassification.from_pretrained(path, num_labels=2).parameters())
             for path in (tiny_model, str(wide))}
    assert sizes[str(wide)] > sizes[tiny_model]

    spec = spec_from_dict(tiny_spec_dict(
        tiny_model, tmp_path / "runs", name="pareto", train={"epochs": 2, "lr": 3.0e-3},
        search={"algorithm": "grid", "scheduler": "none",
                "space": {"model.name_or_path": {"grid": [tiny_model, str(wide)]}},
                "objectives": ["parameters", "latency_ms"], "constraints": {"parameters": sizes[tiny_model]}}))
    summary = run_sweep(spec)

    trials = {t["config"]["model.name_or_path"]: t for t in json.loads((Path(summary["storage"]) / "trials.json").read_text())}
    for path, size in sizes.items():
        assert trials[path]["objectives"]["parameters"] == size
        assert 0.0 < trials[path]["objectives"]["latency_ms"] < 1000.0
    pareto = summary["pareto"]
    assert pareto["objectives"] == ["parameters", "latency_ms"] and pareto["within_constraints"] == 1
    front_ids = {entry["trial_id"] for entry in pareto["front"]}
    small, large = trials[tiny_model], trials[str(wide)]
    # Nothing has fewer parameters than the tiny model, so nothing dominates it; the wide one is on
    # the front only if it beats the tiny one on the metric or on latency.
    assert small["trial_id"] in front_ids
    wide_earns_its_place = (large["best_value"] > small["best_value"]
                            or large["objectives"]["latency_ms"] < small["objectives"]["latency_ms"])
    assert (large["trial_id"] in front_ids) == wide_earns_its_place
    assert summary["best"]["config"]["model.name_or_path"] == tiny_model  # the only one within the cap
    assert (Path(summary["storage"]) / "pareto.png").stat().st_size > 5000


def test_the_janitor_keeps_the_best_checkpoint_within_the_constraints(tmp_path):
    """Trial a (accuracy 0.7, 5 ms) then b (0.9, 50 ms), capped at 20 ms: b is better but can never
    be registered, so b loses its checkpoint and a keeps its own; without the cap, the reverse."""
    from types import SimpleNamespace

    from tunefleet.search.janitor import checkpoint_janitor

    for constraints, kept, dropped in (({"latency_ms": 20.0}, "a", "b"), (None, "b", "a")):
        folder = tmp_path / ("capped" if constraints else "free")
        for name in "ab":
            (folder / name / "checkpoint_000000").mkdir(parents=True)
        # Tune's saved state has both ended: only then may the janitor remove a checkpoint.
        (folder / "experiment_state-1.json").write_text(json.dumps({"trial_data": [
            [json.dumps({"trial_id": name, "status": "TERMINATED"}), "{}"] for name in "ab"]}))
        janitor = checkpoint_janitor(folder, "val_accuracy", "max", keep_stopped=False, constraints=constraints)
        for name, value, latency in (("a", 0.7, 5.0), ("b", 0.9, 50.0)):
            result = {"val_accuracy": value, "best_val_accuracy": value, "latency_ms": latency, "epoch": 1,
                      "planned_epochs": 1}
            trial = SimpleNamespace(trial_id=name, last_result=result, config={"train.epochs": 1})
            janitor.on_trial_result(0, [], trial, result)
            janitor.on_trial_complete(0, [], trial)
        assert (folder / kept / "checkpoint_000000").is_dir(), (constraints, kept)
        assert not (folder / dropped / "checkpoint_000000").exists(), (constraints, dropped)
