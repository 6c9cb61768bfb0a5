"""The Serve deployment over real HTTP on loopback: answers equal local `Predictor` answers, every
bad request gets a 4xx JSON error, and a promotion (or rollback) moves a running service to the new
version without a failed request.

One Serve instance on the suite's Ray hosts two applications for the whole module: a classification
model at `/` (batching on, following `champion`) and an NER model at `/ner` (batching off). The NER
model is conftest's hand-built lookup model, so its spans are checked against values worked out by
hand, not against another run of the same code.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from conftest import free_port, lexicon_ner_checkpoint
from tunefleet import cli
from tunefleet.train.predict import Predictor as LocalPredictor
from tunefleet.serve.app import (ServeConfigError, ServeOptions, app_builder, base_url, build_app,
                                 options_from_file, start_serve)

# Ray's own Serve schema still uses pydantic v1-style Field extras; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")

ROOT = Path(__file__).resolve().parents[1]
CLS_LABELS = ["negative", "positive"]
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TEXTS = ["great value, works as described", "broke after a week", "John Smith lives in Berlin .",
         "", "ok", "the service was slow but the food was excellent"]
LIMITS = {"max_texts": 8, "max_chars": 200}
# The NER model's lookup table: these word pieces get these tags (probability 3/4), all others O.
NER_LEXICON = {"john": "B-PER", "smith": "I-PER", "angela": "B-PER", "mer": "I-PER", "berlin": "B-LOC",
               "paris": "B-LOC", "london": "B-LOC"}


def _make_checkpoint(folder: Path, tiny_model: str, task: str, seed: int) -> str:
    """A tiny tunefleet checkpoint with a random, large-weight head: decisive answers that differ by
    seed, so version 1 and version 2 are told apart by what they predict."""
    import torch

    from tunefleet.train.checkpoint import save_checkpoint
    from tunefleet.tasks import get_task
    from tunefleet.train.models import build_model, load_tokenizer

    ner = task == "token-classification"
    model_class = "AutoModelForTokenClassification" if ner else "AutoModelForSequenceClassification"
    labels = NER_LABELS if ner else CLS_LABELS
    torch.manual_seed(seed)
    model = build_model(get_task(task), tiny_model, labels, 0.1)
    tokenizer = load_tokenizer(tiny_model)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 2.0)
        model.classifier.bias.zero_()
        # Random BERT outputs barely vary by text; centring and scaling the logits makes the label
        # depend on the text (not only on the seed) and the scores far from a tie.
        logits = model.eval()(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.reshape(-1, len(labels))
        scale = 3.0 / float((logits - logits.mean(0)).std())
        model.classifier.weight.mul_(scale)
        model.classifier.bias.copy_(-logits.mean(0) * scale)
    metric = "f1" if ner else "accuracy"
    meta = {"task": task, "model_class": model_class, "label_names": labels, "base_model": tiny_model,
            "max_length": 32, "metric": metric, "epoch": 1, "validation": {metric: 0.5}, "spec": {}}
    return str(save_checkpoint(folder, model, tokenizer, meta, None))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite store of this module's own, also in $MLFLOW_TRACKING_URI as an operator would set it."""
    tmp = tmp_path_factory.mktemp("serve-registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri, tmp


@pytest.fixture(scope="module")
def registry(store, tiny_model):
    """tiny-cls v1 champion, v2 registered but (worse) not promoted; tiny-ner v1 champion."""
    from tunefleet.tracking.registry import register_checkpoint

    uri, tmp = store
    checkpoints = {
        ("tiny-cls", 1): _make_checkpoint(tmp / "cls-v1", tiny_model, "text-classification", seed=1),
        ("tiny-cls", 2): _make_checkpoint(tmp / "cls-v2", tiny_model, "text-classification", seed=2),
        ("tiny-ner", 1): lexicon_ner_checkpoint(tmp / "ner-v1", NER_LABELS, NER_LEXICON, max_length=32),
    }
    first = register_checkpoint(checkpoints["tiny-cls", 1], "tiny-cls", {"accuracy": 0.9}, tracking_uri=uri)
    second = register_checkpoint(checkpoints["tiny-cls", 2], "tiny-cls", {"accuracy": 0.6}, tracking_uri=uri)
    register_checkpoint(checkpoints["tiny-ner", 1], "tiny-ner", {"f1": 0.7}, tracking_uri=uri)
    assert (first["version"], first["promoted"]["promoted"]) == (1, True)
    assert (second["version"], second["promoted"]["promoted"]) == (2, False)
    local = {key: LocalPredictor(folder) for key, folder in checkpoints.items()}
    # The two classification versions must disagree somewhere, or a switch could not be seen.
    assert [p["label"] for p in local["tiny-cls", 1].predict(TEXTS)] != [p["label"] for p in local["tiny-cls", 2].predict(TEXTS)]
    return uri, local


@pytest.fixture(scope="module")
def service(ray_cluster, registry):
    from ray import serve

    uri, _ = registry
    port = free_port()
    start_serve("127.0.0.1", port)
    try:
        common = {"tracking_uri": uri, "num_cpus": 0.5, **LIMITS}
        serve.run(build_app(ServeOptions(model="tiny-cls", max_batch_size=8, batch_wait_timeout_s=0.02,
                                         poll_interval_s=0.5, **common)), name="tiny-cls", route_prefix="/")
        serve.run(build_app(ServeOptions(model="tiny-ner@champion", batching=False, **common)),
                  name="tiny-ner", route_prefix="/ner")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def _post(url: str, body, **kwargs) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=60, **kwargs)


