"""Throughput and latency of `tunefleet serve`, batching on vs off, at 1, 8 and 32 concurrent clients.

    .venv/bin/python benchmarks/serve_bench.py [--requests 400] [--max-seconds 30] [--out results.json]

Starts a local Ray and Serve on loopback (`--ingress direct`, the default: each replica is its own
HTTP server, as `tunefleet serve --ingress direct` runs; `--ingress proxy`: through Serve's HTTP
proxy), registers the bundled all-MiniLM-L6-v2 with an untrained
classification head in a temporary SQLite registry (throughput does not need a trained model), and
deploys it twice side by side: with `serve.batch` and without, same precision, one replica each.
Each client sends one text per request, back to back, over keep-alive connections (aiohttp, one event
loop, so the load generator stays cheap next to the server on a small machine). A run stops after
`--requests` answers or `--max-seconds`. Runs of the two modes alternate, `--repeats` times per
level, and each level keeps its best run: on a shared machine, load from elsewhere only ever slows a
run down, and alternating exposes both modes to it alike.

Prints a Markdown table and, last, one JSON line with every number. Target: batching gives at least
3x the unbatched throughput at 32 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

# Review-like sentences of 10-25 words: the length a classification service typically sees.
SENTENCES = [
    "The battery lasts all day and the screen is bright enough to read outside in full sun.",
    "Customer support never answered my emails, and the replacement part arrived two weeks late.",
    "Honestly one of the best purchases I have made this year, I would buy it again.",
    "It stopped charging after a month and the warranty claim was a nightmare from start to finish.",
    "Decent value for the price, although the instructions were confusing and some screws were missing.",
    "The hotel room was spotless, the staff friendly, and breakfast had plenty of fresh fruit.",
    "Shipping was fast but the box was crushed and the glass inside had cracked.",
    "I expected more from this brand; the fabric feels cheap and the stitching is already coming loose.",
]


def register_minilm(workdir: Path) -> tuple[str, str]:
    """The bundled MiniLM with a fresh 2-class head, registered as champion of `bench-minilm`."""
    from tunefleet.train.checkpoint import save_checkpoint
    from tunefleet.tasks import get_task
    from tunefleet.train.models import build_model, load_tokenizer
    from tunefleet.tracking.registry import register_checkpoint

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    labels = ["negative", "positive"]
    model = build_model(get_task("text-classification"), "bundled-minilm", labels, None)
    meta = {"task": "text-classification", "model_class": "AutoModelForSequenceClassification",
            "label_names": labels, "base_model": "bundled-minilm", "max_length": 128, "metric": "accuracy",
            "epoch": 0, "validation": {}, "spec": {}}
    folder = save_checkpoint(workdir / "minilm", model, load_tokenizer("bundled-minilm"), meta, None)
    register_checkpoint(str(folder), "bench-minilm", {"accuracy": 0.5}, tracking_uri=uri)
    return uri, "bench-minilm"


async def _load(url: str, concurrency: int, total: int, max_seconds: float) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.perf_counter() + max_seconds

    async def client(session: Any, offset: int) -> None:
        nonlocal issued, errors
        i = offset
        while issued < total and time.perf_counter() < deadline:
            issued += 1
            body = {"texts": [SENTENCES[i % len(SENTENCES)]]}
            started = time.perf_counter()
            async with session.post(url, json=body) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - started)
            i += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session, k) for k in range(concurrency)))
        wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "clients": concurrency, "requests": len(latencies), "errors": errors, "seconds": round(wall, 2),
        "req_per_s": round(len(latencies) / wall, 1), "texts_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
    }


def _direct_url(mode: str, ports: list[int]) -> str:
    """Which of the direct-ingress replicas' ports serves the `mode` application."""
    import urllib.error
    import urllib.request

    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{mode}/model", timeout=10) as answer:
                if answer.status == 200:
                    return f"http://127.0.0.1:{port}/{mode}"
        except urllib.error.URLError:
            continue
    raise RuntimeError(f"no direct-ingress replica on ports {ports} serves /{mode}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    from ray import serve

    from tunefleet.serve.app import ServeOptions, _direct_ingress_env, build_app
    from tunefleet.cluster import free_port

    workdir = Path(tempfile.mkdtemp(prefix="tunefleet-bench-"))
    os.environ["TUNEFLEET_CACHE"] = str(workdir / "cache")
    uri, name = register_minilm(workdir)
    port = free_port()
    if args.ingress == "direct":
        # Two replicas, two ports: `[port + 1, port + 3)`, found below by asking each what it serves.
        env = _direct_ingress_env(port + 1) | {"RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 3)}
        os.environ.update(env)
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_average_before": os.getloadavg()[0]},
        "settings": {"ingress": args.ingress, "max_batch_size": args.max_batch_size, "batch_wait_ms": args.batch_wait_ms,
                     "precision": args.precision, "torch_threads_per_replica": args.num_cpus, "replicas": 1,
                     "texts_per_request": 1, "repeats": args.repeats, "requests_per_run": args.requests},
        "modes": {"batched": [], "unbatched": []},
    }
    try:
        # Both services run side by side and the runs alternate, so a burst of load from elsewhere on
        # the machine hits both modes alike; each level keeps its best run (noise only slows things).
        for mode, batching in (("batched", True), ("unbatched", False)):
            options = ServeOptions(model=name, tracking_uri=uri, batching=batching, max_batch_size=args.max_batch_size,
                                   batch_wait_timeout_s=args.batch_wait_ms / 1000, num_cpus=args.num_cpus,
                                   precision=args.precision, max_ongoing_requests=max(64, 2 * args.max_batch_size))
            serve.run(build_app(options), name=mode, route_prefix=f"/{mode}",
                      logging_config={"enable_access_log": False})
        base = {mode: f"http://127.0.0.1:{port}/{mode}" for mode in ("batched", "unbatched")}
        if args.ingress == "direct":
            base = {mode: _direct_url(mode, [port + 1, port + 2]) for mode in base}
        for mode in base:
            asyncio.run(_load(f"{base[mode]}/predict", 8, 40, 30))  # warm-up
        for concurrency in args.clients:
            runs: dict[str, list[dict[str, Any]]] = {"batched": [], "unbatched": []}
            for _ in range(args.repeats):
                for mode in runs:
                    url = f"{base[mode]}/predict"
                    runs[mode].append(asyncio.run(_load(url, concurrency, args.requests, args.max_seconds)))
            for mode, levels in runs.items():
                best = max(levels, key=lambda level: level["req_per_s"])
                best["all_req_per_s"] = [level["req_per_s"] for level in levels]
                results["modes"][mode].append(best)
                print(f"{mode:9s} {json.dumps(best)}", file=sys.stderr, flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    results["machine"]["load_average_after"] = os.getloadavg()[0]
    top = max(args.clients)
    by = {mode: next(l for l in levels if l["clients"] == top) for mode, levels in results["modes"].items()}
    results["speedup_at_max_clients"] = round(by["batched"]["req_per_s"] / by["unbatched"]["req_per_s"], 2)
    return results


def markdown(results: dict[str, Any]) -> str:
    rows = ["| mode | clients | requests | req/s | texts/s | p50 ms | p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, levels in results["modes"].items():
        for l in levels:
            rows.append(f"| {mode} | {l['clients']} | {l['requests']} | {l['req_per_s']} | {l['texts_per_s']} | "
                        f"{l['p50_ms']} | {l['p99_ms']} | {l['errors']} |")
    rows.append(f"\nbatching speed-up at {max(l['clients'] for l in levels)} clients: "
                f"{results['speedup_at_max_clients']}x (target >= 3x)")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingress", choices=["direct", "proxy"], default="direct",
                        help="direct (default): replicas answer HTTP themselves; proxy: via Serve's HTTP proxy")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=300, help="answers per run (default 300)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per level and mode; the best is kept (default 3)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time cap per level (default 30)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs (= torch threads) of the replica")
    parser.add_argument("--precision", default="auto", choices=["fp32", "bf16", "auto"],
                        help="replica precision, both modes alike (default auto: bf16 where the CPU has it)")
    parser.add_argument("--ray-cpus", type=int, default=4, help="logical CPUs of the local Ray")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    results = run(args)
    print(markdown(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
