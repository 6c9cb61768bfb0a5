"""The `tunefleet` command.

Every subcommand validates its input before doing any Ray work. Bad input (spec, data, names,
resources) ends with a one-line message per problem on stderr and exit code 2; the JSON summary of a
successful run is the last line of stdout, so scripts can `tail -n1 | jq`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
# The run or sweep finished and its summary is printed, but MLflow could not record all of it.
EXIT_TRACKING_INCOMPLETE = 1
# Ctrl-C, as shells report a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Bad command-line input that argparse itself cannot catch."""


class _Parser(argparse.ArgumentParser):
    """argparse with tunefleet's error contract: one `tunefleet: error:` line naming the command, exit 2
    (argparse's own prints a usage block and a line in another format)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("tunefleet").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_BAD_INPUT, f"tunefleet: error: {where}{message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tunefleet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_spec(p: argparse.ArgumentParser) -> None:
        p.add_argument("spec", help="YAML spec, e.g. search_spaces/demo.yaml")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a spec field, e.g. --set train.lr=1e-4 (repeatable)")

    p = commands.add_parser("train", help="one fine-tuning run with the spec's fixed hyperparameters")
    with_spec(p)
    p.set_defaults(handler=_cmd_train)

    data = commands.add_parser("data", help="inspect a spec's data")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data_commands.add_parser("check", help="counts, labels, token lengths and truncation")
    with_spec(p)
    p.set_defaults(handler=_cmd_data_check)

    p = commands.add_parser("sweep", help="hyperparameter sweep (Ray Tune: Optuna/random/grid, ASHA)")
    with_spec(p)
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the interrupted sweep of this spec")
    again.add_argument("--restart", action="store_true",
                       help="start over; earlier results of this sweep are moved aside, not deleted")
    again.add_argument("--extend", type=_trials_to_add, default=0, metavar="N",
                       help="add N trials to the finished sweep of this spec; its search algorithm continues "
                            "from what it learnt, and summary, plots, MLflow run and registry are updated")
    p.set_defaults(handler=_cmd_sweep)
    _add_serve_parser(commands)
    _add_registry_parsers(commands)
    p = commands.add_parser("show", help="where a running or finished sweep stands: trials, best, problems, files")
    p.add_argument("sweep", help="the spec file (its sweep), the sweep's folder, or its name under --storage")
    p.add_argument("--storage", help="the storage folder holding sweeps (default: runs)")
    p.set_defaults(handler=_cmd_show)
    return parser


def _trials_to_add(text: str) -> int:
    """--extend's N: a whole number of trials, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of trials to add; give a whole number of "
                                         "at least 1, e.g. --extend 8")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2): an exit code, like every other outcome
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        print("tunefleet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the CLI's one place that turns errors into exit codes
        if _is_bad_input(exc):
            for line in str(exc).splitlines() or [type(exc).__name__]:
                print(f"tunefleet: error: {line}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
    if result is not None:
        print(json.dumps(result, default=str))
        if isinstance(result, dict) and result.get("interrupted"):
            counts = result["trials"]
            # Ctrl-C while the finalists were retrained (search.final_seeds): the search itself had ended.
            stage = " while retraining the finalists" if result.get("stage") == "final_seeds" else ""
            print(f"tunefleet: interrupted{stage}: {counts['completed']} trial(s) completed, "
                  f"{counts['stopped_early']} stopped early, {counts['failed']} failed, "
                  f"{counts['interrupted']} interrupted; continue with `{result['next']}`", file=sys.stderr)
            return EXIT_INTERRUPTED
        # The work is done and summarised, but MLflow lost part of it (the store went away): say so.
        tracking_error = (result.get("mlflow") or {}).get("error") if isinstance(result, dict) else None
        if tracking_error:
            print(f"tunefleet: error: {tracking_error}", file=sys.stderr)
            return EXIT_TRACKING_INCOMPLETE
    return 0


def _is_bad_input(exc: Exception) -> bool:
    from .data import DataError
    from .spec import SpecError
    from .cluster import PlanError
    from .train.models import ModelError

    bad = (SpecError, DataError, PlanError, ModelError, UsageError, FileNotFoundError)
    return isinstance(exc, bad) or any(type(exc).__name__ == name for name in _BAD_INPUT_NAMES)


# Error classes of later stages that mean "bad input" (checked by name to keep imports lazy).
_BAD_INPUT_NAMES: set[str] = {"RegistryError", "SweepExistsError", "ExtendError", "ServeConfigError", "TrackingError",
                              "ShowError"}


def _load(args: argparse.Namespace) -> Any:
    from .spec import load_spec

    return load_spec(args.spec, args.overrides)


def _cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from .search.single import run_train

    return run_train(_load(args))


def _cmd_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from .search.sweep import run_sweep

    summary = run_sweep(_load(args), resume=args.resume, restart=args.restart, extend=args.extend,
                        verbose=args.verbose)
    if summary.get("interrupted"):
        return summary
    _print_trial_table(summary)
    print(f"report: {Path(summary['storage']) / 'report.html'}; logs: {Path(summary['storage']) / 'logs'}",
          file=sys.stderr)
    return summary


def _print_trial_table(summary: dict[str, Any]) -> None:
    import json as _json
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from .search.results import config_text

    trials = _json.loads((Path(summary["storage"]) / "trials.json").read_text())  # best first
    table = Table(title=f"sweep {summary['sweep']}: {summary['trials']}")
    for column in ("trial", "status", "best", "epochs", "hyperparameters"):
        table.add_column(column)
    for t in trials:
        best = "" if t["best_value"] is None else f"{t['best_value']:.4f}"
        table.add_row(t["trial_id"], t["status"] + (f" ({t['error']})" if t["error"] else ""), best,
                      f"{t['epochs_run']:g}", config_text(t["config"]))
    Console(stderr=True).print(table)


def _cmd_show(args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console

    from .search.show import find_sweep, show

    state = show(find_sweep(args.sweep, args.storage))
    console = Console(stderr=True, highlight=False)
    console.print(f"[bold]sweep {state['sweep']}[/bold]: {state['state']} ({state['folder']})")
    if state["state"] == "finished":
        counts = state["trials"]
        console.print(f"trials: {counts['total']} ({counts['completed']} completed, {counts['stopped_early']} stopped "
                      f"early, {counts['failed']} failed), {state['trial_epochs']} trial-epochs, {state['wall_seconds']} s")
        if state["best"]:
            console.print(f"best: trial {state['best']['trial_id']} {state['best']['config']}; validation "
                          f"{state['best']['validation']}; test {state['best']['test']}")
        for t in state["stopped_or_failed"]:
            console.print(f"  {t['trial_id']}: {t['status']} after {t['epochs_run']:g} epoch(s): {t['reason']}")
        registered = state.get("registered") or {}
        if registered.get("version"):
            console.print(f"registered: {registered['name']} v{registered['version']} {registered['aliases']}: "
                          f"{registered['promoted']['reason']}")
    else:
        counts = state.get("counts") or {}
        console.print(f"trials: {sum(counts.get(k, 0) for k in ('completed', 'stopped_early', 'failed'))}/"
                      f"{state.get('total')} done, {counts.get('running', 0)} running; updated {state.get('updated')}")
        if state.get("best"):
            console.print(f"best so far: {state['best']['value']:.4f} (trial {state['best']['trial_id']}: "
                          f"{state['best']['config']})")
        for t in state.get("running", []):
            console.print(f"  running {t['trial_id']}: epoch {t['epoch']}, {t['value']}")
        for t in state.get("problems", []):
            console.print(f"  {t['trial_id']}: {t['status']} {t.get('error') or ''} {t.get('log') or ''}")
        if state.get("next"):
            console.print(state["next"])
    files = state["files"]
    console.print(f"files: report {files.get('report.html', '-')}; logs {files.get('logs') or '-'}; "
                  f"plots {len(files['plots'])} in {state['folder']}")
    return state


def _cmd_data_check(args: argparse.Namespace) -> dict[str, Any]:
    from .train.models import load_tokenizer
    from .data import data_report, load_data

    spec = _load(args)
    splits = load_data(spec.data, spec.task)
    report = data_report(splits, load_tokenizer(spec.model.name_or_path), spec.model.max_length)
    _print_data_report(spec, splits, report)
    return {"spec": spec.source, "task": spec.task, "labels": splits.label_names, "report": report}


def _print_data_report(spec: Any, splits: Any, report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{spec.name}: {spec.task}, max_length {spec.model.max_length}")
    for column in ("split", "examples", "labels", "p50", "p95", "max", "truncated"):
        table.add_column(column)
    for name, split in report["splits"].items():
        lengths = split["token_length"]
        truncated = str(split["truncated_examples"])
        if "truncated_entity_words" in split:
            truncated += f" ({split['truncated_entity_words']} entity words cut)"
        table.add_row(name, str(split["examples"]), ", ".join(f"{k} {v}" for k, v in split["labels"].items()),
                      str(lengths["p50"]), str(lengths["p95"]), str(lengths["max"]), truncated)
    Console(stderr=True).print(table)


# ---- tunefleet serve ------------------------------------------------------------------------------


def _add_serve_parser(commands: Any) -> None:
    p = commands.add_parser("serve", help="serve a registered model over HTTP (Ray Serve)")
    p.add_argument("model", help="NAME (= NAME@champion), NAME@alias or NAME/version")
    # Loopback by default: the service has no authentication of its own.
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--replicas", type=int, help="fixed number of replicas (default 1)")
    p.add_argument("--ingress", choices=["proxy", "direct"], default="proxy",
                   help="proxy (default): Serve's HTTP proxy, any number of replicas; direct: the one replica "
                        "answers on --port itself, about twice the requests/s on a small machine")
    p.add_argument("--max-batch-size", type=int, help="most requests per forward pass (default 16)")
    p.add_argument("--batch-wait-ms", type=float, help="how long a batch waits to fill (default 10)")
    p.add_argument("--no-batching", action="store_true", help="one forward pass per request")
    p.add_argument("--max-texts", type=int, help="most texts per request (default 64)")
    p.add_argument("--max-chars", type=int, help="most characters per text (default 10000)")
    p.add_argument("--poll-interval", type=float, help="seconds between registry polls for the alias (default 2)")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"],
                   help="fp32 (default; equals `tunefleet predict`), or bf16 autocast: faster batches on CPUs with bf16")
    p.add_argument("--config", metavar="FILE",
                   help="YAML of serve options, or a Serve config like deploy/serve-config.yaml; flags win")
    p.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> None:
    from .serve.app import ServeOptions, options_from_file, serve_forever

    options: dict[str, Any] = options_from_file(args.config) if args.config else {}
    flags = {"replicas": args.replicas, "max_batch_size": args.max_batch_size, "max_texts": args.max_texts,
             "max_chars": args.max_chars, "poll_interval_s": args.poll_interval, "precision": args.precision,
             "batch_wait_timeout_s": None if args.batch_wait_ms is None else args.batch_wait_ms / 1000}
    options |= {key: value for key, value in flags.items() if value is not None}
    if args.replicas is not None:
        options.pop("autoscaling_config", None)  # --replicas means a fixed count
    if args.no_batching:
        options["batching"] = False
    options["model"] = args.model
    source = f"tunefleet serve{f' --config {args.config}' if args.config else ''}"

    def ready(summary: dict[str, Any]) -> None:  # the service runs until Ctrl-C: say where it is now
        print(json.dumps(summary, default=str), flush=True)

    serve_forever(ServeOptions.from_args(options, source=source), args.host, args.port, on_ready=ready,
                  ingress=args.ingress)


# ---- tunefleet models / promote / rollback / predict ----------------------------------------------


def _add_registry_parsers(commands: Any) -> None:
    def with_store(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                                              "in the working folder)")

    p = commands.add_parser("models", help="registered models: versions, aliases, metrics, promotion decisions")
    p.add_argument("name", nargs="?", help="one registered model (default: all)")
    with_store(p)
    p.set_defaults(handler=_cmd_models)

    p = commands.add_parser("promote", help="make a version champion if it beats the champion (or --force)")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--force", action="store_true", help="promote even if the gate says it is not better")
    with_store(p)
    p.set_defaults(handler=_cmd_promote)

    p = commands.add_parser("rollback", help="give champion back to the previous champion")
    p.add_argument("name")
    with_store(p)
    p.set_defaults(handler=_cmd_rollback)

    p = commands.add_parser("predict", help="label texts locally with a registered model (JSON lines out)")
    p.add_argument("model", help="NAME (= NAME@champion), NAME@alias or NAME/version")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append",
                        help='a text to label (repeatable); a JSON object is one structured input, e.g. '
                             '{"text": "...", "text_pair": "..."} for a sentence-pair model')
    source.add_argument("--file", help="a UTF-8 file with one input per line (a text or a JSON object; blank "
                        "lines skipped); - for stdin")
    p.add_argument("--batch-size", type=int, default=32)
    with_store(p)
    p.set_defaults(handler=_cmd_predict)


def _cmd_models(args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    from .tracking.registry import list_models

    rows = list_models(args.name, tracking_uri=args.tracking_uri)
    table = Table(title="registered models")
    for column in ("model", "version", "aliases", "test metric", "decision", "gate", "advantage (interval)", "n",
                   "source sweep", "created"):
        table.add_column(column)
    for r in rows:
        metric = "" if r["test_metric"] is None else f"{r['metric']} {r['test_metric']:.4f}"
        # The paired gate's verdict: the challenger's advantage over the champion it faced, the
        # interval at the gate's confidence, and over how many test examples.
        advantage = "" if r["advantage"] is None else f"{r['advantage']:+.4f}"
        if r["interval"]:
            advantage += f" [{r['interval'][0]:+.4f}, {r['interval'][1]:+.4f}] at {r['confidence']:.0%}"
        table.add_row(r["name"], str(r["version"]), ", ".join(r["aliases"]), metric, r["decision"] or "",
                      r["gate"] or "", advantage, "" if r["test_examples"] is None else str(r["test_examples"]),
                      r["source_sweep"] or "", r["created"])
    Console(stderr=True).print(table)
    return {"models": rows}


def _cmd_promote(args: argparse.Namespace) -> dict[str, Any]:
    from .tracking.registry import promote

    return promote(args.name, args.version, force=args.force, tracking_uri=args.tracking_uri)


def _cmd_rollback(args: argparse.Namespace) -> dict[str, Any]:
    from .tracking.registry import rollback

    return rollback(args.name, tracking_uri=args.tracking_uri)


def _cmd_predict(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .train.predict import Predictor
    from .tracking.registry import resolve_model

    if args.file == "-":
        texts = [line.rstrip("\n") for line in sys.stdin]
    elif args.file:
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"--file {args.file}: no such file; give a text file with one text per line")
        texts = path.read_text(encoding="utf-8").splitlines()
    else:
        texts = args.text
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UsageError("predict: no text to label; pass --text TEXT or a --file with one text per line")
    # A line (or --text) that is a JSON object is one structured input, e.g. a sentence pair
    # {"text": "...", "text_pair": "..."}; anything else is a plain text.
    inputs = [_structured(text) for text in texts]
    model = resolve_model(args.model, tracking_uri=args.tracking_uri)
    predictor = Predictor(model.checkpoint)
    try:
        predictions = predictor.predict(inputs, batch_size=args.batch_size)
    except ValueError as exc:
        raise UsageError(f"predict: {exc}") from None
    for item, prediction in zip(inputs, predictions):
        shown = item if isinstance(item, dict) else {"text": item}
        print(json.dumps({"model": f"{model.name}/{model.version}", **shown, **prediction}), flush=True)


def _structured(text: str) -> Any:
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return text
        return value if isinstance(value, dict) else text
    return text


if __name__ == "__main__":
    sys.exit(main())
