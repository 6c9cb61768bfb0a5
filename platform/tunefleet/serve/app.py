"""Serve a registered model over HTTP with Ray Serve.

`POST /predict` takes `{"texts": [...]}` (strings; for a sentence-pair model, objects `{"text",
"text_pair"}`) and answers `{"model": {name, version, alias},
"predictions": [...]}`, one prediction per text from `predict.Predictor`, the same code `tunefleet
predict` runs, so served and local answers agree. `GET /healthz` and `GET /model` say what is loaded.

Each replica loads `NAME@alias` (or a fixed `NAME/version`) from the registry. With an alias it keeps
polling the registry; when the alias moves (a promotion or a rollback) the replica loads the new
version in a background thread and then swaps one reference, so requests in flight finish on the old
version, new ones go to the new version, and none is dropped. Every answer names the version that
produced it.

Two ways in (`ingress`): `proxy` (default) is Ray Serve's standard path, an HTTP proxy actor that
load-balances over any number of replicas; every request then costs two actor calls (the proxy hands
the request over, and the replica fetches the body back from it). `direct` is Ray Serve's direct
ingress: the one replica runs the HTTP server itself on the given port, so a request never leaves
the replica's process. On the 2-core benchmark machine it roughly doubles the requests per second a
batching replica answers (benchmarks/RESULTS.md); it takes exactly one replica per node, and on a
multi-node cluster the documented way to combine it with load balancing is Ray's HAProxy mode
(deploy/README.md).

Requests that arrive together are batched (`batching.MicroBatcher`, `serve.batch`'s knobs, with
batches formed only when the model is free): one forward pass over the texts of up to
`max_batch_size` requests, the first waiting at most `batch_wait_timeout_s` for others. Forward passes
run one at a time on a dedicated thread, off the event loop that keeps accepting requests.
"""

# No `from __future__ import annotations` here: FastAPI must see the real `Request` class on the
# route methods, which Serve's class-based view re-binds, or it takes `request` for a query parameter.
import asyncio
import dataclasses
import logging
import os
import re
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from .batching import MicroBatcher
from .http import ApiError, install_error_handlers, read_texts
from ..train.predict import Predictor as LocalPredictor

log = logging.getLogger("ray.serve")

DEPLOYMENT_NAME = "Predictor"  # deploy/serve-config.yaml and the RayService name it too


class ServeConfigError(ValueError):
    """Serve options (command line, config file or app_builder args) that cannot work."""


