"""A sweep's name, from its spec alone: light to import (no Ray, no torch), so that `tunefleet show
SPEC.yaml` finds a sweep's folder in a fraction of a second."""

from __future__ import annotations

import hashlib
import json

from ..spec import Spec


def sweep_name(spec: Spec) -> str:
    """Deterministic: the same spec (and overrides) always names the same sweep, so --resume finds it."""
    raw = spec.to_dict()
    raw.pop("source", None)
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:8]
    return f"{spec.name}-{digest}"
