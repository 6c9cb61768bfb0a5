"""Shared fixtures: a tiny random BERT (real architecture, bundled tokenizer), a hand-built NER model
whose answers are known in advance, and one local Ray instance for the whole suite (Ray start-up
costs seconds; every test that needs Ray shares it).

Under `CI=true` (how CI runs `.ci/run`) a skipped test is a failed one: there, a missing data set or
package is a broken environment to fix, not a reason to pass quietly.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CI = os.environ.get("CI") == "true"

# Quiet, deterministic, and never reaching for the (unreachable) hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# torch's OpenMP threads wait for work by spinning. The suite runs two test processes, each with its
# own Ray, on 2 cores, so a training process's threads rarely have the cores to themselves, and a
# thread spinning at a barrier keeps the one it waits for off the CPU: the real-MiniLM test took
# 207 s beside one busy core instead of 72 s with passive waiting (benchmarks/RESULTS.md). Set here,
# before torch loads, it reaches this process, the Ray it starts and every subprocess. Not a product
# default: on an idle machine spinning is faster (7-26% more training tokens/s, fp32 and bf16).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Ray starts idle worker processes ahead of demand (one per CPU when a driver connects, more when
# tasks queue). The suite starts a dozen Ray clusters (its own two, and every `tunefleet sweep`
# subprocess's), whose trials run in actors that mostly start workers of their own, so many of those
# workers (~1.2 CPU-s each) never ran anything. Off, test_extend + the searcher contracts took
# 147 and 143 CPU-s against 153 and 171 with it (benchmarks/RESULTS.md).
os.environ.setdefault("RAY_enable_worker_prestart", "0")
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")


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
def ray_cluster(_session_cache):
    """One local Ray for the suite. Four logical CPUs on two cores: tiny-model trials oversubscribe
    happily, and it lets a trial driver plus two workers fit."""
    import ray

    from tunefleet.cluster import init_ray

    init_ray(num_cpus=4)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """tunefleet's cache (tokenized splits, downloaded checkpoints) in this session's temp folder, set
    before any other fixture runs and inherited by the suite's Ray workers. Never ~/.cache/tunefleet:
    its keys cover data, tokenizer and length but not tunefleet's code, so an entry written by an
    older version would be read back as if current."""
    os.environ["TUNEFLEET_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _isolated_cache(_session_cache, tmp_path_factory, monkeypatch):
    """Each test its own cache in this process, so none reads what another test left there."""
    monkeypatch.setenv("TUNEFLEET_CACHE", str(tmp_path_factory.mktemp("cache")))


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data. Missing, it skips the test, or fails it under CI=true."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"{path} not present (../shared/data is laid beside the project in CI)"
        if CI:
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return path


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skip (a missing data file, `importorskip` of an absent package, a feature
    "not there yet") fails the test with the skip's reason."""
    report = yield
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"CI=true: skipped tests fail in CI: {_skip_reason(report)}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at import (`pytest.importorskip` at module level)."""
    report = yield
    if CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"CI=true: skipped modules fail in CI: {_skip_reason(report)}"
    return report


# Seconds each slow file took in a run of the suite (two xdist processes, 2 cores, 2026-12-03, session
# 20, after a one-worker `tunefleet train` left Ray Train; see benchmarks/RESULTS.md). `--dist
# loadfile` hands files to the two processes in collection order, one at a time as each becomes free:
# in alphabetical order the real-MiniLM test and the PostgreSQL sweeps came last and ran for three
# minutes after everything else had finished.
# Longest first, the last files to start are short ones, and the two processes end together.
# xdist re-sorts files by their number of tests unless told not to (`--no-loadscope-reorder`), which
# undid this order: the two-node and PostgreSQL files, with few tests, ran last. pytest_configure
# below turns the re-sort off in the conftest, so that any `pytest -n` run keeps this order.
# A file missing here counts as short; the figures only order files, no test depends on them.
FILE_SECONDS = {
    "test_search.py": 241, "test_watch.py": 213, "test_train_loop.py": 200, "test_multinode.py": 160,
    "test_extend.py": 131, "test_tasks.py": 125, "test_serve.py": 99, "test_faults.py": 93,
    "test_registry.py": 86, "test_postgres.py": 86, "test_searchers.py": 81, "test_oom.py": 73,
    "test_tracking.py": 73, "test_families.py": 69, "test_real_model.py": 55, "test_warm_start.py": 44,
    "test_report.py": 42, "test_gpu_plan.py": 41, "test_progress.py": 37, "test_peft.py": 34,
    "test_pareto.py": 28, "test_allocator.py": 20, "test_security.py": 10, "test_cli.py": 9, "test_bad_input.py": 8,
}


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist is installed
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """Run the longest files first (see FILE_SECONDS); within a file, tests keep their order."""
    position = {item: index for index, item in enumerate(items)}
    items.sort(key=lambda item: (-FILE_SECONDS.get(item.path.name, 0), position[item]))


