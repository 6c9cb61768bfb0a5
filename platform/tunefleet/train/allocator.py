"""Keep freed memory in a CPU training process, so that each step's large buffers are reused instead
of faulted in afresh from the kernel.

Why: every backward pass makes the word-embedding gradient as a new dense tensor (vocabulary x hidden
in fp32: 47 MB for MiniLM), and the optimizer step frees it again. glibc's malloc serves a block over
its mmap threshold (which it raises by itself to at most 32 MB) with a fresh `mmap` and unmaps it on
`free`, so every step page-faults those 47 MB in, 4 KiB at a time, zeroes them and unmaps them: about
17,000 minor page faults a step on the EPYC of issue 13. Training steps repeat the same sizes, so
memory kept is memory reused: with these settings the faults fell to about 1,200 a step, a MiniLM step
took 1/1.07 of the time in fp32 and 1/1.18 in bf16, and the peak resident memory stayed the same in
fp32 and rose 2-8% in bf16 (`benchmarks/RESULTS.md`, "Freed memory kept").

The settings (glibc's `mallopt`; process-wide; they apply to later allocations and frees):
- `M_MMAP_THRESHOLD` 1 GiB: blocks up to 1 GiB come from malloc's heaps, not from their own mmap.
- `M_TRIM_THRESHOLD` 2 GiB: freed memory at the top of the main heap goes back to the kernel only
  past 2 GiB (glibc keeps twice the mmap threshold when it adjusts them itself).
- `M_TOP_PAD` 64 MiB: a thread's heap (the loop runs in a thread under Ray Tune and Ray Train) that
  empties is otherwise unmapped at once; with this much padding it is kept. Such heaps are at most
  64 MiB, so in a thread a block larger than that (BERT-base's 94 MB embedding gradient) still gets
  its own mmap, and gains nothing; in a process's main thread it does.

The cost: the process does not hand memory back to the kernel between steps or trials; its resident
memory stays near its peak, which a training process reaches every step anyway. Set
`TUNEFLEET_KEEP_FREED_MEMORY=0` in the environment to leave malloc as it is (a machine shared with
other memory-hungry work, or to measure the difference); `cluster.init_ray` hands it to every node's
workers. Nothing happens where there is no glibc (macOS, musl): `keep_freed_memory` then returns
False. GPU runs keep malloc's defaults: their large buffers are on the device.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

from ..cluster import KEEP_FREED_MEMORY as ENV

# mallopt's parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3

MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 2 << 30
TOP_PAD = 64 << 20


def keep_freed_memory() -> bool:
    """Apply the settings above to this process; True if they took effect."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success, 0 if glibc refused the value; all three or nothing worth saying.
    results = [libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD),
               libc.mallopt(M_TOP_PAD, TOP_PAD)]
    return all(r == 1 for r in results)


def _glibc() -> ctypes.CDLL | None:
    """This process's C library if it is glibc (the only one whose mallopt takes these numbers)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # only glibc has it
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
