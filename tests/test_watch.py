"""What a user sees of a real sweep, through the `tunefleet` command as a user runs it: `tunefleet
show` on a running and on a finished sweep, Ctrl-C in a terminal and `--resume`, the console of a
sweep whose output is not a terminal (a pipe, CI) with every trial's messages in its own log file,
and `search.final_seeds` (the finalist retrained with other seeds; its spread on the registered
version; Ctrl-C while it retrains).

Each sweep is a subprocess of `python -m tunefleet.cli`, on the tiny BERT. Most join the suite's Ray
(`resources.ray_address` or RAY_ADDRESS), which saves each command starting a cluster of its own; the
sweep that gets Ctrl-C starts its own, so that SIGINT reaches the driver and the Ray processes it
started, as a terminal's Ctrl-C reaches the whole foreground process group.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_spec_dict
from tunefleet.search.results import TrialRecord
from tunefleet.search.sweep import sweep_name
from tunefleet.spec import SpecError, load_spec, spec_from_dict

CLI = [sys.executable, "-m", "tunefleet.cli"]
LR_SPACE = {"train.lr": {"loguniform": [5.0e-4, 2.0e-3]}}
# Three trials of three epochs, one at a time, on 800 examples: a few seconds an epoch, long enough
# to catch a trial between its first and its last epoch.
WATCHED = {"data": {"format": "synthetic", "synthetic_size": 800}, "train": {"epochs": 3},
           "search": {"algorithm": "random", "num_trials": 3, "max_concurrent": 1, "scheduler": "none",
                      "space": LR_SPACE}}


def _write_spec(tmp_path: Path, tiny_model: str, name: str, **sections) -> tuple[Path, Path]:
    """A spec file in tmp_path (storage tmp_path/runs); the spec's path and its sweep's folder."""
    raw = tiny_spec_dict(tiny_model, tmp_path / "runs", name=name, **sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, tmp_path / "runs" / sweep_name(load_spec(path))


def _joined(ray_cluster) -> dict:
    return {"ray_address": ray_cluster.get_runtime_context().gcs_address}


def _last_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output on stdout"
    return json.loads(lines[-1])


def _show(target: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "show", target, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _status(sweep_dir: Path) -> dict | None:
    try:
        return json.loads((sweep_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None


def _running(status: dict | None) -> list[tuple[str, dict]]:
    return [(tid, t) for tid, t in (status or {}).get("trials", {}).items() if t.get("status") == "running"]


def _epoch_lines(log: Path) -> list[float]:
    """The epochs of the loop's per-epoch lines (`[name] epoch 1.00 step N: ...`, train/loop.py)."""
    return [float(m.group(1)) for m in re.finditer(r"^\[[^\]]+\] epoch (\d+\.\d\d) step \d+:", log.read_text(), re.M)]


def _output(process: subprocess.Popen, out: Path, err: Path) -> str:
    return f"rc {process.returncode}\n--- stdout\n{out.read_text()[-3000:]}\n--- stderr\n{err.read_text()[-3000:]}"


def _stop(process: subprocess.Popen, group: bool = False) -> None:
    """Kill a sweep a failed assertion left running (with its process group: the Ray it started)."""
    if process.poll() is not None:
        return
    if group:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.kill()
    process.wait(timeout=30)


# ---- tunefleet show, Ctrl-C and --resume -------------------------------------------------------------

