"""`tunefleet sweep SPEC --extend N` (`search/extend.py`): N more trials in a finished sweep, its Optuna
study restored from the sweep's saved state, one summary, trial table, MLflow parent and registry
decision over every run of the sweep; refused, with what to run instead, where there is nothing to
extend. Real Ray, real MLflow on SQLite, the tiny model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import tiny_spec_dict
from tunefleet import cli
from tunefleet.search.sweep import run_sweep, sweep_name
from tunefleet.spec import load_spec


def write_spec(tmp_path: Path, tiny_model: str, uri: str | None, file: str = "spec.yaml", size: int = 120,
               **sections) -> Path:
    raw = tiny_spec_dict(tiny_model, tmp_path / "runs", **sections)
    raw["data"]["synthetic_size"] = size
    if uri:
        raw["tracking"] = {"enabled": True, "uri": uri}
    path = tmp_path / file
    path.write_text(yaml.safe_dump(raw))
    return path


def extend_by_cli(path: Path, trials: int, capsys) -> dict:
    """`tunefleet sweep SPEC --extend N`, as a user types it; its JSON summary."""
    assert cli.main(["sweep", str(path), "--extend", str(trials)]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def children_of(uri: str, parent_id: str):
    from tunefleet.tracking import runs as tracking

    client = tracking.client_for(uri)
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], f"tags.`{tracking.PARENT_TAG}` = '{parent_id}'", max_results=100)


def registered_versions(uri: str, name: str) -> list[int]:
    from tunefleet.tracking import runs as tracking

    client = tracking.client_for(uri)
    return sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))


@pytest.mark.slow
def test_extend_adds_trials_that_the_restored_searcher_proposes_and_one_summary_covers_them_all(
        tiny_model, tmp_path, ray_cluster, capsys, monkeypatch):
    """Two trials, then `--extend 2`: the extension's Optuna study is the sweep's own, restored with the
    first two trials in it (not a fresh one), it proposes two new points, and summary, trials.json, the
    MLflow parent (one child per trial, none twice) and a later --resume (of the sweep, or of an
    extension whose driver died) all count four trials."""
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    from tunefleet.tracking import runs as tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = write_spec(tmp_path, tiny_model, uri, name="extended", train={"epochs": 1},
                      search={"algorithm": "optuna", "num_trials": 2, "max_concurrent": 1, "scheduler": "none",
                              "seed_with_spec": False, "space": {"train.lr": {"loguniform": [1.0e-4, 3.0e-3]}}})
    spec = load_spec(path)
    first = run_sweep(spec)
    sweep_dir = Path(first["storage"])
    first_summary = (sweep_dir / "summary.json").read_text()
    first_trials = {t["trial_id"]: t for t in json.loads((sweep_dir / "trials.json").read_text())}
    assert first["trials"]["total"] == 2 and first["extended"] == []

    # What the searcher holds the moment it is restored, before the extension asks it anything.
    restored: list[list[tuple]] = []
    restore = OptunaSearch.restore

    def remember(self, checkpoint_path):
        restore(self, checkpoint_path)
        restored.append([(t.state, t.params) for t in self._ot_study.trials])

    monkeypatch.setattr(OptunaSearch, "restore", remember)
    summary = extend_by_cli(path, 2, capsys)

    assert len(restored) == 1, "the extension did not restore the sweep's searcher"
    assert sorted(restored[0], key=str) == sorted(
        [(TrialState.COMPLETE, t["config"]) for t in first_trials.values()], key=str)
    assert summary["sweep"] == first["sweep"] and summary["storage"] == first["storage"]
    assert summary["trials"]["total"] == 4 and summary["trials"]["failed"] == 0
    (entry,) = summary["extended"]
    assert entry | {"wall_seconds": 0} == {
        "run": "extend-1", "trials": 2, "ran": 2, "searcher": "restored", "searcher_trials_before": 2,
        "best_before": first["best"]["trial_id"], "best_changed": summary["best"]["trial_id"] != first["best"]["trial_id"],
        "wall_seconds": 0}
    trials = json.loads((sweep_dir / "trials.json").read_text())
    assert len(trials) == 4 and len({t["trial_id"] for t in trials}) == 4
    assert set(first_trials) < {t["trial_id"] for t in trials}
    assert len({t["config"]["train.lr"] for t in trials}) == 4, "the extension proposed a point it had tried"
    assert summary["trial_epochs"] == pytest.approx(sum(t["epochs_run"] for t in trials)) == 4
    assert json.loads((sweep_dir / "summary.json").read_text())["trials"]["total"] == 4
    # The extension's own saved searcher state now holds all four: a second extension starts from them.
    searcher = load_searcher(spec, sweep_dir / "extend-1")
    assert searcher.known_trials() == 4
    # Its trials live in its own run's folder; the sweep's best (either run's) kept its checkpoint.
    new = [t for t in trials if t["trial_id"] not in first_trials]
    assert all((sweep_dir / "extend-1" / t["trial_id"]).is_dir() for t in new)
    assert (Path(summary["best"]["checkpoint"]) / "tunefleet.json").is_file()
    kept = [t for t in trials if t["checkpoint"] and Path(t["checkpoint"]).is_dir()]
    assert [t["trial_id"] for t in kept] == [summary["best"]["trial_id"]]

    # MLflow: the sweep's one parent run, now with one child per trial of both runs.
    parent_id = first["mlflow"]["parent_run_id"]
    assert summary["mlflow"]["parent_run_id"] == parent_id
    children = children_of(uri, parent_id)
    assert Counter(c.data.tags[tracking.TRIAL_TAG] for c in children) == Counter(t["trial_id"] for t in trials)
    assert all(c.info.status == "FINISHED" for c in children)
    client = tracking.client_for(uri)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["tunefleet.best_trial"] == summary["best"]["trial_id"]
    assert json.loads(parent.data.tags["tunefleet.extended"])[0]["ran"] == 2
    logged = client.download_artifacts(parent_id, "trials.csv", str(tmp_path))
    assert len(Path(logged).read_text().strip().splitlines()) == 1 + 4

    # --resume of the extended sweep still sees every run: nothing trains, nothing is lost.
    resumed = run_sweep(spec, resume=True)
    assert resumed["trials"]["total"] == 4 and resumed["extended"] == summary["extended"]
    assert len(children_of(uri, parent_id)) == 4

    # An extension whose driver died after its trials, before the summary: --resume finishes that run.
    (sweep_dir / "summary.json").write_text(first_summary)
    finished = run_sweep(spec, resume=True)
    assert finished["trials"]["total"] == 4 and finished["best"]["trial_id"] == summary["best"]["trial_id"]
    assert [(e["run"], e["ran"]) for e in finished["extended"]] == [("extend-1", 2)]
    assert len(children_of(uri, parent_id)) == 4


def load_searcher(spec, run_dir: Path):
    from tunefleet import plugins

    searcher = plugins.load("search algorithm", spec.search.algorithm)(spec, [], 1)
    searcher.restore_from_dir(str(run_dir))
    return searcher


@pytest.mark.slow
def test_extend_registers_a_new_version_only_when_the_best_changes(tiny_model, tmp_path, ray_cluster, capsys):
    """A first trial at a learning rate that overshoots in one epoch (validation loss above chance),
    then two extensions of one trial each over {that rate, 1e-7}. Seeded, TPE's random start-up draws
    the same rate again first (the same training, an exactly equal loss: the best does not change, and
    no version is added), then 1e-7, which leaves the model at chance (a lower loss: the best changes,
    and a second version goes through the gate)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overshooting, harmless = 1.0e-3, 1.0e-7  # validation loss 0.6961 and 0.6931 here
    path = write_spec(tmp_path, tiny_model, uri, size=600, name="regext",
                      train={"epochs": 1, "lr": overshooting, "metric": "loss", "dropout": 0.0, "batch_size": 8},
                      search={"algorithm": "optuna", "num_trials": 1, "max_concurrent": 1, "scheduler": "none",
                              "seed": SEED, "seed_with_spec": True,
                              "space": {"train.lr": {"choice": [overshooting, harmless]}}})
    first = run_sweep(load_spec(path))
    assert first["best"]["config"] == {"train.lr": overshooting} and first["registered"]["version"] == 1
    assert registered_versions(uri, "regext") == [1]

    same = extend_by_cli(path, 1, capsys)
    drawn = [t["config"]["train.lr"] for t in json.loads((Path(same["storage"]) / "trials.json").read_text())]
    assert drawn == [overshooting, overshooting], f"the setup meant the first extension to draw {overshooting}: " \
                                                  f"{drawn}; pick another SEED"
    assert same["best"]["trial_id"] == first["best"]["trial_id"] and not same["extended"][0]["best_changed"]
    assert registered_versions(uri, "regext") == [1], "an unchanged best was registered again"
    assert same["registered"] == first["registered"]

    better = extend_by_cli(path, 1, capsys)
    drawn = [t["config"]["train.lr"] for t in json.loads((Path(better["storage"]) / "trials.json").read_text())]
    assert sorted(drawn) == [harmless, overshooting, overshooting], \
        f"the setup meant the second extension to draw {harmless}: {drawn}; pick another SEED"
    assert better["best"]["config"] == {"train.lr": harmless} and better["extended"][1]["best_changed"]
    assert better["registered"]["version"] == 2 and registered_versions(uri, "regext") == [1, 2]
    assert better["trials"]["total"] == 3 and [e["run"] for e in better["extended"]] == ["extend-1", "extend-2"]