def _check_classification(answer: dict, texts: list[str], local: dict) -> None:
    expected = local["tiny-cls", answer["model"]["version"]].predict(texts)
    assert [p["label"] for p in answer["predictions"]] == [p["label"] for p in expected]
    # Batched requests are padded together: float rounding, amplified by the test head's scaling.
    assert [p["score"] for p in answer["predictions"]] == pytest.approx([p["score"] for p in expected], abs=2e-3)


# ---------------------------------------------------------------- start-up


def test_start_serve_waits_for_a_proxy_slower_than_rays_minute(ray_cluster, monkeypatch, capsys):
    """Ray gives Serve's HTTP proxy 60 s to start, then raises though the proxy is still coming up (a
    busy machine took 107 s). Here Ray's limit is 0 s, so `serve.start` itself gives up at once: the
    proxy must still be found answering on the port when `start_serve` returns. Runs before the module's
    `service` fixture, while no Serve is up in this process."""
    import ray.serve._private.api as serve_api
    from ray import serve

    monkeypatch.setattr(serve_api, "HTTP_PROXY_TIMEOUT", 0)
    port = free_port()
    with pytest.raises(TimeoutError):  # what a bare `serve.start` does with that limit
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.shutdown()
    port = free_port()  # not the port the Serve just shut down may still hold
    try:
        start_serve("127.0.0.1", port, wait_s=300)
        assert "not up yet" in capsys.readouterr().out  # it said why it was waiting
        # The proxy answers (503 "no routes" until an app is deployed): it listens on the port.
        assert requests.get(f"http://127.0.0.1:{port}/-/healthz", timeout=10).status_code in (200, 503)
    finally:
        serve.shutdown()


def test_the_url_of_an_ipv6_address_has_it_in_brackets():
    # Unbracketed, "http://:::8000" is no URL: urllib reads another address out of it (start_serve would
    # poll that for its whole wait), and the summary would print it.
    assert base_url("::", 8000) == "http://[::]:8000"
    assert base_url("::1", 8080) == "http://[::1]:8080"
    assert base_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert base_url("0.0.0.0", 80) == "http://0.0.0.0:80"


# ---------------------------------------------------------------- answers


def test_predict_answers_like_the_local_predictor(service, registry):
    _, local = registry
    response = _post(f"{service}/predict", {"texts": TEXTS})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"]["name"] == "tiny-cls" and answer["model"]["alias"] == "champion"
    assert len(answer["predictions"]) == len(TEXTS)
    _check_classification(answer, TEXTS, local)


