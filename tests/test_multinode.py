"""A real two-node Ray cluster on this machine: a head and a worker node (separate raylets, one CPU
each, so two concurrent trials must use both), a sweep joining it through `resources.ray_address`
with one shared `storage_path`, and the worker node killed mid-sweep.

The cluster and the sweep's driver run in a subprocess of their own (`ray.cluster_utils.Cluster`),
so the suite's in-process Ray is untouched, and only this cluster's processes are ever stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import free_port, processes_naming, tiny_spec_dict

DRIVER = r"""
import json, os, sys, threading, time
from pathlib import Path

import ray
from ray import tune
from ray.cluster_utils import Cluster

from tunefleet.search.sweep import run_sweep, sweep_name
from tunefleet.spec import load_spec

spec_path, temp_dir, dashboard_port, gcs_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
# Every process of this cluster inherits its address: Ray Train's placement-group cleaner asks the
# State API "is my controller alive?", and with other Ray clusters on the machine (the suite's own)
# it would otherwise guess one of them, see no controller there and remove a live trial's workers.
os.environ["RAY_ADDRESS"] = f"{ray.util.get_node_ip_address()}:{gcs_port}"
small = {"num_cpus": 1, "object_store_memory": 150 * 2**20}
cluster = Cluster(initialize_head=True, head_node_args={
    **small, "temp_dir": temp_dir, "gcs_server_port": gcs_port, "include_dashboard": True,
    "dashboard_host": "127.0.0.1", "dashboard_port": dashboard_port})
assert cluster.address == os.environ["RAY_ADDRESS"], (cluster.address, os.environ["RAY_ADDRESS"])
worker = cluster.add_node(**small, temp_dir=temp_dir)
cluster.wait_for_nodes()
nodes = {"head": cluster.head_node.node_id, "worker": worker.node_id}
print(json.dumps({"nodes": nodes, "address": cluster.address}), flush=True)

spec_file = Path(spec_path)
raw = spec_file.read_text().replace("RAY_ADDRESS", cluster.address)
spec_file.write_text(raw)
spec = load_spec(spec_file)
sweep_dir = Path(spec.resources.storage_path) / sweep_name(spec)


def train_recorded_a_worker_checkpoint(snapshot):
    # Whether the run's latest checkpoint (Ray Train's checkpoint manager snapshot) came from the worker node.
    try:
        latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
    except (OSError, ValueError):  # being rewritten
        return False
    return bool(latest) and latest["metrics"].get("node_id") == nodes["worker"]


# Trials whose results from the worker node Tune has received, seen in the driver as they arrive.
# A plain list, not an Event: Tune pickles its callbacks (tuner.pkl), and a lock does not pickle.
tune_has_a_worker_result = []


