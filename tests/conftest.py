"""Shared fixtures: a tiny random BERT (real architecture, bundled tokenizer) and one local Ray
instance for the whole suite (Ray start-up costs seconds; every test that needs Ray shares it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Quiet, deterministic, and never reaching for the (unreachable) hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT with random weights and the bundled MiniLM tokenizer: same code path
    as the real model, a hundred times faster."""
    from transformers import BertConfig, BertModel

    from tunefleet._models import load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = load_tokenizer("bundled-minilm")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One local Ray for the suite. Four logical CPUs on two cores: tiny-model trials oversubscribe
    happily, and it lets a trial driver plus two workers fit."""
    import ray

    os.environ["TUNEFLEET_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TUNEFLEET_CACHE", str(tmp_path_factory.getbasetemp() / "tunefleet-cache"))


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (../shared/data is laid beside the project in CI)")
    return path