def test_concurrent_requests_each_get_their_own_answers(service, registry):
    _, local = registry
    batches = [[f"{TEXTS[i % len(TEXTS)]} {i}", f"request number {i}"][: 1 + i % 2] for i in range(24)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda texts: _post(f"{service}/predict", {"texts": texts}), batches))
    for texts, response in zip(batches, responses):
        assert response.status_code == 200, response.text
        _check_classification(response.json(), texts, local)


def test_ner_spans_are_the_hand_worked_ones(service):
    texts = ["John Smith lives in Berlin .", "Angela Merkel visited Paris and London", "nothing here"]
    response = _post(f"{service}/ner/predict", {"texts": texts})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == {"name": "tiny-ner", "version": 1, "alias": "champion"}
    # Character offsets counted by hand. "Merkel" is mer ##kel: the word takes the tag of "mer"
    # (I-PER), which continues Angela's PER; every tag's probability is 3/4 (see NER_LEXICON).
    assert [[(e["type"], e["start"], e["end"], e["text"]) for e in row["entities"]] for row in answer["predictions"]] == [
        [("PER", 0, 10, "John Smith"), ("LOC", 20, 26, "Berlin")],
        [("PER", 0, 13, "Angela Merkel"), ("LOC", 22, 27, "Paris"), ("LOC", 32, 38, "London")],
        [],
    ]
    assert [e["score"] for row in answer["predictions"] for e in row["entities"]] == pytest.approx([0.75] * 5, abs=1e-5)


