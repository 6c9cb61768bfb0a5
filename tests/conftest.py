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
    import torch
    from transformers import BertConfig, BertModel

    from tunefleet.train.models import load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = load_tokenizer("bundled-minilm")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)  # the same tiny model every session: learning tests stay deterministic
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One local Ray for the suite. Four logical CPUs on two cores: tiny-model trials oversubscribe
    happily, and it lets a trial driver plus two workers fit."""
    import ray

    os.environ["TUNEFLEET_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    from tunefleet.cluster import init_ray

    init_ray(num_cpus=4)
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


def tiny_spec_dict(tiny_model: str, storage: Path, **sections) -> dict:
    """A spec for fast end-to-end runs: synthetic sentiment data, the tiny BERT, short sequences."""
    spec = {
        "name": "tiny",
        "task": "text-classification",
        "data": {"format": "synthetic", "synthetic_size": 200},
        "model": {"name_or_path": tiny_model, "max_length": 32},
        "train": {"epochs": 3, "batch_size": 16, "lr": 1.0e-3, "metric": "accuracy", "warmup_ratio": 0.0,
                  "early_stopping_patience": None},
        "resources": {"workers": 1, "cpus_per_worker": 1, "storage_path": str(storage)},
        "tracking": {"enabled": False},
    }
    for section, values in sections.items():
        spec[section] = {**spec.get(section, {}), **values} if isinstance(values, dict) else values
    return spec


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process, timeout: float = 180.0) -> None:
    """Poll `url` until it answers 200; fail early with the process's output if it dies."""
    import time

    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite backend, proxied artifacts) on a free loopback port; its URI."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    log = open(folder / "server.log", "w")
    process = subprocess.Popen(
        [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(process)
        log.close()


def stop_process_group(process) -> None:
    """End a server started with start_new_session=True, with the workers it forked."""
    import signal
    import subprocess

    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