class WatchWorkerResults(tune.Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("node_id") == nodes["worker"]:
            tune_has_a_worker_result.append(trial.trial_id)


def worker_trial_has_a_checkpoint():
    # A trial's first evaluation is an improvement and publishes a checkpoint. It counts once Ray
    # Train has recorded it (in the run's snapshot, under the shared storage) and Tune has the result
    # too: killed between the two, the trial resumes from epoch 1 but its history lacks that epoch's
    # row, and the test could not see where it began. Tune's side is watched through a callback, not
    # its result.json: that file is buffered, and may show nothing until the trial has ended.
    return (any(train_recorded_a_worker_checkpoint(s) for s in sweep_dir.glob("train/*/checkpoint_manager_snapshot.json"))
            and bool(tune_has_a_worker_result))


def kill_the_worker_node_once_its_trial_has_a_checkpoint():
    # Waiting for the worker node's own trial, not for both trials: the head's trial may start late,
    # and the worker's could finish all its epochs meanwhile.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if worker_trial_has_a_checkpoint():
            cluster.remove_node(worker, allow_graceful=False)
            print(json.dumps({"killed": nodes["worker"]}), flush=True)
            return
        time.sleep(0.1)


killer = threading.Thread(target=kill_the_worker_node_once_its_trial_has_a_checkpoint, daemon=True)
killer.start()
try:
    summary = run_sweep(spec, callbacks=[WatchWorkerResults()])
    print(json.dumps({"summary": summary}), flush=True)
finally:
    ray.shutdown()
    cluster.shutdown()
"""


@pytest.fixture(scope="module")
def two_node_sweep(tiny_model, tmp_path_factory):
    """Run the sweep on a fresh two-node cluster, killing the worker node mid-sweep; the driver's
    JSON events and the sweep folder."""
    tmp = tmp_path_factory.mktemp("multinode")
    # Short: Ray's socket paths live under it and must fit in 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="tfmn", dir="/tmp")
    raw = tiny_spec_dict(tiny_model, tmp / "shared-storage", name="two-nodes",
                         data={"format": "synthetic", "synthetic_size": 800}, train={"epochs": 4},
                         resources={"ray_address": "RAY_ADDRESS", "max_failures": 3},
                         # Ray Train runs: what a node's loss does to a Train worker group and its
                         # checkpoints is what this test is about (one-worker trials would otherwise
                         # train in Tune's trial process; test_search kills one of those).
                         search={"algorithm": "random", "num_trials": 2, "scheduler": "none", "trial_runner": "ray_train",
                                 "seed_with_spec": False, "space": {"train.lr": {"loguniform": [5e-4, 2e-3]}}})
    spec = tmp / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    log = tmp / "driver.log"
    with open(log, "w") as err:
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(spec), temp_dir, str(free_port()),
                                   str(free_port())],
                                  stdout=subprocess.PIPE, stderr=err, text=True, cwd=tmp, start_new_session=True,
                                  env={**os.environ, "RAY_DEDUP_LOGS": "0"})
        try:
            out, _ = driver.communicate(timeout=480)
        except subprocess.TimeoutExpired:
            os.killpg(driver.pid, signal.SIGKILL)
            out, _ = driver.communicate()
    leftovers = processes_naming(temp_dir)
    for pid in leftovers:  # only this cluster's processes: they name its temp folder
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    events = {}
    for line in out.splitlines():
        if line.startswith("{"):
            # raw_decode: Ray's log monitor may append its own message (a killed raylet's notice) to
            # the same line, with no newline between.
            events |= json.JSONDecoder().raw_decode(line)[0]
    if "summary" not in events:
        pytest.fail(f"the two-node sweep did not finish (exit {driver.returncode}); driver log tail:\n"
                    + "\n".join(log.read_text().splitlines()[-40:]))
    trials = json.loads((Path(events["summary"]["storage"]) / "trials.json").read_text())
    return {**events, "trials": trials, "leftovers": leftovers}


@pytest.mark.slow
def test_a_sweep_on_two_nodes_runs_trials_on_both(two_node_sweep):
    nodes = two_node_sweep["nodes"]
    assert nodes["head"] != nodes["worker"]
    seen = {h["node_id"] for t in two_node_sweep["trials"] for h in t["history"]}
    assert {nodes["head"], nodes["worker"]} <= seen
    # One shared storage path: every trial's checkpoints and results sit under the one sweep folder.
    storage = Path(two_node_sweep["summary"]["storage"])
    assert Path(two_node_sweep["summary"]["best"]["checkpoint"]).is_relative_to(storage)
    assert two_node_sweep["leftovers"] == [], "the cluster left processes behind"


@pytest.mark.slow
def test_trials_of_a_killed_node_resume_on_the_survivor_from_checkpoint(two_node_sweep):
    nodes, summary = two_node_sweep["nodes"], two_node_sweep["summary"]
    assert two_node_sweep.get("killed") == nodes["worker"], "the worker node was never killed"
    # Every trial accounted for, none lost.
    assert summary["trials"] == {"total": 2, "completed": 2, "stopped_early": 0, "failed": 0}
    moved = next(t for t in two_node_sweep["trials"] if t["history"][0]["node_id"] == nodes["worker"])
    epochs = [h["epoch"] for h in moved["history"]]
    where = [h["node_id"] for h in moved["history"]]
    assert where[-1] == nodes["head"], f"the trial never moved to the surviving node: {where}"
    # Resumed from its checkpoint on the head: it went on after epoch 1 instead of starting over.
    assert epochs.count(1.0) == 1 and max(epochs) == 4.0, epochs
    assert moved["epochs_run"] == 4.0
