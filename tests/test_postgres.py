"""The registry on the store the deploy docs promise: `mlflow server` on PostgreSQL.

A throwaway PostgreSQL server (initdb in a temp folder) backs a real `mlflow server`; three
`tunefleet sweep` commands of one task run at once against it and must leave exactly one champion,
every version's decision recorded in the order the lock let them in, and every run logged once.

On PostgreSQL two first writes of one registered-model tag are two INSERTs of one key, and the
later fails with a unique-key violation (HTTP 400): the registry's lock must read that as "a racer
wrote first", not as a broken store (`test_a_lock_write_that_loses_the_insert_race_waits`).

initdb refuses to run as root; as root, the server runs as the `postgres` user.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import free_port, running_mlflow_server, tiny_spec_dict

NAME = "pg-race"
SWEEPS = (1, 2, 3)  # each sweep's train.seed and search.seed: three distinct sweeps of one task
TRIALS = 2


def _postgres_program(program: str) -> str | None:
    """A PostgreSQL program on PATH, else under Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which(program)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{program}"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return str(versions[-1]) if versions else None


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")


@pytest.fixture(scope="module")
def postgres_uri():
    """A throwaway PostgreSQL server on a free loopback port with an empty database `mlflow`; its
    SQLAlchemy URI. Stopped (and its folder removed) at the end of the module, failed or not."""
    programs = {p: _postgres_program(p) for p in ("initdb", "pg_ctl", "createdb")}
    missing = [p for p, path in programs.items() if path is None]
    if missing:
        pytest.skip(f"PostgreSQL not installed ({', '.join(missing)} not on PATH nor under /usr/lib/postgresql)")
    port = free_port()
    uri = f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    _require_driver(uri)
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb: "cannot be run as root"
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, which initdb refuses, and there is no `postgres` user to run it as")
        as_user = ["runuser", "-u", "postgres", "--"]
    # Not under pytest's temp folder: as root that is private to root, and the server runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="tunefleet-pg-"))
    if owner is not None:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data, log = folder / "data", folder / "server.log"
    started = False
    try:
        _run([*as_user, programs["initdb"], "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
              "--locale=C", "--no-sync"], "initdb")
        # Durability off: a throwaway server, and MLflow's schema migrations commit hundreds of times.
        options = (f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        done = subprocess.run([*as_user, programs["pg_ctl"], "-D", str(data), "-o", options, "-l", str(log),
                               "start", "-w", "-t", "60"], capture_output=True, text=True, timeout=90)
        started = True  # even a failed start may have left a postmaster behind; stop it below
        if done.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else done.stderr
            raise RuntimeError(f"pg_ctl start failed ({done.returncode}): {tail}")
        _run([programs["createdb"], "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"], "createdb")
        yield uri
    finally:
        if started:
            subprocess.run([*as_user, programs["pg_ctl"], "-D", str(data), "stop", "-m", "fast", "-w"],
                           capture_output=True, timeout=90)
        shutil.rmtree(folder, ignore_errors=True)


def _require_driver(uri: str) -> None:
    """Skip (fail under CI) unless SQLAlchemy, and so `mlflow server`, can load its PostgreSQL driver."""
    from sqlalchemy.engine import make_url

    dialect = make_url(uri).get_dialect()
    try:
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()
    except ImportError as exc:
        pytest.skip(f"no PostgreSQL driver for {uri.split(':')[0]}:// ({exc}); `pip install -e '.[dev]'` installs it")


@pytest.fixture(scope="module")
def pg_mlflow(postgres_uri, tmp_path_factory) -> str:
    """`mlflow server` on the PostgreSQL database (artifacts proxied to a temp folder); its URI."""
    folder = tmp_path_factory.mktemp("mlflow-on-postgres")
    with running_mlflow_server(postgres_uri, folder, timeout=240) as uri:  # the schema migrations take a while
        yield uri


def test_a_lock_write_that_loses_the_insert_race_waits(pg_mlflow):
    """Two registrations that find the lock free both write its tag. On PostgreSQL, while the tag is
    absent, the later write fails with the server's unique-key error (seen against this very store:
    `psycopg.errors.UniqueViolation ... registered_model_tag_pk`, HTTP 400). The loser must wait for
    the winner's lease, not fail its registration (a sweep then exits 1 with nothing registered)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import RestException

    from tunefleet.tracking.lock import LOCK_TAG, model_lock

    client = MlflowClient(tracking_uri=pg_mlflow, registry_uri=pg_mlflow)
    name = "lock-insert-race"
    client.create_registered_model(name)
    rival_until = time.time() + 3.0

    class LosesTheInsertRace:
        """The real client, except that the first lock write meets a rival's: the rival's row lands
        and ours fails as the server fails it."""
        lost = False

        def __getattr__(self, attribute):
            return getattr(client, attribute)

        def set_registered_model_tag(self, model, key, value):
            if key == LOCK_TAG and not self.lost:
                self.lost = True
                client.set_registered_model_tag(model, key, f"rival {rival_until:.3f}")
                raise RestException({"error_code": "BAD_REQUEST", "message": (
                    '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint '
                    '"registered_model_tag_pk"')})
            client.set_registered_model_tag(model, key, value)

    racer = LosesTheInsertRace()
    with model_lock(racer, pg_mlflow, name):
        entered = time.time()
        holder = client.get_registered_model(name).tags[LOCK_TAG]
    assert racer.lost
    assert entered >= rival_until, "took the lock while the rival's lease was live"
    assert not holder.startswith("rival ")
    assert LOCK_TAG not in client.get_registered_model(name).tags, "the lock was not released"


@pytest.mark.slow
def test_three_sweeps_at_once_leave_one_champion(pg_mlflow, tiny_model, ray_cluster, tmp_path):
    """Three `tunefleet sweep` commands of one task (same model name, different seeds), started
    together against `mlflow server` on PostgreSQL, all on the suite's Ray cluster."""
    from mlflow.entities import ViewType

    from tunefleet.tracking import runs as tracking
    from tunefleet.tracking.lock import LOCK_TAG
    from tunefleet.tracking.registry import CHAMPION, HISTORY_TAG

    spec = tiny_spec_dict(
        tiny_model, tmp_path / "runs", name=NAME, train={"epochs": 1},
        tracking={"uri": pg_mlflow, "enabled": True},
        resources={"ray_address": ray_cluster.get_runtime_context().gcs_address},
        # One trial at a time per sweep: three sweeps' trials then fit the suite's 4-CPU cluster at once.
        search={"algorithm": "random", "scheduler": "none", "num_trials": TRIALS, "max_concurrent": 1,
                "warm_start": "off", "space": {"train.lr": {"loguniform": [3.0e-4, 3.0e-3]}}})
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    command = Path(sys.executable).with_name("tunefleet")
    drivers = {}
    for seed in SWEEPS:
        out, err = open(tmp_path / f"sweep-{seed}.out", "w"), open(tmp_path / f"sweep-{seed}.err", "w")
        drivers[seed] = subprocess.Popen(
            [str(command), "sweep", str(spec_file), "--set", f"train.seed={seed}", "--set", f"search.seed={seed}"],
            stdout=out, stderr=err, cwd=tmp_path)
        out.close()
        err.close()
    try:
        deadline = time.monotonic() + 600
        for seed, driver in drivers.items():
            driver.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for driver in drivers.values():
            if driver.poll() is None:
                driver.kill()
                driver.wait(timeout=30)
    for seed, driver in drivers.items():
        assert driver.returncode == 0, (f"sweep with seed {seed} exited {driver.returncode}:\n"
                                        f"{(tmp_path / f'sweep-{seed}.err').read_text()[-3000:]}")
    summaries = {seed: json.loads((tmp_path / f"sweep-{seed}.out").read_text().strip().splitlines()[-1])
                 for seed in SWEEPS}
    assert len({s["sweep"] for s in summaries.values()}) == len(SWEEPS), "the three sweeps were not distinct"

    client = tracking.client_for(pg_mlflow)
    # --- the registry: one version per sweep, one champion, every decision in lock order.
    versions = {int(v.version): v for v in client.search_model_versions(f"name = '{NAME}'")}
    assert sorted(versions) == [1, 2, 3]
    assert sorted(s["registered"]["version"] for s in summaries.values()) == [1, 2, 3]
    for summary in summaries.values():
        version = versions[summary["registered"]["version"]]
        assert version.run_id == summary["mlflow"]["parent_run_id"]
        assert version.tags["tunefleet.source_sweep"] == summary["sweep"]
    holding = [n for n in versions if CHAMPION in client.get_model_version(NAME, str(n)).aliases]
    assert len(holding) == 1, f"versions holding @{CHAMPION}: {holding}"
    tags = {n: v.tags for n, v in versions.items()}
    for number, tag in tags.items():
        assert tag.get("tunefleet.decision") in ("promoted", "kept challenger"), (number, tag.get("tunefleet.decision"))
    # create_model_version runs under the lock, so version numbers are the order the gate ran in: each
    # decision must have seen the champion that the decisions before it left.
    champion, promoted = None, []
    for number in sorted(tags):
        tag = tags[number]
        assert tag["tunefleet.previous_champion"] == str(champion or ""), (number, tag["tunefleet.previous_champion"], champion)
        if champion is None:
            assert tag["tunefleet.champion_metric"] == "" and tag["tunefleet.decision"] == "promoted", number
        else:
            before = float(tags[champion]["tunefleet.test_metric"])
            assert float(tag["tunefleet.champion_metric"]) == before, number
            if tag["tunefleet.decision"] == "promoted":
                sign = 1 if tag["tunefleet.mode"] == "max" else -1
                assert sign * float(tag["tunefleet.test_metric"]) >= sign * before, (number, tag["tunefleet.reason"])
        if tag["tunefleet.decision"] == "promoted":
            champion = number
            promoted.append(number)
    model = client.get_registered_model(NAME)
    assert holding == [champion]
    assert json.loads(model.tags[HISTORY_TAG]) == promoted
    assert LOCK_TAG not in model.tags, "the registry lock was left held"

    # --- the runs: one parent per sweep, one child per trial, nothing lost, nothing twice.
    experiment = client.get_experiment_by_name(NAME).experiment_id
    every_run = client.search_runs([experiment], run_view_type=ViewType.ALL, max_results=1000)
    assert len(every_run) == len(SWEEPS) * (1 + TRIALS), sorted(r.info.run_name for r in every_run)
    parents = {r.info.run_id: r for r in every_run if r.data.tags.get("tunefleet.kind") == "sweep"}
    assert sorted(parents) == sorted(s["mlflow"]["parent_run_id"] for s in summaries.values())
    for summary in summaries.values():
        parent = parents[summary["mlflow"]["parent_run_id"]]
        assert parent.info.status == "FINISHED" and parent.info.run_name == summary["sweep"]
        children = [r for r in every_run if r.data.tags.get(tracking.PARENT_TAG) == parent.info.run_id]
        trial_ids = [c.data.tags[tracking.TRIAL_TAG] for c in children]
        assert len(trial_ids) == len(set(trial_ids)) == TRIALS, (summary["sweep"], trial_ids)
        assert len({c.info.run_name for c in children}) == TRIALS
        trials = json.loads((Path(summary["storage"]) / "trials.json").read_text())
        assert sorted(trial_ids) == sorted(t["trial_id"] for t in trials)
        for child in children:
            assert child.info.status == "FINISHED", (child.info.run_name, child.info.status)
            assert child.data.tags[tracking.END_STATE_TAG] == "completed"
