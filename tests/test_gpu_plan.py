"""Planning runs and sweeps on GPUs, on a machine without one: a Ray cluster that declares one GPU.

Ray schedules GPUs as logical resources, so `ray.init(num_gpus=1)` gives a cluster whose planning and
placement are exactly those of a one-GPU node: `plan_resources` counts it, fractional requests pack
onto it, and a worker is told its device through `ray.get_gpu_ids()` and CUDA_VISIBLE_DEVICES, which
is what Ray Train's `get_device()` (so `RayTrainSession.device()`) reads. That cluster runs in a
subprocess: the suite's own Ray (the `ray_cluster` fixture) lives in this process, and one process
holds one Ray. Every expected number below is worked out by hand in the comments.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest

from conftest import processes_naming, tiny_spec_dict
from tunefleet.cluster import gpu_worker_slots

DRIVER = r"""
import json, sys

import ray
from ray.air._internal.device_manager.nvidia_gpu import CUDATorchDeviceManager

from tunefleet.cluster import PlanError, plan_resources
from tunefleet.search.sweep import _concurrency
from tunefleet.spec import spec_from_dict

base, temp_dir = json.loads(sys.argv[1]), sys.argv[2]
ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, _temp_dir=temp_dir,
         logging_level="ERROR", log_to_driver=False)

def spec(workers, gpus, cpus=1.0, **search):
    raw = {**base, "resources": {**base["resources"], "workers": workers, "gpus_per_worker": gpus,
                                 "cpus_per_worker": cpus},
           "search": {**base.get("search", {}), **search}}
    return spec_from_dict(raw)

def attempt(call):
    try:
        return call()
    except PlanError as exc:
        return "PlanError: " + str(exc)

out = {
    "quarter_4": attempt(lambda: plan_resources(spec(1, 0.25, cpus=0.5), concurrent=4)),
    "quarter_5": attempt(lambda: plan_resources(spec(1, 0.25, cpus=0.5), concurrent=5)),
    "half_x3": attempt(lambda: plan_resources(spec(3, 0.5))),
    "third_x3": attempt(lambda: plan_resources(spec(3, 0.33))),
    "one_and_a_half": attempt(lambda: plan_resources(spec(1, 1.5))),
    "whole_x2_runs": attempt(lambda: plan_resources(spec(1, 1), concurrent=2)),
    "cpu_only": attempt(lambda: plan_resources(spec(2, 0))),
    "sweep_auto": attempt(lambda: _concurrency(spec(1, 0.25, cpus=0.5, num_trials=8, max_concurrent="auto"))),
    "sweep_5": attempt(lambda: _concurrency(spec(1, 0.25, cpus=0.5, num_trials=8, max_concurrent=5))),
}

@ray.remote(num_gpus=0.25, num_cpus=0)
class Worker:
    def where(self):
        import os
        return {"gpu_ids": [str(i) for i in ray.get_gpu_ids()],
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                # What Ray Train's get_device() returns in a worker holding a GPU.
                "device": str(CUDATorchDeviceManager().get_devices()[0])}

workers = [Worker.remote() for _ in range(4)]
out["workers"] = ray.get([w.where.remote() for w in workers], timeout=120)
# A fifth quarter does not fit while the four hold the GPU: it waits.
fifth = Worker.remote()
ready, _ = ray.wait([fifth.where.remote()], timeout=3)
out["fifth_quarter_started"] = bool(ready)
ray.shutdown()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def one_gpu_cluster(tiny_model, tmp_path_factory) -> dict:
    """What the driver above saw on a 4-CPU, 1-GPU local cluster."""
    tmp = tmp_path_factory.mktemp("gpu-plan")
    temp_dir = tempfile.mkdtemp(prefix="tfgpu", dir="/tmp")  # Ray's socket paths must stay short
    raw = tiny_spec_dict(tiny_model, tmp / "runs", search={"num_trials": 8})
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(raw), temp_dir], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp, start_new_session=True, env=env)
    try:
        out, err = driver.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        out, err = driver.communicate()
    finally:
        for pid in processes_naming(temp_dir):  # only this cluster's processes: they name its temp folder
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert driver.returncode == 0 and lines, f"driver failed ({driver.returncode}):\n{err[-4000:]}"
    return json.loads(lines[-1])


