"""Out of GPU memory, on CPU: the loop's answer to `torch.cuda.OutOfMemoryError`, and the memory options.

No GPU is needed: torch's CPU builds have the exception class, and the model's forward is wrapped to
raise it whenever a training batch holds more than `limit` examples, as a GPU too small for the batch
would. The runs go through `train_local` (the loop without Ray) on the tiny model, one epoch each.

Hand-worked numbers: the synthetic set of 200 examples leaves 140 for training (checked in the test).
At batch_size 16 that is ceil(140 / 16) = 9 batches, so 9 optimizer steps per epoch; at batch_size 4
with grad_accum_steps 4 it is 35 batches, ceil(35 / 4) = 9 optimizer steps again (the effective batch
is unchanged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import tiny_spec_dict
from tunefleet.spec import spec_from_dict
from tunefleet.train import loop
from tunefleet.train.launch import prepare_data
from tunefleet.train.local import train_local
from tunefleet.train.loop import TrainingOutOfMemory

pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")


def _spec(tiny_model: str, tmp_path: Path, **train: Any):
    return spec_from_dict(tiny_spec_dict(tiny_model, tmp_path / "runs", train={"epochs": 1, "batch_size": 16, **train}))


def _oom_above(monkeypatch: pytest.MonkeyPatch, limit: int) -> list[tuple[int, bool]]:
    """Make every model the loop builds run out of memory on a training batch of more than `limit`
    examples; returns the (batch size, training?) of every forward call, in order."""
    calls: list[tuple[int, bool]] = []
    real_build = loop.build_model

    def build_model(*args: Any, **kwargs: Any) -> Any:
        model = real_build(*args, **kwargs)
        forward = model.forward

        def forward_or_oom(*f_args: Any, **f_kwargs: Any) -> Any:
            size = int(f_kwargs["input_ids"].shape[0])
            calls.append((size, model.training))
            if model.training and size > limit:
                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {size * 64} MiB")
            return forward(*f_args, **f_kwargs)

        model.forward = forward_or_oom  # nn.Module.__call__ calls the instance's forward
        return model

    monkeypatch.setattr(loop, "build_model", build_model)
    return calls


def test_out_of_memory_fails_the_run_with_batch_size_length_model_and_fix(tiny_model, tmp_path, monkeypatch):
    calls = _oom_above(monkeypatch, limit=8)
    spec = _spec(tiny_model, tmp_path)
    with pytest.raises(TrainingOutOfMemory) as err:
        train_local(spec, tmp_path / "out")
    message = str(err.value)
    assert f"out of GPU memory at batch_size 16, max_length 32, model {tiny_model}" in message
    assert "lower train.batch_size or model.max_length, or set train.auto_batch_size: true" in message
    # One attempt only: the first batch ran out of memory and nothing was tried again.
    assert calls == [(16, True)]
    # Reported like a divergence, the channel a sweep turns into a failed trial with its reason.
    reports = [line for line in (tmp_path / "out" / "reports.jsonl").read_text().splitlines()]
    assert len(reports) == 1 and '"diverged": 1' in reports[0] and "out of GPU memory at batch_size 16" in reports[0]


def test_auto_batch_size_halves_the_batch_and_doubles_accumulation_until_it_fits(tiny_model, tmp_path, monkeypatch):
    calls = _oom_above(monkeypatch, limit=4)
    spec = _spec(tiny_model, tmp_path, auto_batch_size=True)
    prepared = prepare_data(spec)
    assert len(prepared.tokenized["train"]) == 140  # the module docstring's arithmetic rests on it
    summary = train_local(spec, tmp_path / "out", prepared=prepared)
    # 16 and 8 ran out of memory; 4 fits, with 4x the accumulation: the same 16 examples per step.
    assert (summary["batch_size"], summary["grad_accum_steps"]) == (4, 4)
    first, second = summary["oom_retries"]
    assert "at batch_size 16," in first and "retrying at batch_size 8, grad_accum_steps 2" in first
    assert "at batch_size 8," in second and "retrying at batch_size 4, grad_accum_steps 4" in second
    assert [size for size, training in calls if training][:3] == [16, 8, 4]
    assert max(size for size, training in calls[2:] if training) == 4
    # 140 examples, 16 per optimizer step: 9 steps, as at the spec's own batch size.
    assert summary["history"][-1]["step"] == 9
    assert summary["metrics"]["test"]["accuracy"] >= 0.0  # it finished and scored its checkpoint


def test_auto_batch_size_gives_up_below_batch_size_one_with_the_reason(tiny_model, tmp_path, monkeypatch):
    calls = _oom_above(monkeypatch, limit=0)
    spec = _spec(tiny_model, tmp_path, batch_size=4, auto_batch_size=True)
    with pytest.raises(TrainingOutOfMemory) as err:
        train_local(spec, tmp_path / "out")
    assert [size for size, _ in calls] == [4, 2, 1]
    assert f"out of GPU memory at batch_size 1, max_length 32, model {tiny_model}" in str(err.value)
    assert "auto_batch_size: true" not in str(err.value)  # it was on already: not offered as the fix


def test_gradient_checkpointing_reaches_the_model_before_training(tiny_model, tmp_path, monkeypatch):
    built: list[Any] = []
    real_build = loop.build_model
    monkeypatch.setattr(loop, "build_model", lambda *a, **k: built.append(real_build(*a, **k)) or built[-1])
    for flag in (False, True):
        spec = _spec(tiny_model, tmp_path, gradient_checkpointing=flag, epochs=1)
        summary = train_local(spec, tmp_path / f"out-{flag}")
        # What transformers' is_gradient_checkpointing (is_activation_checkpointing from 5.0) reads.
        assert any(getattr(module, "gradient_checkpointing", False) for module in built[-1].modules()) is flag
        assert summary["history"][-1]["step"] == 9


# ---- in a sweep, under Ray Train --------------------------------------------------------------------

SWEEP_DRIVER = r"""
import json, sys

