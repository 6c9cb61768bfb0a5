"""Search: sweeps of many trials with Ray Tune, and the single tracked run of `tunefleet train`.

Read in the order a sweep runs:
- `space`: the spec's search space as Tune distributions, and the point tried first;
- `searchers`, `schedulers`: the plug-ins named by `search.algorithm` and `search.scheduler`;
- `stoppers`: the sweep ends at a target metric or on a plateau;
- `janitor`: stopped and beaten trials lose their checkpoints while the sweep runs;
- `naming`: a sweep's name from its spec (`--resume` and `tunefleet show` find it by it);
- `sweep`: `run_sweep` and the trial function, which wire the above together;
- `extend`: more trials in a finished sweep (`--extend N`), its searcher restored from its saved state;
- `results`: `TrialRecord`s, the best trial and the summary;
- `plots`: the sweep's optimisation history, parallel coordinates and learning curves;
- `report`, `optuna_export`: the sweep's `report.html`, and its trials as an Optuna study for
  `optuna-dashboard`;
- `progress`, `logs`, `show`: what the user watches: the progress view and status.json, per-trial
  log files, `tunefleet show`;
- `single`: `run_train`, the spec's own point trained once.
"""

from .._lazy import lazy_exports

_EXPORTS = {"run_sweep": "sweep", "sweep_name": "naming", "build_search_alg": "sweep", "build_scheduler": "sweep",
            "TrialRecord": "results", "collect_trials": "results", "pick_best": "results",
            "tune_space": "space", "run_train": "single"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