def test_healthz_and_model_say_what_is_served(service):
    health = requests.get(f"{service}/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = requests.get(f"{service}/ner/model", timeout=30).json()
    assert {k: info[k] for k in ("name", "version", "alias", "task", "labels")} == {
        "name": "tiny-ner", "version": 1, "alias": "champion", "task": "token-classification", "labels": NER_LABELS}
    assert info["metrics"]["test"] == {"f1": 0.7}
    assert info["batching"] is False
    info = requests.get(f"{service}/model", timeout=30).json()
    assert info["name"] == "tiny-cls" and info["batching"] is True and info["max_texts"] == LIMITS["max_texts"]


# ---------------------------------------------------------------- bad requests

BAD_REQUESTS = {
    "invalid JSON": ('{"texts": ["unclosed"', 400),
    "not an object": (json.dumps(["a", "b"]), 400),
    "missing texts": (json.dumps({"text": ["a"]}), 400),
    "no fields": (json.dumps({}), 400),
    "texts not a list": (json.dumps({"texts": "just one string"}), 400),
    "non-string item": (json.dumps({"texts": ["fine", 3]}), 400),
    "null item": (json.dumps({"texts": [None]}), 400),
    "empty list": (json.dumps({"texts": []}), 400),
    "too many texts": (json.dumps({"texts": ["x"] * (LIMITS["max_texts"] + 1)}), 413),
    "too many characters": (json.dumps({"texts": ["ok", "y" * (LIMITS["max_chars"] + 1)]}), 413),
    "huge body": (json.dumps({"texts": ["z" * 50_000] * 40}), 413),
    "deep nesting": ("[" * 9_000 + "]" * 9_000, 400),
    "not UTF-8": (b'{"texts": ["\xff\xfe"]}', 400),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_json_error(service, case):
    body, status = BAD_REQUESTS[case]
    response = _post(f"{service}/predict", body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and isinstance(error["message"], str) and error["message"]


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/nowhere", 404), ("POST", "/predict/extra", 404), ("GET", "/ner/nowhere", 404),
    ("GET", "/predict", 405), ("POST", "/healthz", 405),
])
def test_unknown_routes_and_wrong_methods_answer_json(service, method, path, status):
    response = requests.request(method, f"{service}{path}", timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["error"]["status"] == status


def test_service_still_answers_after_bad_requests(service, registry):
    for body, _ in BAD_REQUESTS.values():
        _post(f"{service}/predict", body)
    response = _post(f"{service}/predict", {"texts": ["still here"]})
    assert response.status_code == 200
    _check_classification(response.json(), ["still here"], registry[1])


# ---------------------------------------------------------------- following the alias


def _promote_and_roll_back_under_load(url: str, registry) -> None:
    """Two clients keep sending to `url` while champion moves 1 -> 2 (promote) -> 1 (rollback):
    no request may fail, and answers switch version with no mix inside a phase."""
    from tunefleet.tracking.registry import promote, rollback

    uri, local = registry
    answers: list[tuple[int, list[str], dict]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        i = 0
        while not stop.is_set():
            texts = [TEXTS[i % len(TEXTS)], TEXTS[(i + 1) % len(TEXTS)]]
            try:
                response = _post(f"{url}/predict", {"texts": texts})
                if response.status_code == 200:
                    answers.append((response.json()["model"]["version"], texts, response.json()))
                else:
                    failures.append(f"{response.status_code}: {response.text[:200]}")
            except requests.RequestException as exc:
                failures.append(repr(exc))
            i += 1

    def wait_for(version: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if answers and answers[-1][0] == version:
                return
            time.sleep(0.1)
        pytest.fail(f"answers did not switch to version {version} within {timeout:.0f}s "
                    f"(last {answers[-1][0] if answers else None}; failures {failures[:3]})")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_for(1)
        promoted = promote("tiny-cls", 2, force=True, tracking_uri=uri)
        assert promoted["promoted"]["promoted"], promoted
        wait_for(2)
        time.sleep(0.5)  # a few more answers from version 2
        rollback("tiny-cls", tracking_uri=uri)
        wait_for(1)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not failures, failures[:5]
    versions = [version for version, _, _ in answers]
    # One replica: 1s, then 2s, then 1s; never a mix within a phase.
    phases = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
    assert phases == [1, 2, 1], phases
    for version, texts, answer in answers[::3]:
        _check_classification(answer, texts, local)


@pytest.mark.slow
def test_promotion_and_rollback_switch_versions_without_failed_requests(service, registry):
    _promote_and_roll_back_under_load(service, registry)


# ---------------------------------------------------------------- direct ingress


@pytest.mark.slow
def test_direct_ingress_serves_on_the_port_and_follows_the_alias(store, registry, tmp_path):
    """`tunefleet serve --ingress direct` in its own process (direct ingress is a setting of the Ray
    it starts): the replica itself listens on --port, answers like the local predictor, rejects bad
    requests with 4xx, follows a promotion without a failed request, and stops cleanly on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    uri, local = registry
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"MLFLOW_TRACKING_URI": uri}
    process = subprocess.Popen(
        [sys.executable, "-m", "tunefleet.cli", "serve", "tiny-cls", "--ingress", "direct", "--port", str(port),
         "--max-texts", str(LIMITS["max_texts"]), "--max-chars", str(LIMITS["max_chars"]), "--poll-interval", "0.5"],
        stdout=subprocess.PIPE, stderr=open(tmp_path / "serve.log", "w"), text=True, env=env, cwd=tmp_path)
    try:
        ready = None
        for line in process.stdout:  # Ray's own messages may come first; the summary is one JSON line
            if line.startswith("{"):
                ready = json.loads(line)
                break
        assert ready is not None, (tmp_path / "serve.log").read_text()[-3000:]
        # Keep reading, or a full pipe would block the service on its next line of output.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        assert ready["url"] == f"http://127.0.0.1:{port}" and ready["options"]["ingress"] == "direct"
        listeners = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
        owner = next((line for line in listeners.splitlines() if f"127.0.0.1:{port} " in line), "")
        assert "ServeRepli" in owner, owner  # the replica itself owns the port, not Serve's proxy
        url = ready["url"]
        response = _post(f"{url}/predict", {"texts": TEXTS})
        assert response.status_code == 200, response.text
        _check_classification(response.json(), TEXTS, local)
        assert requests.get(f"{url}/healthz", timeout=30).json()["status"] == "ok"
        for body, status in (({"texts": []}, 400), ({"texts": ["x" * 500]}, 413), ("{not json", 400)):
            bad = _post(f"{url}/predict", body)
            assert bad.status_code == status and "error" in bad.json(), (body, bad.status_code, bad.text)
        _promote_and_roll_back_under_load(url, registry)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_direct_ingress_rejects_what_it_cannot_serve(store, registry, monkeypatch, capsys):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("started Ray for bad input"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cli.main(["serve", "tiny-cls", "--ingress", "direct", "--replicas", "2"]) == cli.EXIT_BAD_INPUT
    assert "exactly one replica" in capsys.readouterr().err
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert cli.main(["serve", "tiny-cls", "--ingress", "direct"]) == cli.EXIT_BAD_INPUT
    assert "RAY_ADDRESS" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.delenv("RAY_ADDRESS")
        argv = ["serve", "tiny-cls", "--port", str(taken.getsockname()[1])]
        assert cli.main(argv) == cli.EXIT_BAD_INPUT
        assert "already in use" in capsys.readouterr().err


# ---------------------------------------------------------------- batching


def test_batcher_puts_what_waited_for_the_model_in_one_batch():
    import asyncio

    from tunefleet.serve.batching import MicroBatcher

    sizes: list[int] = []

    async def handle(items: list[int]) -> list[int]:
        sizes.append(len(items))
        if -1 in items:
            raise ValueError("bad item")
        await asyncio.sleep(0.05)  # the model is busy; later requests pile up meanwhile
        return [item * 10 for item in items]

    async def scenario() -> None:
        batcher = MicroBatcher(handle, max_batch_size=8, batch_wait_timeout_s=0.0)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 12)]
        assert await first == 0 and await asyncio.gather(*rest) == [i * 10 for i in range(1, 12)]
        # Not cohorts: the 11 that arrived during the first call go in as 8 + 3, capped by max_batch_size.
        assert sizes == [1, 8, 3]
        with pytest.raises(ValueError, match="bad item"):
            await batcher.submit(-1)
        assert await batcher.submit(5) == 50 and batcher.alive  # an error fails its batch, not the batcher
        batcher.close()

    asyncio.run(scenario())


# ---------------------------------------------------------------- the command and the config


def test_cli_serve_defaults_to_loopback():
    args = cli.build_parser().parse_args(["serve", "tiny-cls"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)


@pytest.mark.parametrize("argv,needle", [
    (["serve", "tiny-cls@"], "alias"),
    (["serve", "tiny-cls/zero"], "version"),
    (["serve", "no-such-model"], "no registered model"),
    (["serve", "tiny-cls@nosuchalias"], "no alias @nosuchalias"),
    (["serve", "tiny-cls", "--max-batch-size", "0"], "max_batch_size"),
])
def test_cli_serve_rejects_bad_input_before_starting_anything(store, registry, monkeypatch, capsys, argv, needle):
    import ray
    from ray import serve

    def forbidden(*args, **kwargs):
        raise AssertionError("tunefleet serve started Ray/Serve for bad input")

    monkeypatch.setattr(ray, "init", forbidden)
    monkeypatch.setattr(serve, "start", forbidden)
    monkeypatch.setattr(serve, "run", forbidden)
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    # Only our lines: the suite's Ray forwards its workers' logs to this process's stderr too.
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tunefleet:")]
    assert len(err) == 1 and err[0].startswith("tunefleet: error:") and needle in err[0], err


def test_options_report_every_problem_at_once():
    with pytest.raises(ServeConfigError) as caught:
        ServeOptions(model="m", max_batch_size=0, max_texts=-1, poll_interval_s=0, replicas=True)
    message = str(caught.value)
    for field in ("max_batch_size", "max_texts", "poll_interval_s", "replicas"):
        assert field in message
    with pytest.raises(ServeConfigError, match="unknown field"):
        ServeOptions.from_args({"model": "m", "max_batchsize": 4})


def test_shipped_serve_config_builds_the_app():
    options = options_from_file(ROOT / "deploy" / "serve-config.yaml")
    assert options["model"] == "conll2003-ner@champion" and options["autoscaling_config"]["max_replicas"] >= 1
    parsed = ServeOptions.from_args(options)
    assert parsed.max_ongoing_requests >= parsed.max_batch_size
    app_builder(options)  # what `serve run deploy/serve-config.yaml` calls; builds without a cluster