import ray

from tunefleet.search.sweep import run_sweep
from tunefleet.spec import spec_from_dict

raw, oom_log = json.loads(sys.argv[1]), sys.argv[2]


def oom_above_8():
    # Runs in every Ray worker process: the same forward wrapper as the in-process tests, logging
    # every out-of-memory it raises, so that a retried run would show as a second line.
    import torch
    from tunefleet.train import loop

    real_build = loop.build_model

    def build_model(*args, **kwargs):
        model = real_build(*args, **kwargs)
        forward = model.forward

        def forward_or_oom(*f_args, **f_kwargs):
            size = int(f_kwargs["input_ids"].shape[0])
            if model.training and size > 8:
                with open(oom_log, "a") as out:
                    out.write(f"{size}\n")
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return forward(*f_args, **f_kwargs)

        model.forward = forward_or_oom
        return model

    loop.build_model = build_model


real_init = ray.init


def init(*args, **kwargs):
    kwargs["runtime_env"] = {**kwargs.get("runtime_env", {}), "worker_process_setup_hook": oom_above_8}
    return real_init(*args, **kwargs)


ray.init = init
summary = run_sweep(spec_from_dict(raw))
print(json.dumps({"trials": summary["trials"], "storage": summary["storage"], "best": summary["best"]["trial_id"]}))
"""


@pytest.mark.slow
def test_an_out_of_memory_trial_fails_with_its_reason_once_and_the_sweep_goes_on(tiny_model, tmp_path):
    """Grid over batch sizes 16 and 4 on a 'GPU' that holds 8: the 16 trial fails with the reason and
    is not retried although resources.max_failures is 2; the 4 trial completes and is the best."""
    import json
    import os
    import subprocess
    import sys

    raw = tiny_spec_dict(tiny_model, tmp_path / "runs", train={"epochs": 1}, resources={"max_failures": 2},
                         search={"algorithm": "grid", "scheduler": "none", "max_concurrent": 1,
                                 "space": {"train.batch_size": {"grid": [16, 4]}}})
    oom_log = tmp_path / "oom.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", SWEEP_DRIVER, json.dumps(raw), str(oom_log)], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    summary = json.loads(lines[-1])
    assert summary["trials"] == {"total": 2, "completed": 1, "stopped_early": 0, "failed": 1}
    records = json.loads((Path(summary["storage"]) / "trials.json").read_text())
    trials = {t["config"]["train.batch_size"]: t for t in records}
    assert trials[16]["status"] == "failed"
    assert trials[16]["error"].startswith(f"out of GPU memory at batch_size 16, max_length 32, model {tiny_model}")
    assert trials[4]["status"] == "completed" and summary["best"] == trials[4]["trial_id"]
    # One out-of-memory, once: neither Ray Train (max_failures 2) nor Tune ran the trial again.
    assert oom_log.read_text().split() == ["16"]