SEED = 10  # for Optuna 5.0 TPE: the first extension draws the useless rate, the second the useful one


def test_extend_without_a_finished_sweep_is_refused_with_what_to_run(tiny_model, tmp_path, capsys, monkeypatch):
    """Exit 2 and one line saying what to run instead, before any data or Ray work: no sweep yet, a
    sweep that has not finished, an extension that did not finish, a grid, a bad N, N with --resume."""
    from tunefleet.search import sweep

    monkeypatch.setattr(sweep, "prepare_data", lambda *a, **k: pytest.fail("data prepared before the check"))
    path = write_spec(tmp_path, tiny_model, None, search={"num_trials": 2, "space": {
        "train.lr": {"loguniform": [1.0e-4, 3.0e-3]}}})
    sweep_dir = tmp_path / "runs" / sweep_name(load_spec(path))

    def refused(*argv: str) -> str:
        assert cli.main(["sweep", str(path), *argv]) == cli.EXIT_BAD_INPUT
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.startswith("tunefleet: error:")]
        assert len(lines) == 1 and captured.out == "", captured
        return lines[0]

    line = refused("--extend", "2")
    assert f"no sweep {sweep_dir.name}" in line and f"run `tunefleet sweep {path}`" in line

    sweep_dir.mkdir(parents=True)
    (sweep_dir / "experiment_state-2025-01-01_00-00-00.json").write_text("{}")
    line = refused("--extend", "2")
    assert "has not finished" in line and "--resume" in line

    (sweep_dir / "summary.json").write_text(json.dumps({"extended": []}))
    (sweep_dir / "extend-1").mkdir()
    (sweep_dir / "extend-1" / "experiment_state-2025-01-01_00-00-00.json").write_text("{}")
    line = refused("--extend", "2")
    assert "extend-1" in line and "did not finish" in line and "--resume" in line

    grid = write_spec(tmp_path, tiny_model, None, "grid.yaml", search={"algorithm": "grid", "space": {
        "train.lr": {"grid": [1.0e-4, 3.0e-3]}}})
    assert cli.main(["sweep", str(grid), "--extend", "2"]) == cli.EXIT_BAD_INPUT
    assert "grid sweep has already tried every combination" in capsys.readouterr().err

    assert "at least 1" in refused("--extend", "0")
    assert "not allowed with argument --extend" in refused("--extend", "2", "--resume")