def lexicon_ner_checkpoint(folder: Path, labels: list[str], lexicon: dict[str, str], max_length: int = 128) -> str:
    """A tunefleet NER checkpoint that tags by lookup, so its answers can be worked out by hand.

    Each word piece of `lexicon` (a bundled-tokenizer vocabulary entry, e.g. "john" or "##kel") gets
    its tag; every other piece, [CLS] and [SEP] included, gets "O". Every tag wins with probability
    exactly 3/4. How: no transformer layers; the embedding of a piece is c * one-hot(its tag id)
    (position and segment embeddings zero), which LayerNorm turns into sqrt(H-1) at the tag and
    -1/sqrt(H-1) elsewhere, whatever c (H = hidden size = number of labels). The classifier is
    s * identity, a logit gap of s * H / sqrt(H-1) = ln(3 * (L-1)) between the tag and each of the
    L-1 others: softmax 3(L-1) / (3(L-1) + (L-1)) = 3/4.

    Returns:
        The checkpoint folder, loadable by `Predictor`, the registry and the Serve app.
    """
    import math

    import torch
    from transformers import BertConfig, BertForTokenClassification

    from tunefleet.train.checkpoint import save_checkpoint
    from tunefleet.train.models import load_tokenizer

    tokenizer = load_tokenizer("bundled-minilm")
    size = len(labels)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=size, num_hidden_layers=0, num_attention_heads=1,
                        intermediate_size=size, max_position_embeddings=512, num_labels=size,
                        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    model = BertForTokenClassification(config).eval()
    embeddings = model.bert.embeddings
    with torch.no_grad():
        embeddings.position_embeddings.weight.zero_()
        embeddings.token_type_embeddings.weight.zero_()
        embeddings.LayerNorm.weight.fill_(1.0)
        embeddings.LayerNorm.bias.zero_()
        embeddings.word_embeddings.weight.zero_()
        embeddings.word_embeddings.weight[:, labels.index("O")] = 10.0
        for piece, tag in lexicon.items():
            piece_id = tokenizer.convert_tokens_to_ids(piece)
            if tokenizer.convert_ids_to_tokens(piece_id) != piece:
                raise ValueError(f"lexicon: {piece!r} is not in the bundled vocabulary; use its word pieces")
            embeddings.word_embeddings.weight[piece_id] = 0.0
            embeddings.word_embeddings.weight[piece_id, labels.index(tag)] = 10.0
        model.classifier.weight.copy_(torch.eye(size) * math.log(3 * (size - 1)) * math.sqrt(size - 1) / size)
        model.classifier.bias.zero_()
    meta = {"task": "token-classification", "model_class": "BertForTokenClassification", "label_names": labels,
            "base_model": "bundled-minilm", "max_length": max_length, "metric": "f1", "epoch": 1,
            "validation": {"f1": 0.5}, "spec": {}}
    return str(save_checkpoint(Path(folder), model, tokenizer, meta, None))


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
    folder = tmp_path_factory.mktemp("mlflow-server")
    with running_mlflow_server(f"sqlite:///{folder / 'mlflow.db'}", folder) as uri:
        yield uri


@contextlib.contextmanager
def running_mlflow_server(backend_store_uri: str, folder: Path, timeout: float = 180.0) -> Iterator[str]:
    """`mlflow server` on `backend_store_uri` (artifacts proxied into `folder`), on a free loopback
    port, for the body; its URI. Its log is `folder/server.log`."""
    port = free_port()
    process = start_mlflow_server(backend_store_uri, folder, port, timeout)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(process)


def start_mlflow_server(backend_store_uri: str, folder: Path, port: int, timeout: float = 180.0):
    """Start `mlflow server` on `backend_store_uri` and loopback `port` (artifacts proxied into
    `folder`, its output appended to `folder/server.log`) and wait until it answers; the process, to
    end with `stop_process_group`. Starting it again on the same folder and port restarts the server.

    MLflow's job runner is off, as in deploy/: with it on (MLflow's default) every server also starts
    a job runner and seven huey consumers, each importing MLflow (~3 CPU-seconds apiece) and then
    polling, about half a core for as long as the server lives, which on 2 cores slowed every test
    running beside it. tunefleet runs no MLflow jobs (they serve MLflow's GenAI features)."""
    import subprocess
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "server.log", "a") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", backend_store_uri,
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process, timeout)
    except BaseException:
        stop_process_group(process)
        raise
    return process


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


def processes_naming(marker: str) -> list[int]:
    """Processes (other than this one) whose command line contains `marker`, e.g. a test's own Ray
    temp folder: what a test must find gone after it shut its cluster down."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids
