"""Search: sweeps of many trials with Ray Tune, and the single tracked run of `tunefleet train`.

- `sweep`: `run_sweep`, trials, stoppers, results and the summary;
- `single`: `run_train`, the spec's own point trained once;
- `plots`: the sweep's optimisation history, parallel coordinates and learning curves.
"""

from .._lazy import lazy_exports

_EXPORTS = {"run_sweep": "sweep", "TrialRecord": "sweep", "sweep_name": "sweep", "run_train": "single"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
