"""The sweep's report page (`search/report.py`) and its Optuna export (`search/optuna_export.py`).

The report of a small real sweep is opened in headless Chromium (Debian's `chromium`, installed by
`scripts/setup.sh`), driven over the DevTools protocol, and checked for what a person sees: the trial
count, the best trial's metric, every plot drawn, stopped-early trials marked in the table and in the
learning curves, and the table sorting when a heading is clicked. Its screenshot is kept in
`tests/artifacts/sweep_report.png` (with the page beside it).
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CI, ROOT, tiny_spec_dict
from tunefleet.search.optuna_export import export_optuna_study
from tunefleet.search.report import write_report
from tunefleet.search.results import TrialRecord
from tunefleet.spec import spec_from_dict

ARTIFACTS = ROOT / "tests" / "artifacts"
SPACE = {"train.lr": {"loguniform": [1.0e-5, 1.0e-2]}, "train.epochs": {"choice": [2, 3]}}


def hand_made_trials() -> list[TrialRecord]:
    def history(*values):
        return [{"epoch": i + 1, "val_accuracy": v} for i, v in enumerate(values)]

    return [
        TrialRecord("t_done_a", {"train.lr": 1e-3, "train.epochs": 3}, "completed", history(0.6, 0.7, 0.8), 0.8, 3.0,
                    checkpoint="/ckpt/a", train_seconds=12.0),
        TrialRecord("t_stopped", {"train.lr": 1e-5, "train.epochs": 3}, "stopped_early", history(0.5), 0.5, 1.0,
                    train_seconds=4.0),
        TrialRecord("t_failed", {"train.lr": 9e-3, "train.epochs": 2}, "failed", history(0.55), 0.55, 1.0,
                    error="FloatingPointError: loss is nan at step 7 <b>not bold</b>"),
        TrialRecord("t_done_b", {"train.lr": 3e-4, "train.epochs": 2}, "completed", history(0.62, 0.71), 0.71, 2.0,
                    checkpoint="/ckpt/b", train_seconds=8.0),
    ]


def hand_made_summary(sweep_dir: Path) -> dict:
    return {
        "sweep": "tiny-0123abcd", "storage": str(sweep_dir),
        "best": {"trial_id": "t_done_a", "config": {"train.lr": 1e-3, "train.epochs": 3}, "checkpoint": "/ckpt/a",
                 "metrics": {"validation": {"accuracy": 0.8, "loss": 0.41},
                             "test": {"accuracy": 0.775, "f1": 0.77, "loss": 0.45,
                                      "report": {"neg": {"precision": 0.7, "recall": 0.8, "f1-score": 0.75, "support": 40},
                                                 "pos": {"precision": 0.85, "recall": 0.74, "f1-score": 0.79, "support": 40}}}}},
        "trials": {"total": 4, "completed": 2, "stopped_early": 1, "failed": 1},
        "trial_epochs": 7.0, "wall_seconds": 95.2,
        "warm_start": {"trials_used": 3, "from": ["tiny-earlier1"], "skipped": {"outside the space": 1}},
        "extended": [],
        "mlflow": {"tracking_uri": "http://mlflow.example:5000", "experiment": "tiny", "parent_run_id": "parent123"},
        "registered": {"name": "tiny", "version": 4, "aliases": ["challenger"],
                       "promoted": {"promoted": False, "reason": "test accuracy 0.7750 vs champion v3's 0.7600: ...",
                                    "paired": {"metric": "accuracy", "advantage": 0.015, "lower_bound": -0.01,
                                               "interval": [-0.0125, 0.0425], "confidence": 0.95, "examples": 80,
                                               "samples": 2000}}},
    }


def test_report_shows_the_sweep_and_marks_stopped_and_failed_trials(tiny_model, tmp_path):
    spec = spec_from_dict(tiny_spec_dict(tiny_model, tmp_path, search={"space": SPACE}))
    sweep_dir = tmp_path / "tiny-0123abcd"
    sweep_dir.mkdir()
    (sweep_dir / "mlflow.json").write_text(json.dumps({"experiment_id": "7", "parent_run_id": "parent123"}))
    page = write_report(sweep_dir, hand_made_summary(sweep_dir), hand_made_trials(), spec,
                        child_runs={"t_stopped": "child456"}).read_text()

    assert '<span id="trial-count">4 trials</span>' in page
    assert "2 completed, 1 stopped early, 1 failed" in page
    assert '<span id="best-value">0.8000</span>' in page
    # The table: one row per trial, the end state as a class and a badge, the error escaped.
    rows = re.findall(r'<tr class="([^"]+)" data-trial="([^"]+)">', page)
    assert sorted(r[1] for r in rows) == ["t_done_a", "t_done_b", "t_failed", "t_stopped"]
    assert dict((trial, cls) for cls, trial in rows) == {"t_done_a": "status-completed best", "t_done_b": "status-completed",
                                                         "t_stopped": "status-stopped_early", "t_failed": "status-failed"}
    assert '<span class="badge stopped_early">stopped early</span>' in page
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page and "<b>not bold</b>" not in page
    # Every plot is an inline SVG; the learning curves know each trial and its end state.
    for plot in ("optimization_history", "parallel_coordinates", "param_importance", "learning_curves"):
        figure = re.search(rf'<figure class="plot" id="plot-{plot}">(.*?)</figure>', page, re.S)
        assert figure and "<svg" in figure.group(1) and figure.group(1).count("<path") > 5, plot
    curves = re.search(r'id="plot-learning_curves">(.*?)</figure>', page, re.S).group(1)
    assert re.findall(r'class="curve status-(\w+)" data-trial="(\w+)"', curves) == [
        ("completed", "t_done_a"), ("stopped_early", "t_stopped"), ("failed", "t_failed"), ("completed", "t_done_b")]
    assert ">stopped early<" in curves and ">failed<" in curves  # legend entries, as text
    # No two plots share an SVG id (clip paths, markers).
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    # Test report, registry decision, MLflow links (an HTTP store: the UI's own addresses).
    assert 'id="test-report"' in page and "<td>neg</td>" in page and "0.7500" in page
    assert "tiny version 4</strong>: not promoted" in page and "[-0.0125, +0.0425]" in page
    assert 'href="http://mlflow.example:5000/#/experiments/7/runs/parent123"' in page
    assert 'href="http://mlflow.example:5000/#/experiments/7/runs/child456"' in page
    assert 'href="http://mlflow.example:5000/#/models/tiny/versions/4"' in page
    assert "Started from 3 trial(s) of tiny-earlier1" in page
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r'<(script|img|link)[^>]+(src|href)="(https?:)?//', page)


def test_exported_study_holds_every_trial_for_optuna_dashboard(tmp_path):
    import optuna
    from optuna.trial import TrialState

    trials = hand_made_trials()
    trials[3].config["train.lr"] = 5.0  # outside the space (e.g. a seed point): left out of its params
    path = export_optuna_study(tmp_path, "tiny-0123abcd", trials, SPACE, "val_accuracy", "max")
    export_optuna_study(tmp_path, "tiny-0123abcd", trials, SPACE, "val_accuracy", "max")  # rewritten, not doubled
    assert path == tmp_path / "optuna.db"
    study = optuna.load_study(study_name="tiny-0123abcd", storage=f"sqlite:///{path}")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and study.metric_names == ["val_accuracy"]
    got = study.get_trials(deepcopy=False)
    assert [t.user_attrs["trial_id"] for t in got] == [t.trial_id for t in trials]
    assert [t.state for t in got] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]
    assert [t.value for t in got] == [0.8, 0.5, None, 0.71]
    assert got[0].params == {"train.lr": 1e-3, "train.epochs": 3}
    assert got[3].params == {"train.epochs": 2} and got[3].user_attrs["config_outside_space"] == {"train.lr": 5.0}
    assert got[0].intermediate_values == {1: 0.6, 2: 0.7, 3: 0.8} and got[1].intermediate_values == {1: 0.5}
    assert "nan at step 7" in got[2].user_attrs["error"]
    assert study.best_trial.user_attrs["trial_id"] == "t_done_a"



def test_a_report_or_store_problem_never_fails_the_sweep(tiny_model, tmp_path, monkeypatch, caplog):
    from conftest import free_port
    from tunefleet.search import report

    spec = spec_from_dict(tiny_spec_dict(tiny_model, tmp_path, search={"space": SPACE}))
    summary = hand_made_summary(tmp_path)
    summary["mlflow"]["tracking_uri"] = f"http://127.0.0.1:{free_port()}"  # nobody listens
    path = report.publish_report(tmp_path, summary, hand_made_trials(), spec)
    assert path == tmp_path / "report.html" and path.is_file() and (tmp_path / "optuna.db").is_file()
    assert "report: not logged to MLflow" in caplog.text

    def broken(*args, **kwargs):
        raise KeyError("metrics")

    monkeypatch.setattr(report, "write_report", broken)
    monkeypatch.setattr("tunefleet.search.optuna_export.export_optuna_study", broken)
    assert report.publish_report(tmp_path, summary | {"mlflow": None}, hand_made_trials(), spec) is None
    assert "report: " in caplog.text and "optuna export: " in caplog.text

# ---- a real sweep, seen in a browser --------------------------------------------------------------

@pytest.mark.slow
def test_report_of_a_real_sweep_in_chromium(tiny_model, tmp_path, ray_cluster):
    import optuna

    from tunefleet.search.sweep import run_sweep
    from tunefleet.tracking.runs import client_for

    browser = shutil.which("chromium")
    if browser is None:
        (pytest.fail if CI else pytest.skip)("chromium is not installed: ./scripts/setup.sh installs it")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # test_search.py's ASHA recipe: one trial at a time, seeded, ranked on validation loss; the
    # learning rate that learns completes, ASHA stops at least two of the three that cannot.
    spec = spec_from_dict(tiny_spec_dict(
        tiny_model, tmp_path / "runs", data={"format": "synthetic", "synthetic_size": 600},
        train={"epochs": 3, "metric": "loss", "dropout": 0.0}, tracking={"enabled": True, "uri": uri},
        search={"algorithm": "grid", "max_concurrent": 1, "grace_period": 1, "reduction_factor": 2,
                "space": {"train.lr": {"grid": [3.0e-3, 1.0e-7, 1.0e-7, 1.0e-7]}}}), source=str(tmp_path / "spec.yaml"))
    summary = run_sweep(spec)
    sweep_dir = Path(summary["storage"])
    trials = json.loads((sweep_dir / "trials.json").read_text())
    stopped = [t["trial_id"] for t in trials if t["status"] == "stopped_early"]
    assert len(stopped) >= 2, [t["status"] for t in trials]
    report = sweep_dir / "report.html"

    with Chromium(browser, tmp_path / "profile") as page:
        page.open(report.as_uri())
        seen = page.evaluate("""(() => {
            const text = s => (document.querySelector(s) || {}).textContent;
            const rows = [...document.querySelectorAll('#trial-table tbody tr')];
            const plots = [...document.querySelectorAll('figure.plot')].map(f => {
                const svg = f.querySelector('svg'), box = svg ? svg.getBoundingClientRect() : null;
                return {id: f.id, width: box ? box.width : 0, height: box ? box.height : 0,
                        paths: svg ? svg.querySelectorAll('path').length : 0};
            });
            const curves = [...document.querySelectorAll('#plot-learning_curves g.curve')].map(g => ({
                trial: g.dataset.trial, stopped: g.classList.contains('status-stopped_early'),
                dash: getComputedStyle(g.querySelector('path')).strokeDasharray}));
            const legend = [...document.querySelectorAll('#plot-learning_curves svg text')].map(t => t.textContent);
            return {count: text('#trial-count'), breakdown: text('#trial-breakdown'), best: text('#best-value'),
                    plots, curves, legend,
                    rows: rows.map(r => ({trial: r.dataset.trial, cls: r.className,
                                          status: r.cells[2].textContent, bg: getComputedStyle(r).backgroundColor})),
                    parent: text('#mlflow')};
        })()""")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(ARTIFACTS / "sweep_report.png")
        shutil.copy(report, ARTIFACTS / "sweep_report.html")
        print(f"screenshot: {ARTIFACTS / 'sweep_report.png'}")

        # What the summary says, worked out from trials.json by hand.
        assert seen["count"] == f"{len(trials)} trials"
        counts = {s: sum(t["status"] == s for t in trials) for s in ("completed", "stopped_early", "failed")}
        assert seen["breakdown"] == f"{counts['completed']} completed, {counts['stopped_early']} stopped early, " \
                                    f"{counts['failed']} failed"
        assert seen["best"] == f"{min(t['best_value'] for t in trials if t['best_value'] is not None):.4f}"
        # Every plot drawn, at a size a person can read.
        assert [p["id"] for p in seen["plots"]] == ["plot-optimization_history", "plot-parallel_coordinates",
                                                   "plot-param_importance", "plot-learning_curves"]
        assert all(p["width"] > 400 and p["height"] > 150 and p["paths"] > 5 for p in seen["plots"]), seen["plots"]
        # Stopped-early trials: marked rows of their own colour, and dashed, labelled learning curves.
        marked = {r["trial"] for r in seen["rows"] if "status-stopped_early" in r["cls"] and r["status"] == "stopped early"}
        assert marked == set(stopped)
        completed_bg = {r["bg"] for r in seen["rows"] if "status-completed" in r["cls"]}
        assert all(r["bg"] not in completed_bg for r in seen["rows"] if r["trial"] in marked)
        assert {c["trial"] for c in seen["curves"] if c["stopped"]} == set(stopped)
        assert all(c["dash"] not in ("", "none") for c in seen["curves"] if c["stopped"]), seen["curves"]
        assert "stopped early" in seen["legend"]
        assert summary["mlflow"]["parent_run_id"] in seen["parent"]
        # The table sorts when its heading is clicked: by best value, up, then down.
        values = sorted(t["best_value"] for t in trials if t["best_value"] is not None)
        page.click('#trial-table thead th:nth-child(4)')
        column = "[...document.querySelectorAll('#trial-table tbody td:nth-child(4)')].map(c => c.textContent)"
        up = page.evaluate(column)
        page.click('#trial-table thead th:nth-child(4)')
        down = page.evaluate(column)
        assert up == [f"{v:.4f}" for v in values] and down == up[::-1]

    # On the parent MLflow run too, and the sweep's trials as an Optuna study.
    artifacts = {a.path for a in client_for(uri).list_artifacts(summary["mlflow"]["parent_run_id"])}
    assert "report.html" in artifacts
    study = optuna.load_study(study_name=summary["sweep"], storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    exported = {t.user_attrs["trial_id"]: t for t in study.get_trials(deepcopy=False)}
    assert set(exported) == {t["trial_id"] for t in trials}
    for t in trials:
        assert exported[t["trial_id"]].params == {"train.lr": t["config"]["train.lr"]}
        assert exported[t["trial_id"]].value == pytest.approx(t["best_value"])
        assert exported[t["trial_id"]].state.name == {"completed": "COMPLETE", "stopped_early": "PRUNED"}[t["status"]]


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON
    messages ended by NUL on file descriptors 3 and 4), so no port and no extra package is needed."""

    def __init__(self, binary: str, profile: Path, width: int = 1400, height: int = 1000) -> None:
        self.binary, self.profile, self.size = binary, profile, (width, height)
        self.next_id, self.events, self.buffer, self.session = 0, [], b"", None

    def __enter__(self) -> "Chromium":
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        # The browser expects the pipe on fds 3 and 4: a shell puts them there.
        command = (f'exec "$0" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars '
                   f'--remote-debugging-pipe --user-data-dir="$1" about:blank 3<&{to_browser_r} 4>&{from_browser_w}')
        self.process = subprocess.Popen(["bash", "-c", command, self.binary, str(self.profile)],
                                        pass_fds=(to_browser_r, from_browser_w), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        # The first reply waits for the browser to start: on 2 cores shared with the rest of the suite
        # that took over 30 s once (fresh-clone CI, 2026-12-02), though a few seconds is usual.
        target = self.send("Target.createTarget", {"url": "about:blank"}, timeout=180)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.size[0], "height": self.size[1], "deviceScaleFactor": 1, "mobile": False})
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close", session=False, timeout=10)
        except Exception:  # noqa: BLE001 - it is going anyway
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        os.close(self.to_browser)
        os.close(self.from_browser)

    def open(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in reply:
            raise AssertionError(f"script failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click at the middle of the element, as a person would."""
        box = self.evaluate(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();
            return {{x: r.x + r.width / 2, y: r.y + r.height / 2}}; }})()""")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box["x"], "y": box["y"], "button": "left",
                                                   "clickCount": 1})

    def screenshot(self, path: Path) -> None:
        """The whole page, top to bottom."""
        height = self.evaluate("document.documentElement.scrollHeight")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.size[0], "height": int(height), "deviceScaleFactor": 1, "mobile": False})
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"]))
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.size[0], "height": self.size[1], "deviceScaleFactor": 1, "mobile": False})

    def send(self, method: str, params: dict | None = None, session: bool = True, timeout: float = 30.0) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout, f"reply to {method}")
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        while True:
            found = next((e for e in self.events if e.get("method") == method), None)
            if found:
                return found
            self.events.append(self._read(timeout, method))

    def _read(self, timeout: float, waiting_for: str) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_browser], [], [], left)[0]:
                raise AssertionError(f"chromium: no {waiting_for} within {timeout:.0f}s")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise AssertionError(f"chromium exited (code {self.process.poll()}) before {waiting_for}")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)
