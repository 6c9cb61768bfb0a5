"""tunefleet: fine-tune, sweep, track, register and serve transformer models on Ray.

The flow, one module per stage: `spec` -> `data` -> `tasks` -> `train_loop` -> `trainer` ->
`search` -> `tracking` / `registry` -> `serve`. Public names are re-exported here, loaded lazily
so that `import tunefleet` (and the CLI's start-up) does not pull in torch, Ray or MLflow.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Spec": "spec", "SpecError": "spec", "load_spec": "spec", "spec_from_dict": "spec",
    "DataError": "data", "DataSplits": "data", "Examples": "data", "load_data": "data", "data_report": "data",
    "get_task": "tasks", "TokenizedSplit": "tasks",
    "train_loop_per_worker": "train_loop",
    "PlanError": "trainer", "run_train": "trainer", "build_trainer": "trainer", "init_ray": "trainer",
    "run_sweep": "search", "TrialRecord": "search",
    "Predictor": "predict",
    "RegistryError": "registry", "resolve_model": "registry", "register_checkpoint": "registry",
    "promote": "registry", "rollback": "registry", "list_models": "registry",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tunefleet' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
