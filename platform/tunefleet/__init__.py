"""tunefleet: fine-tune, sweep, track, register and serve transformer models on Ray.

The flow, one subpackage per stage, each importing only from those before it:

    spec -> cluster -> data -> tasks -> train -> tracking -> search -> serve -> cli

- `spec`: the YAML spec, validated once into frozen objects (`plugins` names what it may choose);
- `cluster`: Ray start-up and the resource plan, checked before anything is launched;
- `data/`: readers for every input format, splits, the synthetic demo set, the data report;
- `tasks/`: one module per task (what it reads, its head, loss, metrics and answers), by name;
- `train/`: the per-worker loop, batching, tokenized cache, checkpoints, Ray Train launch, `Predictor`;
- `tracking/`: MLflow runs, the model registry and its champion gate;
- `search/`: Ray Tune sweeps (searchers and schedulers by name) and the single tracked run;
- `serve/`: a registered model over HTTP with Ray Serve.

Public names are re-exported here, loaded lazily so that `import tunefleet` (and the CLI's start-up)
does not pull in torch, Ray or MLflow.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Spec": "spec", "SpecError": "spec", "load_spec": "spec", "spec_from_dict": "spec",
    "DataError": "data", "DataSplits": "data", "Examples": "data", "load_data": "data", "data_report": "data",
    "get_task": "tasks", "TokenizedSplit": "tasks",
    "PlanError": "cluster", "init_ray": "cluster",
    "train_loop_per_worker": "train.loop", "build_trainer": "train.launch", "Predictor": "train.predict",
    "run_train": "search.single", "run_sweep": "search.sweep", "TrialRecord": "search.sweep",
    "RegistryError": "tracking.registry", "resolve_model": "tracking.registry",
    "register_checkpoint": "tracking.registry", "promote": "tracking.registry",
    "rollback": "tracking.registry", "list_models": "tracking.registry",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tunefleet' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
