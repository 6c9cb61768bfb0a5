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
from typing import Any

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Bad command-line input that argparse itself cannot catch."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunefleet", description=__doc__.splitlines()[0])
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
    p.set_defaults(handler=_cmd_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        print("tunefleet: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's one place that turns errors into exit codes
        if _is_bad_input(exc):
            for line in str(exc).splitlines() or [type(exc).__name__]:
                print(f"tunefleet: error: {line}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
    if result is not None:
        print(json.dumps(result, default=str))
    return 0


def _is_bad_input(exc: Exception) -> bool:
    from .data import DataError
    from .spec import SpecError
    from .trainer import PlanError

    bad = (SpecError, DataError, PlanError, UsageError, FileNotFoundError)
    return isinstance(exc, bad) or any(type(exc).__name__ == name for name in _BAD_INPUT_NAMES)


# Error classes of later stages that mean "bad input" (checked by name to keep imports lazy).
_BAD_INPUT_NAMES: set[str] = {"RegistryError", "SweepExistsError"}


def _load(args: argparse.Namespace) -> Any:
    from .spec import load_spec

    return load_spec(args.spec, args.overrides)


def _cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from .trainer import run_train

    return run_train(_load(args))


def _cmd_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from .search import run_sweep

    summary = run_sweep(_load(args), resume=args.resume, restart=args.restart)
    _print_trial_table(summary)
    return summary


def _print_trial_table(summary: dict[str, Any]) -> None:
    import json as _json
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    trials = _json.loads((Path(summary["storage"]) / "trials.json").read_text())
    trials.sort(key=lambda t: (t["best_value"] is None, -(t["best_value"] or 0.0)))
    table = Table(title=f"sweep {summary['sweep']}: {summary['trials']}")
    for column in ("trial", "status", "best", "epochs", "hyperparameters"):
        table.add_column(column)
    for t in trials:
        params = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                           for k, v in t["config"].items())
        best = "" if t["best_value"] is None else f"{t['best_value']:.4f}"
        table.add_row(t["trial_id"], t["status"] + (f" ({t['error']})" if t["error"] else ""), best,
                      f"{t['epochs_run']:g}", params)
    Console(stderr=True).print(table)


def _cmd_data_check(args: argparse.Namespace) -> dict[str, Any]:
    from ._models import load_tokenizer
    from .data import data_report, load_data

    spec = _load(args)
    splits = load_data(spec.data, spec.task)
    report = data_report(splits, load_tokenizer(spec.model.name_or_path), spec.model.max_length)
    _print_data_report(spec, splits, report)
    return {"spec": spec.source, "task": spec.task, "labels": splits.label_names, "report": report}


def _print_data_report(spec: Any, splits: Any, report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    table = Table(title=f"{spec.name}: {spec.task}, max_length {spec.model.max_length}")
    for column in ("split", "examples", "labels", "p50", "p95", "max", "truncated"):
        table.add_column(column)
    for name, split in report.items():
        if not isinstance(split, dict) or "examples" not in split:
            continue
        lengths = split.get("token_lengths", {})
        labels = split.get("labels") or split.get("entities") or {}
        table.add_row(name, str(split["examples"]), ", ".join(f"{k} {v}" for k, v in labels.items()),
                      str(lengths.get("p50", "")), str(lengths.get("p95", "")), str(lengths.get("max", "")),
                      str(split.get("truncated", "")))
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