def test_without_saved_searcher_state_the_sweeps_trials_are_handed_over_and_random_search_draws_anew(tmp_path):
    """The two other ways an extension's searcher starts: an Optuna sweep whose folder holds no
    `searcher-state-*.pkl` gets the sweep's trials (trials.json) as evaluated points; random search,
    which keeps no model, samples with `search.seed + k` so that it does not draw the first run's points."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from tunefleet.search.extend import start_extension
    from tunefleet.search.space import tune_space
    from tunefleet.spec import spec_from_dict

    def spec(algorithm):
        return spec_from_dict({"name": "ext", "task": "text-classification", "data": {"format": "synthetic"},
                               "train": {"metric": "accuracy"}, "resources": {"storage_path": str(tmp_path)},
                               "tracking": {"enabled": False}, "search": {
                                   "algorithm": algorithm, "seed": 5, "space": {"train.lr": {"loguniform": [1e-5, 1e-2]}}}})

    sweep_dir = tmp_path / "ext-sweep"
    sweep_dir.mkdir()
    (sweep_dir / "experiment_state-2025-01-01_00-00-00.json").write_text("{}")
    rows = [{"trial_id": f"t{i}", "status": "completed", "best_value": 0.5 + i / 10, "config": {"train.lr": lr},
             "history": [{"val_accuracy": 0.5 + i / 10}]} for i, lr in enumerate([1e-4, 1e-3])]
    (sweep_dir / "trials.json").write_text(json.dumps(rows))

    optuna = spec("optuna")
    run_dir, searcher, space = start_extension(optuna, sweep_dir, {"best": {"trial_id": "t1"}}, 3, 1)
    assert run_dir == sweep_dir / "extend-1" and space is not None
    searcher.set_search_properties("val_accuracy", "max", tune_space(optuna))
    assert sorted(t.params["train.lr"] for t in searcher._ot_study.trials) == [1e-4, 1e-3]
    assert json.loads((run_dir / "extension.json").read_text()) == {
        "run": "extend-1", "trials": 3, "searcher": "earlier trials", "searcher_trials_before": 2, "best_before": "t1"}

    (run_dir / "experiment_state-2025-01-01_00-00-00.json").write_text("{}")  # extend-1 ran
    run_dir, searcher, space = start_extension(spec("random"), sweep_dir, {"best": None}, 2, 1)
    assert run_dir == sweep_dir / "extend-2" and isinstance(searcher, BasicVariantGenerator)
    assert json.loads((run_dir / "extension.json").read_text())["searcher"] == "sampled afresh"
    # Tune draws a random search's points from the generator's own random stream: seeded 5 + 2, not 5.
    draw = searcher._random_state.random()
    assert draw == BasicVariantGenerator(random_state=7)._random_state.random()
    assert draw != BasicVariantGenerator(random_state=5)._random_state.random()