@pytest.mark.slow
def test_fractional_gpus_pack_several_trials_onto_one_gpu(one_gpu_cluster):
    plans = one_gpu_cluster
    # 1 worker x 0.25 GPU: the one GPU holds 4; CPUs 4 / 0.5 = 8, so the GPU limits it to 4 runs.
    assert plans["quarter_4"] == 4
    assert plans["quarter_5"].startswith("PlanError") and "resources.gpus_per_worker" in plans["quarter_5"]
    # 3 workers x 0.33 GPU: floor(1 / 0.33) = 3 on the GPU, one run; CPUs floor(4 / 3) = 1 as well.
    assert plans["third_x3"] == 1
    # GPUs do not limit a CPU-only spec: 4 CPUs / (2 workers x 1 CPU) = 2 runs.
    assert plans["cpu_only"] == 2


@pytest.mark.slow
def test_a_plan_that_does_not_fit_the_gpus_is_refused_with_the_fix(one_gpu_cluster):
    plans = one_gpu_cluster
    # 3 workers x 0.5 GPU = 1.5 GPUs on a cluster of 1: the GPU holds two such workers, not three;
    # 1/3 of a GPU each would fit them, and the message says so (rounded down to 0.333).
    refused = plans["half_x3"]
    assert refused.startswith("PlanError") and "resources.gpus_per_worker" in refused
    assert "1 GPU(s) hold 2 such worker(s)" in refused and "at most 0.333" in refused
    # Two runs of a whole GPU each on one GPU: half a GPU each would fit.
    assert plans["whole_x2_runs"].startswith("PlanError") and "at most 0.5" in plans["whole_x2_runs"]
    # Ray gives a worker a fraction of one GPU or whole GPUs, never 1.5.
    assert "resources.gpus_per_worker is 1.5" in plans["one_and_a_half"]


@pytest.mark.slow
def test_sweep_concurrency_counts_gpus(one_gpu_cluster):
    # max_concurrent auto: min(CPU fit 8, GPU fit 4, num_trials 8) = 4.
    assert one_gpu_cluster["sweep_auto"] == 4
    refused = one_gpu_cluster["sweep_5"]
    assert refused.startswith("PlanError") and "search.max_concurrent is 5" in refused and "0.25 GPU" in refused


@pytest.mark.slow
def test_workers_sharing_a_gpu_each_see_only_that_gpu(one_gpu_cluster):
    # Four actors of 0.25 GPU all run at once, on the one GPU (id 0), which is all they can see;
    # a fifth waits for a quarter to come free.
    assert one_gpu_cluster["workers"] == [{"gpu_ids": ["0"], "cuda_visible_devices": "0", "device": "cuda:0"}] * 4
    assert one_gpu_cluster["fifth_quarter_started"] is False


def test_gpu_worker_slots_pack_fractions_per_gpu_and_whole_gpus_per_node():
    assert gpu_worker_slots(0.25, [1.0]) == 4
    assert gpu_worker_slots(0.1, [1.0]) == 10  # not 9: 1 // 0.1 is 9.0 in floating point
    # 0.6 of a GPU cannot span two GPUs: two GPUs hold 2 such workers, though 2 / 0.6 = 3.3.
    assert gpu_worker_slots(0.6, [2.0]) == 2
    # Two GPUs per worker must be on one node: a 4-GPU node holds 2, a 1-GPU node none.
    assert gpu_worker_slots(2, [4.0, 1.0]) == 2
    assert gpu_worker_slots(0.5, [0.0]) == 0
