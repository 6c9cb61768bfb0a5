"""train/allocator.py: the word-embedding gradient that each training step makes and frees is
reused, not page-faulted in afresh.

Each case runs in its own Python process (malloc's settings are process-wide and cannot be put back),
in a thread, as the loop runs under Ray Tune and Ray Train: training steps of a one-layer BERT whose
word embeddings are 32,768 x 384 fp32, the size class of MiniLM's (30,522 x 384). Its gradient is
48 MiB = 12,288 pages of 4 KiB, a new dense tensor every backward. After warm-up steps, four steps
fault in at least 4 x 12,288 = 49,152 pages if each gradient is mapped anew, and fewer than one
gradient's pages in all if freed memory is kept.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")

PAGES_PER_STEP = (32768 * 384 * 4) // 4096  # 12,288: the embedding gradient
STEPS = 4

SCRIPT = """
import json, resource, sys, threading
import torch
from transformers import BertConfig, BertForTokenClassification
from tunefleet.train.allocator import keep_freed_memory

out = {}

def steps():
    out["kept"] = keep_freed_memory() if sys.argv[1] == "keep" else None
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = BertForTokenClassification(BertConfig(vocab_size=32768, hidden_size=384, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=128, num_labels=3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, 32768, (4, 16))

    def step():
        model(input_ids=ids, labels=torch.zeros_like(ids) + 1).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(10):  # warm-up: optimizer state, and malloc's bins settling on the step's sizes
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(%d):
        step()
    out["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

thread = threading.Thread(target=steps)
thread.start()
thread.join()
print(json.dumps(out))
""" % STEPS


@functools.cache
def faults(mode: str, switch: str | None = None) -> dict:
    """The steps' page faults in a fresh process; `switch`: TUNEFLEET_KEEP_FREED_MEMORY's value."""
    # The switch from this environment is left out, so that a run of the suite with it set still tests the default.
    env = {k: v for k, v in os.environ.items() if k != "TUNEFLEET_KEEP_FREED_MEMORY"}
    env |= {"TUNEFLEET_KEEP_FREED_MEMORY": switch} if switch is not None else {}
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=300,
                          env=env, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_embedding_gradient_of_each_step_is_reused_not_faulted_in_again():
    baseline = faults("default")
    if baseline["faults"] < 0.9 * STEPS * PAGES_PER_STEP:
        # Transparent huge pages for every mapping ("always") fault 2 MiB at a time: nothing to tell apart.
        pytest.skip(f"malloc's default faulted only {baseline['faults']} pages in {STEPS} steps here")
    kept = faults("keep")
    assert kept["kept"] is True
    # Every step reuses the warm-up's pages: fewer faults in four steps than one gradient's 12,288.
    assert kept["faults"] < PAGES_PER_STEP, kept


def test_the_environment_switch_leaves_malloc_as_it_is():
    off = faults("keep", "0")
    assert off["kept"] is False
    baseline = faults("default")
    # Switched off, the steps fault as many pages as malloc's defaults do (within one gradient's worth).
    assert abs(off["faults"] - baseline["faults"]) < PAGES_PER_STEP, (off, baseline)


def test_the_switch_set_for_the_driver_is_among_the_settings_init_ray_hands_to_workers(monkeypatch):
    from tunefleet.cluster import training_env

    monkeypatch.delenv("TUNEFLEET_KEEP_FREED_MEMORY", raising=False)
    assert training_env() == {}  # unset: workers keep the default (memory kept)
    monkeypatch.setenv("TUNEFLEET_KEEP_FREED_MEMORY", "0")
    assert training_env() == {"TUNEFLEET_KEEP_FREED_MEMORY": "0"}  # init_ray hands it to the runtime env
