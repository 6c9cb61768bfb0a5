"""What machine a benchmark figure was measured on, recorded beside every figure.

The same code runs at very different speeds on CPUs of one nominal kind: with AVX-512 bf16 or AMX,
`precision: auto` trains in bf16 (about twice fp32's speed); without, in fp32. Every benchmark
script puts `machine()` in its JSON so that RESULTS.md can say which kind of CPU a row comes from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """CPU model, its bf16/AMX flags, the cores this process may use, the load, torch's version."""
    import torch

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    return {
        "cpu": model, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
        "cores": len(os.sched_getaffinity(0)), "load_average_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }
