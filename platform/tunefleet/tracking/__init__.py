"""Tracking: MLflow runs for every sweep and trial, and the model registry with its champion gate.

- `runs`: the parent run per sweep, a child run per trial, one run per `tunefleet train`;
- `registry`: register a checkpoint as a version, promote it (aliases) only when it is better;
- `lock`: the per-model lock that keeps the champion consistent when sweeps finish at once;
- `pyfunc`: the registered model as an MLflow pyfunc behind `Predictor`.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "TrackingError": "runs", "tracking_uri": "runs",
    "RegistryError": "registry", "resolve_model": "registry", "register_checkpoint": "registry",
    "promote": "registry", "rollback": "registry", "list_models": "registry",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