@pytest.mark.slow
def test_show_a_running_sweep_then_ctrl_c_and_resume(tiny_model, tmp_path, ray_cluster):
    """One sweep watched from another shell, interrupted and resumed, as a user would:

    - `tunefleet show SPEC` while the first trial runs: the trial counts and the running trial's
      epoch, one the trial has reported;
    - SIGINT to the sweep's process group once a trial has ended and the next has reported an
      epoch: the running trial is interrupted (not stopped early), the command exits 130 saying how
      to resume, and `show` says so;
    - `--resume` finishes the sweep, counting the trials that ended before the interruption, and
      `show` (by spec, folder and name) gives the finished sweep as summary.json has it; an unknown
      name exits 2 listing the sweeps there.
    """
    path, sweep_dir = _write_spec(tmp_path, tiny_model, "ctrlc", **WATCHED)
    out, err = tmp_path / "sweep.out", tmp_path / "sweep.err"
    # Its own session (the test's process group is not the one the Ctrl-C goes to) and its own Ray.
    own_ray = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(out, "w") as stdout, open(err, "w") as stderr:
        sweep = subprocess.Popen([*CLI, "sweep", str(path)], stdout=stdout, stderr=stderr, cwd=tmp_path,
                                 env=own_ray, start_new_session=True)
    try:
        # Running: `tunefleet show SPEC` (another process, as from another shell) while the first trial
        # is between its first and its last epoch.
        running = None
        deadline = time.time() + 240
        while time.time() < deadline and sweep.poll() is None and running is None:
            status = _status(sweep_dir)
            # Meant for the first trial; the second will do if `show` was too slow to catch the first.
            if status and status["counts"]["completed"] <= 1 and any(1 <= t.get("epoch", 0) < 3
                                                                     for _, t in _running(status)):
                shown = _show(str(path), cwd=tmp_path)
                state = _last_json(shown.stdout) if shown.returncode == 0 else {}
                if state.get("state") == "running" and any((t["epoch"] or 0) >= 1 for t in state["running"]):
                    running = state
            time.sleep(0.2)
        assert running is not None, f"never saw the sweep running with a reported epoch\n{_output(sweep, out, err)}"
        assert running["sweep"] == sweep_dir.name and running["folder"] == str(sweep_dir)
        assert running["total"] == 3
        counts = running["counts"]
        # One trial at a time: one running, at most one done (none can fail or be stopped here).
        assert counts["running"] == 1 and counts["failed"] == counts["stopped_early"] == counts["interrupted"] == 0
        assert 0 <= counts["completed"] <= 1
        (trial,) = running["running"]
        assert 1 <= trial["epoch"] <= 3 and 5.0e-4 <= trial["config"]["train.lr"] <= 2.0e-3
        # The epoch shown is one the trial has reported: its log (written before the report) has it.
        assert trial["epoch"] in _epoch_lines(sweep_dir / "logs" / f"{trial['trial_id']}.log")
        assert "next" not in running  # nothing to resume while it runs

        caught, done = None, 0
        while time.time() < deadline and sweep.poll() is None:
            status = _status(sweep_dir)
            running_now = [(tid, t) for tid, t in _running(status) if 1 <= t.get("epoch", 0) < 3]
            if status and status["counts"]["completed"] >= 1 and running_now:
                caught, done = running_now[0][0], status["counts"]["completed"]
                break
            time.sleep(0.2)
        assert caught is not None, f"never saw a trial end and the next one running\n{_output(sweep, out, err)}"
        # What a terminal does on Ctrl-C: SIGINT to every process of the foreground group, i.e. the driver
        # and the Ray processes it started (which block SIGINT; Tune's handler in the driver acts on it).
        os.killpg(sweep.pid, signal.SIGINT)
        assert sweep.wait(timeout=120) == 130, _output(sweep, out, err)
    finally:
        _stop(sweep, group=True)

    result = _last_json(out.read_text())
    assert result["interrupted"] is True
    assert result["trials"] == {"completed": done, "stopped_early": 0, "failed": 0, "running": 0, "interrupted": 1}
    assert result["next"] == f"tunefleet sweep {path} --resume"
    stderr = err.read_text()
    assert f"continue with `tunefleet sweep {path} --resume`" in stderr
    assert "Tuner.restore(" not in stderr and "Traceback" not in stderr
    status = _status(sweep_dir)
    assert status["state"] == "interrupted" and status["trials"][caught]["status"] == "interrupted"
    assert status["counts"] == result["trials"]
    assert not (sweep_dir / "summary.json").exists()
    shown = _last_json(_show(str(path), cwd=tmp_path).stdout)
    assert shown["state"] == "interrupted" and "--resume" in shown["next"]
    assert [p["trial_id"] for p in shown["problems"]] == [caught]

    # The first run's Ray went with it; the resume joins the suite's (RAY_ADDRESS), which saves the
    # seconds of starting one.
    joined = own_ray | {"RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    resumed = subprocess.run([*CLI, "sweep", str(path), "--resume"], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path, env=joined)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = _last_json(resumed.stdout)
    assert summary["trials"] == {"total": 3, "completed": 3, "stopped_early": 0, "failed": 0}
    # The resumed sweep's status counts the trials that ended before the Ctrl-C as well as those it ran.
    status = _status(sweep_dir)
    assert status["counts"] == {"completed": 3, "stopped_early": 0, "failed": 0, "running": 0, "interrupted": 0}
    assert status["pid"] != sweep.pid
    # The interrupted trial went on from its checkpoint to its last epoch, in the same log.
    assert _epoch_lines(sweep_dir / "logs" / f"{caught}.log")[-1] == 3.0

    # Finished: `show` by spec, by folder and by name under --storage, as summary.json has it.
    shown = _show(str(path), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    finished = _last_json(shown.stdout)
    assert finished["state"] == "finished"
    assert finished["trials"] == summary["trials"]
    assert finished["best"]["trial_id"] == summary["best"]["trial_id"]
    assert finished["stopped_or_failed"] == []
    assert finished["files"]["report.html"] == str(sweep_dir / "report.html") and (sweep_dir / "report.html").is_file()
    assert finished["files"]["logs"] == str(sweep_dir / "logs")
    assert _last_json(_show(str(sweep_dir), cwd=tmp_path).stdout)["best"] == finished["best"]
    by_name = _show(sweep_dir.name, "--storage", str(tmp_path / "runs"), cwd=tmp_path)
    assert _last_json(by_name.stdout)["trials"] == summary["trials"]

    unknown = _show("no-such-sweep", "--storage", str(tmp_path / "runs"), cwd=tmp_path)
    assert unknown.returncode == 2
    assert "no-such-sweep" in unknown.stderr and str((tmp_path / "runs").resolve()) in unknown.stderr
    assert sweep_dir.name in unknown.stderr  # the sweeps that are there
    assert "Traceback" not in unknown.stderr


# ---- the console off a terminal ---------------------------------------------------------------------

@pytest.mark.slow
def test_a_piped_sweep_prints_a_line_per_trial_and_logs_the_rest(tiny_model, tmp_path, ray_cluster):
    """The demo's shape (Optuna + ASHA, 8 trials, two at a time) with stdout and stderr captured: a
    few dozen lines, one per trial, no Tune table; each trial's epochs are in its own log file."""
    path, sweep_dir = _write_spec(
        tmp_path, tiny_model, "piped", resources=_joined(ray_cluster), train={"epochs": 2, "metric": "loss"},
        search={"algorithm": "optuna", "scheduler": "asha", "num_trials": 8, "max_concurrent": 2, "grace_period": 1,
                "reduction_factor": 2, "space": {"train.lr": {"loguniform": [1.0e-5, 3.0e-3]},
                                                 "train.dropout": {"uniform": [0.0, 0.3]}}})
    done = subprocess.run([*CLI, "sweep", str(path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines() + done.stderr.splitlines()
    # data line, start line, 8 trial lines, the trial table (title 2, frame 4, 8 rows), report line, JSON.
    assert len(lines) <= 40, "\n".join(lines)
    trials = json.loads((sweep_dir / "trials.json").read_text())
    assert len(trials) == 8
    for t in trials:
        ended = [line for line in done.stderr.splitlines() if re.search(rf"trial \d/8 {t['trial_id']} ", line)]
        assert len(ended) == 1, (t["trial_id"], ended)
        word = "completed after" if t["status"] == "completed" else "stopped early at epoch"
        assert word in ended[0], ended[0]
    for tune_console in ("Configuration for experiment", "Resume experiment with", "Trial status", "== Status ==",
                         "Trial name", "Tuner.restore("):
        assert tune_console not in done.stdout + done.stderr
    # Every trial's own per-epoch lines, and only its own, in <sweep>/logs/<trial>.log: as many as the
    # epochs Tune recorded for it (ASHA stopped some after one; two processes ran all eight).
    for t in trials:
        log = sweep_dir / "logs" / f"{t['trial_id']}.log"
        epochs = [float(e) for e in range(1, int(t["epochs_run"]) + 1)]
        assert _epoch_lines(log) == epochs, (t["trial_id"], log.read_text())
    assert (sweep_dir / "logs" / "driver.log").is_file()
    assert "epoch 1.00 step" not in done.stdout + done.stderr  # the trials' lines stay in their logs


# ---- final seeds ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_final_seeds_retrain_the_best_and_its_spread_reaches_the_registry(tiny_model, tmp_path, ray_cluster):
    """Two trials (a grid of two learning rates, validation loss so that they do not tie), then the
    best retrained with seeds train.seed + 1 and + 2 = 4 and 5: the summary's figures are the mean and
    sample standard deviation of those two runs, the registered version carries them, MLflow has the
    four runs as finished children, and only the registered run keeps its checkpoint.

    With train.seed 3 the search's best is lr 3e-4 (validation loss 0.6936 against 0.6946 for 3e-3),
    and its seed 5 (0.6915) beats both it and seed 4 (0.6937): the registered run is a retrained one."""
    from tunefleet.search.sweep import run_sweep
    from tunefleet.tracking import runs as tracking
    from tunefleet.tracking.registry import SEED_STD_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = spec_from_dict(tiny_spec_dict(
        tiny_model, tmp_path / "runs", name="seeded", train={"epochs": 1, "metric": "loss", "seed": 3},
        tracking={"enabled": True, "uri": uri},
        search={"algorithm": "grid", "scheduler": "none", "max_concurrent": 1, "final_seeds": 2, "final_top": 1,
                "space": {"train.lr": {"grid": [3.0e-3, 3.0e-4]}}}), source=str(tmp_path / "seeded.yaml"))
    summary = run_sweep(spec)
    sweep_dir = Path(summary["storage"])
    searched = json.loads((sweep_dir / "trials.json").read_text())
    assert len(searched) == 2
    search_best = min(searched, key=lambda t: t["best_value"])

    final = summary["final_seeds"]
    assert final["seeds"] == [4, 5]
    (finalist,) = final["finalists"]
    assert finalist["trial_id"] == search_best["trial_id"] == final["chosen"]
    assert search_best["config"] == {"train.lr": 3.0e-4}
    assert finalist["search_value"] == search_best["best_value"]
    assert sorted(finalist["seeds"]) == ["4", "5"] and finalist["failed_seeds"] == []
    a, b = finalist["seeds"]["4"], finalist["seeds"]["5"]
    assert a != b  # two seeds, two different runs
    # Mean and sample standard deviation of two values: (a + b) / 2 and |a - b| / sqrt(2).
    assert finalist["mean"] == pytest.approx((a + b) / 2, abs=1e-6) == final["mean"]
    assert finalist["std"] == pytest.approx(abs(a - b) / 2 ** 0.5, abs=1e-6) == final["std"]
    # Registered: the finalist's best run by validation loss, the search trial or a seed.
    runs = {finalist["trial_id"]: finalist["search_value"]}
    retrained_dirs = sorted(p.parent for p in (sweep_dir / "finalists-1").glob("*/params.json"))
    assert len(retrained_dirs) == 2
    for folder in retrained_dirs:
        seed = json.loads((folder / "params.json").read_text())["train.seed"]
        runs[folder.name] = finalist["seeds"][str(seed)]
    registered_run = min(runs, key=runs.get)
    assert registered_run != finalist["trial_id"] and runs[registered_run] == b, \
        f"the setup meant seed 5 to beat the search trial and seed 4; pick another train.seed: {runs}"
    assert final["registered_run"] == finalist["best_run"] == summary["best"]["trial_id"] == registered_run
    # Disk: of the retrained runs only the registered one keeps a checkpoint, the one registered.
    kept = {folder.name for folder in retrained_dirs if any(p.is_dir() for p in folder.glob("checkpoint_*"))}
    assert kept == {registered_run}
    assert summary["best"]["checkpoint"].startswith(str(sweep_dir / "finalists-1" / registered_run))

    # The registry: the version carries the spread (for the gate) and the figures.
    client = tracking.client_for(uri)
    version = client.get_model_version("seeded", str(summary["registered"]["version"]))
    assert float(version.tags[SEED_STD_TAG]) == pytest.approx(final["std"])
    assert json.loads(version.tags["tunefleet.final_seeds"]) == {k: final[k] for k in ("seeds", "mean", "std", "chosen")}
    # MLflow: one parent, four finished children (two searched, two retrained), none orphaned.
    parent = summary["mlflow"]["parent_run_id"]
    experiment = client.get_experiment_by_name("seeded").experiment_id
    children = client.search_runs([experiment], f"tags.`{tracking.PARENT_TAG}` = '{parent}'")
    assert sorted(c.data.tags[tracking.TRIAL_TAG] for c in children) == sorted(
        [t["trial_id"] for t in searched] + [folder.name for folder in retrained_dirs])
    assert all(c.info.status == "FINISHED" and c.data.tags[tracking.END_STATE_TAG] == "completed" for c in children)
    assert client.get_run(parent).info.status == "FINISHED"


@pytest.mark.slow
def test_ctrl_c_while_the_finalists_retrain_ends_the_sweep_and_resume_retrains_them(tiny_model, tmp_path,
                                                                                    ray_cluster):
    """Ctrl-C during the finalist's retraining run ends the command (130) before anything is summarised
    or registered, instead of carrying on with a partial set of seeds; --resume keeps the two searched
    trials and retrains the finalist with both seeds."""
    sections = {"data": {"format": "synthetic", "synthetic_size": 800}, "train": {"epochs": 3, "seed": 7},
                "resources": _joined(ray_cluster),
                "search": {"algorithm": "grid", "scheduler": "none", "max_concurrent": 1, "final_seeds": 2,
                           "space": {"train.lr": {"grid": [1.0e-3, 2.0e-3]}}}}
    path, sweep_dir = _write_spec(tmp_path, tiny_model, "finals", **sections)
    out, err = tmp_path / "sweep.out", tmp_path / "sweep.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        sweep = subprocess.Popen([*CLI, "sweep", str(path)], stdout=stdout, stderr=stderr, cwd=tmp_path)
    try:
        deadline = time.time() + 240
        caught = None
        while time.time() < deadline and sweep.poll() is None:
            running = [tid for tid, t in _running(_status(sweep_dir / "finalists-1")) if 1 <= t.get("epoch", 0) < 3]
            if running:
                caught = running[0]
                break
            time.sleep(0.2)
        assert caught is not None, f"never saw a finalist's seed running\n{_output(sweep, out, err)}"
        # The driver alone: the Ray workers here belong to the suite's cluster, not to the command.
        sweep.send_signal(signal.SIGINT)
        assert sweep.wait(timeout=120) == 130, _output(sweep, out, err)
    finally:
        _stop(sweep)
    result = _last_json(out.read_text())
    assert result["interrupted"] is True and result["stage"] == "final_seeds"
    assert result["trials"] == {"completed": 2, "stopped_early": 0, "failed": 0, "running": 0, "interrupted": 0}
    assert "while retraining the finalists" in err.read_text() and "--resume" in err.read_text()
    assert not (sweep_dir / "summary.json").exists()  # nothing summarised, nothing registered
    assert _status(sweep_dir / "finalists-1")["trials"][caught]["status"] == "interrupted"
    assert _status(sweep_dir)["state"] == "interrupted"

    resumed = subprocess.run([*CLI, "sweep", str(path), "--resume"], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = _last_json(resumed.stdout)
    assert summary["trials"] == {"total": 2, "completed": 2, "stopped_early": 0, "failed": 0}
    (finalist,) = summary["final_seeds"]["finalists"]
    assert sorted(finalist["seeds"]) == ["8", "9"] and finalist["failed_seeds"] == []
    values = list(finalist["seeds"].values())
    assert finalist["mean"] == pytest.approx(statistics.fmean(values), abs=1e-6)


# ---- final seeds without Ray ------------------------------------------------------------------------

def test_final_seeds_below_zero_is_refused_naming_the_field(tiny_model, tmp_path):
    raw = tiny_spec_dict(tiny_model, tmp_path / "runs", search={"final_seeds": -1})
    with pytest.raises(SpecError, match=r"seeded\.yaml: search\.final_seeds: .*greater than or equal to 0 \(got -1\)"):
        spec_from_dict(raw, source="seeded.yaml")


def test_a_finalist_registers_only_a_run_whose_checkpoint_is_still_on_disk(tmp_path):
    """The search's janitor removes the checkpoint of every finished trial that is no longer the best,
    so a finalist other than the search's best keeps a `checkpoint` path whose folder is gone: its
    best run with a checkpoint on disk is registered, and with none there is none to register."""
    from tunefleet.search.finalists import Finalist
    from tunefleet.train.checkpoint import META_FILE

    def run(name: str, value: float, kept: bool) -> TrialRecord:
        folder = tmp_path / name / "checkpoint_000000"
        if kept:
            folder.mkdir(parents=True)
            (folder / META_FILE).write_text("{}")
        return TrialRecord(trial_id=name, config={}, status="completed", best_value=value, checkpoint=str(folder))

    # Accuracy: the search trial scored best (0.9) but its checkpoint was removed; seed 1 (0.8) is kept.
    finalist = Finalist(run("search", 0.9, kept=False),
                        {1: run("seed1", 0.8, kept=True), 2: run("seed2", 0.85, kept=False)})
    assert finalist.best_run("max").trial_id == "seed1"
    assert finalist.summary("max")["best_run"] == "seed1"
    gone = Finalist(run("search-b", 0.9, kept=False), {1: run("seed1-b", 0.8, kept=False)})
    assert gone.best_run("max") is None
    assert gone.summary("max")["best_run"] == "search-b"  # the summary still names the finalist


def test_a_progress_callback_restored_by_resume_feeds_the_resumed_sweeps_state(tmp_path):
    """Tune restores a resumed sweep's callbacks from the tuner.pkl its first run wrote (cloudpickle,
    the local callback class by value). The restored callback must feed the state the resuming
    process made (which carried over the trials that had ended), not the first run's copy."""
    import io
    from types import SimpleNamespace

    import ray.cloudpickle as cloudpickle

    from tunefleet.search.progress import SweepState, sweep_progress

    sweep_dir = tmp_path / "demo-1234"
    first = SweepState("demo-1234", sweep_dir, "val_accuracy", "max", total=3, concurrency=1, planned_epochs=1)
    pickled = cloudpickle.dumps(sweep_progress(first, io.StringIO(), live=False))
    first.start("a", {"train.lr": 1e-3})
    first.result("a", {"epoch": 1, "val_accuracy": 0.5})
    first.end("a")
    first.start("b", {"train.lr": 2e-3})
    first.interrupted()
    first.save()

    # The resuming process: a new state that carries over status.json, registered by a new callback
    # that Tune does not use; Tune calls the unpickled one.
    resumed = SweepState("demo-1234", sweep_dir, "val_accuracy", "max", total=3, concurrency=1, planned_epochs=1)
    resumed.carry_over()
    assert resumed.counts() == {"completed": 1, "stopped_early": 0, "failed": 0, "running": 0, "interrupted": 1}
    # Moved aside until the resumed run writes its own: Tune's restore would copy the old file back.
    assert not (sweep_dir / "status.json").exists() and (sweep_dir / "status.json.resumed").exists()
    stream = io.StringIO()
    sweep_progress(resumed, stream, live=False)
    restored = cloudpickle.loads(pickled)
    for trial_id, value in (("b", 0.75), ("c", 0.6)):
        trial = SimpleNamespace(trial_id=trial_id, config={"train.lr": 2e-3})
        restored.on_trial_start(0, [], trial)
        restored.on_trial_result(0, [], trial, {"epoch": 1, "val_accuracy": value})
        restored.on_trial_complete(0, [], trial)
    assert resumed.counts() == {"completed": 3, "stopped_early": 0, "failed": 0, "running": 0, "interrupted": 0}
    assert resumed.best()[0] == "b" and resumed.trials["b"]["number"] == 2 and resumed.trials["c"]["number"] == 3
    saved = json.loads((sweep_dir / "status.json").read_text())
    assert saved["counts"]["completed"] == 3 and saved["best"]["trial_id"] == "b"
    # ... and writes its lines where the resuming process asked.
    assert "trial 3/3 c completed after 1 epoch(s): val_accuracy 0.6000 | best val_accuracy 0.7500" in stream.getvalue()