@dataclass(frozen=True)
class ServeOptions:
    """What `tunefleet serve`, a Serve config's `args` and the benchmark set. Checks itself on
    construction and reports every problem in one raise.

    Attributes:
        model: `NAME`, `NAME@alias` or `NAME/version` (`NAME` alone means `NAME@champion`).
        tracking_uri: the MLflow store; None lets each replica use its own `MLFLOW_TRACKING_URI`.
        batching: batch concurrent requests into one forward pass; False runs each on its own.
        max_batch_size: most requests per forward pass.
        batch_wait_timeout_s: how long the first request of a batch waits for others.
        max_texts: most texts in one request (more: 413).
        max_chars: most characters in one text (more: 413).
        poll_interval_s: how often a replica asks the registry where its alias points.
        replicas: fixed replica count, unless `autoscaling_config` is given.
        autoscaling_config: Serve's autoscaling settings (min_replicas, max_replicas, ...).
        max_ongoing_requests: requests one replica holds at once; None = 2 x max_batch_size, at least 32,
            so that a batch can fill while the previous one runs.
        num_cpus: CPUs per replica; torch uses as many threads.
        precision: `fp32` (answers equal `tunefleet predict`'s exactly), `bf16` or `auto` (bf16 autocast
            where the hardware has it: on a CPU with AVX-512 bf16, batches run several times faster).
    """

    model: str
    tracking_uri: str | None = None
    batching: bool = True
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.01
    max_texts: int = 64
    max_chars: int = 10_000
    poll_interval_s: float = 2.0
    replicas: int = 1
    autoscaling_config: dict[str, Any] | None = None
    max_ongoing_requests: int | None = None
    num_cpus: float = 1.0
    precision: str = "fp32"
    source: str = field(default="serve options", compare=False)  # where the options came from, for errors

    def __post_init__(self) -> None:
        problems = []

        def need(ok: bool, name: str, fix: str) -> None:
            if not ok:
                problems.append(f"{name} is {getattr(self, name)!r}; {fix}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        need(isinstance(self.model, str) and bool(self.model), "model", "give NAME, NAME@alias or NAME/version")
        need(self.tracking_uri is None or isinstance(self.tracking_uri, str), "tracking_uri", "give a URI string")
        need(isinstance(self.batching, bool), "batching", "give true or false")
        need(is_int(self.max_batch_size) and self.max_batch_size >= 1, "max_batch_size", "give an integer >= 1")
        need(is_number(self.batch_wait_timeout_s) and self.batch_wait_timeout_s >= 0, "batch_wait_timeout_s",
             "give seconds >= 0")
        need(is_int(self.max_texts) and self.max_texts >= 1, "max_texts", "give an integer >= 1")
        need(is_int(self.max_chars) and self.max_chars >= 1, "max_chars", "give an integer >= 1")
        need(is_number(self.poll_interval_s) and self.poll_interval_s > 0, "poll_interval_s", "give seconds > 0")
        need(is_int(self.replicas) and self.replicas >= 1, "replicas", "give an integer >= 1")
        need(is_number(self.num_cpus) and self.num_cpus >= 0, "num_cpus", "give a number >= 0")
        need(self.precision in ("fp32", "bf16", "auto"), "precision", "give fp32, bf16 or auto")
        scaling = self.autoscaling_config
        need(scaling is None or isinstance(scaling, dict), "autoscaling_config", "give a mapping or leave it out")
        if isinstance(scaling, dict):
            low, high = scaling.get("min_replicas", 1), scaling.get("max_replicas", 1)
            need(is_int(low) and is_int(high) and 0 <= low <= high, "autoscaling_config",
                 "min_replicas and max_replicas must be integers with 0 <= min_replicas <= max_replicas")
        ongoing = self.max_ongoing_requests
        need(ongoing is None or (is_int(ongoing) and ongoing >= 1), "max_ongoing_requests", "give an integer >= 1")
        if is_int(ongoing) and is_int(self.max_batch_size) and self.batching and ongoing < self.max_batch_size:
            problems.append(f"max_ongoing_requests {ongoing} < max_batch_size {self.max_batch_size}: a batch "
                            "could never fill; raise max_ongoing_requests or lower max_batch_size")
        if problems:
            raise ServeConfigError("\n".join(f"{self.source}: {problem}" for problem in problems))
        from ..tracking.registry import parse_model_ref

        parse_model_ref(self.model)  # RegistryError names the bad reference

    @classmethod
    def from_args(cls, args: dict[str, Any], source: str = "app_builder args") -> "ServeOptions":
        known = {f.name for f in dataclasses.fields(cls)} - {"source"}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ServeConfigError(f"{source}: unknown field(s) {unknown}; valid: {sorted(known)}")
        if "model" not in args:
            raise ServeConfigError(f"{source}: model is missing; give NAME, NAME@alias or NAME/version")
        return cls(**args, source=source)

    @property
    def ongoing_requests(self) -> int:
        return self.max_ongoing_requests or max(32, 2 * self.max_batch_size)

    def to_args(self) -> dict[str, Any]:
        args = dataclasses.asdict(self)
        del args["source"]
        return args


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, ready to answer: swapped as a whole when the alias moves."""

    resolved: Any  # registry.ResolvedModel
    alias: str | None
    predictor: LocalPredictor

    @property
    def version(self) -> int:
        return self.resolved.version

    def identity(self) -> dict[str, Any]:
        return {"name": self.resolved.name, "version": self.resolved.version, "alias": self.alias}


def load_model(ref: str, options: ServeOptions, alias: str | None = None) -> LoadedModel:
    """Resolve `ref` in the registry, download it and load it for inference (blocking)."""
    from ..tracking.registry import resolve_model

    resolved = resolve_model(ref, options.tracking_uri)
    predictor = LocalPredictor(resolved.checkpoint, precision=options.precision)
    return LoadedModel(resolved, alias if alias is not None else resolved.alias, predictor)


api = FastAPI(title="tunefleet", docs_url=None, redoc_url=None, openapi_url=None)
install_error_handlers(api)


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(api)
class Predictor:
    """The Serve deployment: one replica holding one loaded model version at a time."""

    async def __init__(self, options: dict[str, Any]):
        import torch

        self.options = ServeOptions.from_args(options)
        if self.options.num_cpus >= 1:
            torch.set_num_threads(int(self.options.num_cpus))
        self._loaded: LoadedModel = await asyncio.to_thread(load_model, self.options.model, self.options)
        # One forward pass at a time: parallel passes would only fight over the same cores.
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunefleet-predict")
        self._batcher = MicroBatcher(self._predict_batch, self.options.max_batch_size,
                                     self.options.batch_wait_timeout_s)
        self._follower: asyncio.Task | None = None
        if self._loaded.alias is not None:
            self._follower = asyncio.get_running_loop().create_task(self._follow_alias())
        log.info("tunefleet: serving %s (batching %s)", self._loaded.identity(), self.options.batching)

    @api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        texts = await read_texts(request, self.options.max_texts, self.options.max_chars)
        try:
            # The loaded model's task says what an input is (a text, or a pair): refuse a wrong shape
            # with a 400 before it joins a batch.
            self._loaded.predictor.check(texts, name='"texts"')
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        try:
            if self.options.batching:
                loaded, predictions = await self._batcher.submit(texts)
            else:
                loaded = self._loaded
                predictions = await self._run(loaded, texts)
        except Exception as exc:  # noqa: BLE001 - a model failure answers JSON, the replica lives on
            log.exception("tunefleet: prediction failed")
            raise ApiError(500, f"prediction failed: {type(exc).__name__}: {exc}") from None
        # A JSONResponse skips FastAPI's response validation: this is the hot path.
        return JSONResponse({"model": loaded.identity(), "predictions": predictions})

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "model": self._loaded.identity()}

    @api.get("/model")
    async def model(self) -> dict[str, Any]:
        loaded = self._loaded
        return {
            **loaded.identity(), "metrics": loaded.resolved.metrics, "run_id": loaded.resolved.run_id,
            "task": loaded.predictor.task_name, "labels": loaded.predictor.label_names,
            "following_alias": self._follower is not None, "batching": self.options.batching,
            "max_batch_size": self.options.max_batch_size, "batch_wait_timeout_s": self.options.batch_wait_timeout_s,
            "max_texts": self.options.max_texts, "max_chars": self.options.max_chars,
            "precision": loaded.predictor.precision,
        }

    async def _predict_batch(self, requests: list[list[str]]) -> list[tuple[LoadedModel, list[dict[str, Any]]]]:
        loaded = self._loaded  # the whole batch is answered by one version
        flat = [text for texts in requests for text in texts]
        predictions = await self._run(loaded, flat)
        out, start = [], 0
        for texts in requests:
            out.append((loaded, predictions[start:start + len(texts)]))
            start += len(texts)
        return out

    async def _run(self, loaded: LoadedModel, texts: list[str]) -> list[dict[str, Any]]:
        return await asyncio.get_running_loop().run_in_executor(self._inference, loaded.predictor.predict, texts)

    async def _follow_alias(self) -> None:
        from ..tracking.registry import current_version

        name, alias = self._loaded.resolved.name, self._loaded.alias
        while True:
            await asyncio.sleep(self.options.poll_interval_s)
            try:
                version = await asyncio.to_thread(current_version, name, alias, self.options.tracking_uri)
                if version is None or version == self._loaded.version:
                    continue  # an alias removed by hand keeps the last version serving
                log.info("tunefleet: %s@%s moved to version %s; loading it", name, alias, version)
                loaded = await asyncio.to_thread(load_model, f"{name}/{version}", self.options, alias)
                self._loaded = loaded  # requests already running keep their reference to the old one
                log.info("tunefleet: now serving %s", loaded.identity())
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a registry hiccup must not stop serving; retry next poll
                log.exception("tunefleet: following %s@%s failed; still serving version %s",
                              name, alias, self._loaded.version)

    def check_health(self) -> None:
        if self._follower is not None and self._follower.done():
            raise RuntimeError("the alias-following task stopped")
        if not self._batcher.alive:
            raise RuntimeError("the batching task stopped")

    def __del__(self) -> None:
        follower = getattr(self, "_follower", None)
        if follower is not None:
            follower.cancel()
        batcher = getattr(self, "_batcher", None)
        if batcher is not None:
            batcher.close()
        executor = getattr(self, "_inference", None)
        if executor is not None:
            executor.shutdown(wait=False)


def build_app(options: ServeOptions) -> Any:
    """The Serve application for `options` (not yet running)."""
    env = {"TOKENIZERS_PARALLELISM": "false"}
    if os.environ.get("TUNEFLEET_CACHE"):  # where downloaded checkpoints are cached, as in the driver
        env["TUNEFLEET_CACHE"] = os.environ["TUNEFLEET_CACHE"]
    if options.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = options.tracking_uri
    scaling: dict[str, Any] = (
        {"autoscaling_config": options.autoscaling_config} if options.autoscaling_config
        else {"num_replicas": options.replicas}
    )
    return Predictor.options(
        max_ongoing_requests=options.ongoing_requests,
        ray_actor_options={"num_cpus": options.num_cpus, "runtime_env": {"env_vars": env}},
        **scaling,
    ).bind(options.to_args())


def app_builder(args: dict[str, Any]) -> Any:
    """Entry point for `serve run` / `serve deploy` / a RayService (`import_path:
    tunefleet.serve:app_builder`); `args` are `ServeOptions` fields."""
    return build_app(ServeOptions.from_args(dict(args)))


def options_from_file(path: str | Path) -> dict[str, Any]:
    """ServeOptions fields from a YAML file: either a plain mapping of them, or a Serve config such as
    deploy/serve-config.yaml, whose tunefleet application's `args` and `Predictor` deployment settings
    (replicas, autoscaling, max_ongoing_requests, num_cpus) are used. Its `http_options` are not: the
    address comes from the command line only, so serving stays on loopback unless asked otherwise."""
    import yaml

    from ..spec import read_yaml

    path = Path(path)
    if not path.is_file():
        raise ServeConfigError(f"{path}: no such file; give a YAML file of serve options or a Serve config")
    try:
        doc = read_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ServeConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ServeConfigError(f"{path}: expected a mapping of serve options or a Serve config")
    if "applications" not in doc:
        return doc
    apps = [app for app in doc["applications"] or [] if str(app.get("import_path", "")).startswith("tunefleet.serve")]
    if not apps:
        raise ServeConfigError(f"{path}: no application with import_path tunefleet.serve:app_builder")
    options = dict(apps[0].get("args") or {})
    for deployment in apps[0].get("deployments") or []:
        if deployment.get("name") != DEPLOYMENT_NAME:
            continue
        if "num_replicas" in deployment and deployment["num_replicas"] != "auto":
            options["replicas"] = deployment["num_replicas"]
        for key in ("autoscaling_config", "max_ongoing_requests"):
            if key in deployment:
                options[key] = deployment[key]
        if "num_cpus" in (deployment.get("ray_actor_options") or {}):
            options["num_cpus"] = deployment["ray_actor_options"]["num_cpus"]
    return options


INGRESS_MODES = ("proxy", "direct")


def check_ingress(ingress: str, options: ServeOptions) -> None:
    """Raise ServeConfigError if `ingress` cannot serve `options` from this process."""
    if ingress not in INGRESS_MODES:
        raise ServeConfigError(f"ingress is {ingress!r}; give one of {', '.join(INGRESS_MODES)}")
    if ingress != "direct":
        return
    if options.autoscaling_config or options.replicas != 1:
        raise ServeConfigError("ingress direct serves from exactly one replica, which owns the port; drop "
                               "--replicas/autoscaling_config, or use --ingress proxy to load-balance replicas")
    if os.environ.get("RAY_ADDRESS"):
        raise ServeConfigError("ingress direct is a setting of the Ray cluster (RAY_SERVE_ENABLE_DIRECT_INGRESS=1 in "
                               "its environment, see deploy/README.md) and RAY_ADDRESS points at an existing one; "
                               "unset RAY_ADDRESS to serve from a local Ray, or use --ingress proxy")


def _direct_ingress_env(port: int) -> dict[str, str]:
    """Environment for a local Ray whose one ingress replica listens on `port` itself. Ray reads these
    when its processes start, so they must be set before `ray.init`."""
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        # The ports Serve hands out to ingress replicas, [min, max): just the user's port.
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),
        # Serve waits this long at shutdown so that an external load balancer notices the replica
        # is going (30 s by default). With no balancer in front it would only delay Ctrl-C.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": os.environ.get(
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2"),
    }


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def base_url(host: str, port: int) -> str:
    """`http://host:port`, an IPv6 address in brackets (`--host ::` listens on every IPv6 address)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def start_serve(host: str, port: int, wait_s: float = 600.0) -> None:
    """`serve.start` with its HTTP proxy on `host:port`, waiting as long as the proxy takes to come up.

    Ray gives the proxy actor 60 s (`HTTP_PROXY_TIMEOUT`, a constant, not a setting) and then raises,
    though the proxy goes on starting. On a busy 2-core machine (two trainings beside a test) its worker
    took 107 s just to start and import Serve, and nothing was wrong. Past Ray's minute this keeps
    polling the proxy's port until it answers HTTP, saying so once, and gives up only after `wait_s`.
    """
    import time
    import urllib.error
    import urllib.request

    started = time.monotonic()
    try:
        serve.start(http_options={"host": host, "port": port})
        return
    except TimeoutError as error:
        print(f"tunefleet: Ray Serve's HTTP proxy on {host}:{port} is not up yet ({error}); the machine may be "
              f"busy. Waiting up to {wait_s:.0f} s in all.", flush=True)
    serve.start(http_options={"host": host, "port": port})  # the controller is up: this only connects to it
    # Any HTTP answer means the proxy serves: its health check says 503 until an app is deployed.
    url = f"{base_url(host, port)}/-/healthz"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:  # refused: not listening yet
            pass
        if time.monotonic() - started > wait_s:
            raise TimeoutError(f"Ray Serve's HTTP proxy did not answer on {host}:{port} within {wait_s:.0f} s; "
                               "see `ray status` and the proxy's log under /tmp/ray/session_latest/logs")
        time.sleep(1.0)


def serve_forever(options: ServeOptions, host: str = "127.0.0.1", port: int = 8000,
                  on_ready: Callable[[dict[str, Any]], None] | None = None, ingress: str = "proxy") -> dict[str, Any]:
    """Resolve the model, start Ray and Serve, deploy, and block until SIGINT/SIGTERM.

    The model is resolved first, so a bad reference fails before any Ray work.

    Args:
        ingress: `proxy` (Serve's HTTP proxy on `port`, any number of replicas) or `direct` (the one
            replica listens on `port` itself; Serve's proxy moves to a free loopback port). See the
            module docstring.
    Returns:
        what was served: url, model, options.
    Raises:
        RegistryError: the model or alias does not exist.
        ServeConfigError: the ingress cannot serve these options, or the port is taken.
    """
    import ray

    from ..tracking.registry import resolve_model
    from ..tracking.runs import tracking_uri

    check_ingress(ingress, options)
    if not _port_is_free(host, port):
        raise ServeConfigError(f"{host}:{port} is already in use; stop what listens there or give --port")
    # Pinned here, absolute: replicas run in other working folders, maybe with another environment.
    options = dataclasses.replace(options, tracking_uri=tracking_uri(options.tracking_uri))
    resolved = resolve_model(options.model, options.tracking_uri)
    started_ray = not ray.is_initialized()
    proxy_port = port
    if ingress == "direct":
        if not started_ray:
            raise ServeConfigError("ingress direct needs a Ray started by this command; Ray is already running "
                                   "in this process")
        from ..cluster import free_port

        os.environ.update(_direct_ingress_env(port))
        proxy_port = free_port(host)  # Serve's own proxy still starts: out of the way
    if started_ray:
        from ..cluster import init_ray

        # Dashboard on loopback only: it can run code, and `serve status` reads it.
        init_ray(os.environ.get("RAY_ADDRESS"))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        # With direct ingress the replica binds the same host (Serve passes it these options).
        start_serve(host, proxy_port)
        serve.run(build_app(options), name=resolved.name, route_prefix="/")
        shown = options.to_args() | {"tracking_uri": re.sub(r"//[^/@]*@", "//***@", options.tracking_uri),  # no passwords
                                     "ingress": ingress}
        summary = {"url": base_url(host, port), "model": {"name": resolved.name, "version": resolved.version,
                                                            "alias": resolved.alias}, "options": shown}
        if on_ready is not None:
            on_ready(summary)
        while not stop.wait(1.0):
            pass
        return summary
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        serve.shutdown()
        if started_ray:
            ray.shutdown()
