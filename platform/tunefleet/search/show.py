"""`tunefleet show SWEEP`: where a running or finished sweep stands, read from its folder alone.

A sweep is named by its spec file (the sweep that spec makes, as `--resume` finds it), its folder,
or its folder's name under `--storage` (default `runs`, the spec's default `storage_path`). What it
reads:
- `status.json`, rewritten by the running sweep at every trial event (`progress.py`): trials done,
  running ones with their epoch, the best so far; a sweep whose process is gone without a summary
  was interrupted or killed, and `--resume` continues it;
- `summary.json` and `trials.json` once it finished: the best, stopped and failed trials with their
  reasons, the registry decision;
- where its plots, report, logs and per-example test results are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class ShowError(ValueError):
    """No sweep by that name, folder or spec (CLI exit 2)."""


def find_sweep(target: str, storage: str | None = None) -> Path:
    """The sweep folder `target` names.

    Raises:
        ShowError: naming what was looked for and where.
    """
    path = Path(target)
    if path.is_dir() and _is_sweep(path):
        return path
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        from ..cluster import storage_uri
        from ..spec import load_spec
        from .naming import sweep_name

        spec = load_spec(path)
        folder = Path(storage_uri(spec)) / sweep_name(spec)
        if not _is_sweep(folder):
            raise ShowError(f"{target}: its sweep {folder.name} has not started (no {folder}); "
                            f"run `tunefleet sweep {target}`")
        return folder
    root = Path(storage or "runs")
    folder = root / target
    if _is_sweep(folder):
        return folder
    known = sorted(p.name for p in root.iterdir() if p.is_dir() and _is_sweep(p)) if root.is_dir() else []
    hint = f"sweeps there: {', '.join(known[:10])}" if known else "no sweeps there"
    raise ShowError(f"no sweep {target!r}: not a sweep folder, a spec file, or a sweep under {root.resolve()} "
                    f"({hint}); pass the spec, the folder, or --storage")


def show(folder: Path) -> dict[str, Any]:
    """The sweep's state as one dict (what the command prints as JSON, after its table)."""
    status = _read(folder / "status.json")
    summary = _read(folder / "summary.json")
    trials = _read(folder / "trials.json") or []
    if summary is not None and (status is None or status.get("state") != "running" or not _alive(status.get("pid"))):
        state = "finished"
    elif status is not None and status.get("state") == "running" and _alive(status.get("pid")):
        state = "running"
    elif status is not None and status.get("state") == "interrupted":
        state = "interrupted"
    else:
        state = "stopped"  # its process is gone without a summary: killed, or the machine went down
    out: dict[str, Any] = {"sweep": folder.name, "folder": str(folder), "state": state}
    if state in ("running", "interrupted", "stopped") and status is not None:
        out |= {"total": status["total"], "counts": status["counts"], "best": status["best"],
                "elapsed_seconds": status["elapsed_seconds"], "seconds_left": status.get("seconds_left"),
                "updated": status["updated"],
                "running": [{"trial_id": tid, "epoch": t.get("epoch"), "value": t.get("value"), "config": t.get("config")}
                            for tid, t in status["trials"].items() if t.get("status") == "running"],
                "problems": [{"trial_id": tid, "status": t["status"], "epoch": t.get("epoch"), "error": t.get("error"),
                              "log": t.get("log")}
                             for tid, t in status["trials"].items() if t.get("status") in ("failed", "interrupted")]}
        if state != "running":
            out["next"] = "continue it with `tunefleet sweep SPEC --resume`"
    if summary is not None and state == "finished":
        best = summary.get("best") or {}
        out |= {"trials": summary["trials"], "trial_epochs": summary.get("trial_epochs"),
                "wall_seconds": summary.get("wall_seconds"),
                "best": {"trial_id": best.get("trial_id"), "config": best.get("config"),
                         "validation": best.get("metrics", {}).get("validation"),
                         "test": {k: v for k, v in (best.get("metrics", {}).get("test") or {}).items() if k != "report"}}
                if best else None,
                "registered": summary.get("registered"),
                "stopped_or_failed": [{"trial_id": t["trial_id"], "status": t["status"], "epochs_run": t["epochs_run"],
                                       "reason": t.get("error") or ("stopped by the scheduler" if t["status"] == "stopped_early" else None)}
                                      for t in trials if t["status"] != "completed"]}
    out["files"] = {name: str(folder / name) for name in ("summary.json", "trials.json", "report.html", "test_predictions.json")
                    if (folder / name).exists()}
    out["files"]["plots"] = sorted(str(p) for p in folder.glob("*.png"))
    out["files"]["logs"] = str(folder / "logs") if (folder / "logs").is_dir() else None
    return out


def _is_sweep(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).exists() for name in ("status.json", "summary.json", "tuner.pkl"))


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: Any) -> bool:
    """Whether the sweep's driver process still runs (on this machine)."""
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
