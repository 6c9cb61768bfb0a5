"""The sweep's report page: `report.html` in its folder, one self-contained file a person opens from
disk (no server, no network: CSS, the table's sorting script and the plots are all inside it).

What it shows, top to bottom: the trial counts and the best trial's metric; the best configuration;
the test metrics with the per-class or per-entity report; the registry decision (version, aliases,
the gate's reason and its paired interval); links to the MLflow runs; the plots (the figures
`plots.py` draws, as inline SVG, so their text is text and each learning curve knows its trial); and
the table of every trial, sortable by any column, with stopped-early and failed trials marked.

`publish_report` is the sweep's last step: it exports the Optuna study (`optuna_export.py`), writes the
page and logs it to the sweep's parent MLflow run. All three come after `summary.json` is final and
none of them can fail the sweep: a problem is a warning.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

from ..spec import Spec
from .plots import PLOTS, STATUS_LABELS, sweep_figures

log = logging.getLogger("tunefleet.search")

REPORT_FILE = "report.html"
PLOT_TITLES = {"optimization_history": "Optimisation history", "parallel_coordinates": "Parallel coordinates",
               "param_importance": "Hyperparameter importance", "learning_curves": "Learning curves"}


def publish_report(sweep_dir: Path, summary: dict[str, Any], trials: list[Any], spec: Spec) -> Path | None:
    """Export the Optuna study, write `report.html` and log it to the parent MLflow run.

    Returns:
        The report's path, or None if it could not be written (warned).
    """
    from .optuna_export import export_optuna_study

    metric, mode = f"val_{spec.train.metric}", spec.metric_mode()
    try:
        export_optuna_study(sweep_dir, summary["sweep"], trials, spec.search.space, metric, mode)
    except Exception as exc:  # noqa: BLE001 - a convenience for optuna-dashboard, never the sweep's result
        log.warning("optuna export: %s not written: %s: %s", Path(sweep_dir) / "optuna.db", type(exc).__name__, exc)
    mlflow = summary.get("mlflow") if isinstance(summary.get("mlflow"), dict) else None
    tracked = mlflow is not None and "error" not in mlflow
    if tracked:
        from ..tracking import runs as tracking

        try:
            tracking.check_reachable(mlflow["tracking_uri"])  # seconds, not MLflow's minutes of retries
        except tracking.TrackingError as exc:
            log.warning("report: not logged to MLflow: %s", exc)
            tracked = False
    try:
        path = write_report(sweep_dir, summary, trials, spec, child_runs=_child_runs(mlflow) if tracked else None)
    except Exception as exc:  # noqa: BLE001 - the sweep's result is in summary.json whatever happens here
        log.warning("report: %s not written: %s: %s", Path(sweep_dir) / REPORT_FILE, type(exc).__name__, exc)
        return None
    if tracked:
        try:
            tracking.client_for(mlflow["tracking_uri"]).log_artifact(mlflow["parent_run_id"], str(path))
        except Exception as exc:  # noqa: BLE001
            log.warning("report: not logged to MLflow run %s (it is in %s): %s", mlflow["parent_run_id"], path,
                        (str(exc).splitlines() or [type(exc).__name__])[0][:300])
    return path


def write_report(sweep_dir: Path, summary: dict[str, Any], trials: list[Any], spec: Spec,
                 child_runs: dict[str, str] | None = None) -> Path:
    """Write `<sweep_dir>/report.html` for a finished sweep.

    Args:
        summary: the sweep's summary (as in `summary.json`).
        trials: the sweep's `TrialRecord`s, in the order they started.
        child_runs: trial id -> its MLflow run id, for links from the trial table.

    Returns:
        The report's path.
    """
    sweep_dir = Path(sweep_dir)
    metric, mode = f"val_{spec.train.metric}", spec.metric_mode()
    experiment_id = _experiment_id(sweep_dir)
    sections = [
        _overview(summary, trials, spec, metric, mode),
        _best(summary, metric),
        _registry(summary, experiment_id),
        _plots(trials, spec, metric, mode, sweep_dir),
        _trial_table(trials, summary, spec, metric, mode, summary.get("mlflow"), experiment_id, child_runs or {}),
        _history_of_sweep(summary),
        _files(sweep_dir),
    ]
    title = f"Sweep {summary['sweep']}"
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n"
            f"<header><h1>{_e(title)}</h1><p class=\"sub\">{_e(spec.task)} · model {_e(spec.model.name_or_path)} · "
            f"{_e(spec.search.algorithm)} + {_e(spec.search.scheduler)} · {_e(metric)} ({'higher' if mode == 'max' else 'lower'} "
            f"is better) · written {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}</p></header>\n<main>"
            + "\n".join(s for s in sections if s) + f"</main><script>{SCRIPT}</script></body></html>\n")
    path = sweep_dir / REPORT_FILE
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a page
    return path


# ---- sections -------------------------------------------------------------------------------------

def _overview(summary: dict[str, Any], trials: list[Any], spec: Spec, metric: str, mode: str) -> str:
    counts = summary.get("trials") or {}
    total = counts.get("total", len(trials))
    parts = [f'{counts.get(s, 0)} {label}' for s, label in STATUS_LABELS.items()]
    best = summary.get("best")
    cards = [_card("Trials", f'<span id="trial-count">{total} trial{"s" if total != 1 else ""}</span>',
                   f'<span id="trial-breakdown">{_e(", ".join(parts))}</span>')]
    if best:
        # The trial's own best value, as the table shows it (the checkpoint's record of the same evaluation).
        value = next((t.best_value for t in trials if t.trial_id == best["trial_id"]), None)
        value = best["metrics"]["validation"].get(spec.train.metric) if value is None else value
        cards.append(_card(f"Best {metric}", f'<span id="best-value">{_metric(value)}</span>',
                           f'trial <code id="best-trial">{_e(best["trial_id"])}</code>'))
        test = best["metrics"].get("test") or {}
        if spec.train.metric in test:
            cards.append(_card(f"Test {spec.train.metric}", f'<span id="test-value">{_metric(test[spec.train.metric])}</span>',
                               "best trial's checkpoint on the test split"))
    else:
        cards.append(_card(f"Best {metric}", '<span id="best-value">none</span>',
                           _e(summary.get("best_note") or "no trial finished with a checkpoint")))
    cards.append(_card("Trial-epochs", _e(_value(summary.get("trial_epochs"))), "epochs trained, all trials together"))
    cards.append(_card("Wall time", _e(_duration(summary.get("wall_seconds"))), _e(f"sweep {summary['sweep']}")))
    note = f'<p class="note">{_e(summary["best_note"])}</p>' if best and summary.get("best_note") else ""
    return f'<section id="summary"><h2>Summary</h2><div class="cards">{"".join(cards)}</div>{note}</section>'


def _best(summary: dict[str, Any], metric: str) -> str:
    best = summary.get("best")
    if not best:
        return ""
    config = _kv_table({k: _value(v) for k, v in sorted(best["config"].items())}, "best-config")
    validation = _kv_table({k: _metric(v) for k, v in best["metrics"]["validation"].items() if _scalar(v)})
    test = best["metrics"].get("test") or {}
    scalars = _kv_table({k: _metric(v) for k, v in test.items() if _scalar(v)}, "test-metrics")
    report = test.get("report")
    per_class = ""
    if isinstance(report, dict) and report:
        columns = list(dict.fromkeys(k for row in report.values() if isinstance(row, dict) for k in row))
        head = "".join(f"<th>{_e(c)}</th>" for c in ["label", *columns])
        rows = "".join(f"<tr><td>{_e(label)}</td>" + "".join(
            f'<td class="num">{_e(_metric(row.get(c)) if c != "support" else _value(row.get(c)))}</td>' for c in columns)
            + "</tr>" for label, row in report.items() if isinstance(row, dict))
        per_class = (f'<h3>Per-class / per-entity report (test)</h3><table id="test-report" class="sortable">'
                     f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return (f'<section id="best"><h2>Best configuration</h2><div class="columns">'
            f"<div><h3>Hyperparameters (trial <code>{_e(best['trial_id'])}</code>)</h3>{config}"
            f"<p class=\"path\">checkpoint <code>{_e(best.get('checkpoint'))}</code></p></div>"
            f"<div><h3>Validation</h3>{validation}</div><div><h3>Test</h3>{scalars}</div></div>{per_class}</section>")


def _registry(summary: dict[str, Any], experiment_id: str | None) -> str:
    registered, mlflow = summary.get("registered"), summary.get("mlflow")
    if mlflow is None:
        return ('<section id="registry"><h2>Registry and MLflow</h2><p>Tracking was off '
                "(<code>tracking.enabled: false</code>): nothing was logged or registered.</p></section>")
    rows: dict[str, str] = {}
    if isinstance(registered, dict) and "error" in registered:
        decision = f'<p class="error">Not registered: {_e(registered["error"])}</p>'
    elif isinstance(registered, dict):
        promoted = registered.get("promoted") or {}
        verdict = "promoted to champion" if promoted.get("promoted") else "not promoted (kept as challenger)"
        decision = (f'<p id="decision" class="{"promoted" if promoted.get("promoted") else "kept"}">'
                    f'<strong>{_e(registered.get("name"))} version {_e(registered.get("version"))}</strong>: '
                    f"{_e(verdict)}</p><p>{_e(promoted.get('reason'))}</p>")
        rows["aliases"] = ", ".join(registered.get("aliases") or []) or "none"
        paired = promoted.get("paired")
        if isinstance(paired, dict):
            low, high = (paired.get("interval") or [None, None])[:2]
            rows |= {"paired gate": f"{_value(paired.get('confidence'))} confidence, {paired.get('samples')} resamples",
                     "advantage": _signed(paired.get("advantage")),
                     "interval": f"[{_signed(low)}, {_signed(high)}]",
                     "lower bound": _signed(paired.get("lower_bound")),
                     "paired test examples": _value(paired.get("examples"))}
    else:
        decision = "<p>Nothing registered: no trial finished with a checkpoint.</p>"
    details = _kv_table(rows, "decision-details") if rows else ""
    return (f'<section id="registry"><h2>Registry decision</h2>{decision}{details}'
            f"<h3>MLflow</h3>{_mlflow_links(mlflow, experiment_id, registered)}</section>")


def _mlflow_links(mlflow: dict[str, Any], experiment_id: str | None, registered: Any) -> str:
    uri, run_id = mlflow.get("tracking_uri"), mlflow.get("parent_run_id")
    rows = {"tracking URI": f"<code>{_e(uri)}</code>", "experiment": _e(f"{mlflow.get('experiment')} (id {experiment_id})"),
            "parent run": f"<code>{_e(run_id)}</code>"}
    if "error" in mlflow:
        rows["error"] = f'<span class="error">{_e(mlflow["error"])}</span>'
    web, hint = _mlflow_web(uri)
    if web and experiment_id and run_id:
        rows["parent run"] = _link(f"{web}/#/experiments/{experiment_id}/runs/{run_id}", run_id, "mlflow-parent")
        rows["experiment"] = _link(f"{web}/#/experiments/{experiment_id}", f"{mlflow.get('experiment')}")
        if isinstance(registered, dict) and "version" in registered:
            rows["registered version"] = _link(f"{web}/#/models/{registered['name']}/versions/{registered['version']}",
                                               f"{registered['name']} v{registered['version']}")
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows.items())
    return f'<table class="kv" id="mlflow">{body}</table>' + (f'<p class="note">{hint}</p>' if hint else "")


def _plots(trials: list[Any], spec: Spec, metric: str, mode: str, sweep_dir: Path) -> str:
    import matplotlib.pyplot as plt

    figures = sweep_figures(trials, spec.search.space, metric, mode)
    parts = []
    for name in PLOTS:
        figure = figures[name]
        if isinstance(figure, str):
            body = f'<p class="skipped">Not drawn: {_e(figure)}</p>'
        else:
            body = _svg(figure, name)
            plt.close(figure)
        parts.append(f'<figure class="plot" id="plot-{name}"><figcaption>{_e(PLOT_TITLES[name])}</figcaption>{body}</figure>')
    # Other plots the sweep saved beside these (e.g. `pareto.png`), as they are.
    for png in sorted(sweep_dir.glob("*.png")):
        if png.stem not in PLOTS:
            data = base64.b64encode(png.read_bytes()).decode()
            parts.append(f'<figure class="plot" id="plot-{_e(png.stem)}"><figcaption>{_e(png.stem)}</figcaption>'
                         f'<img alt="{_e(png.stem)}" src="data:image/png;base64,{data}"></figure>')
    legend = ('<p class="note">In every plot: <span class="badge completed">completed</span> '
              '<span class="badge stopped_early">stopped early</span> (stopped by the scheduler; dashed, ▼ where it '
              'stopped) <span class="badge failed">failed</span> (✖). Hover a learning curve for its trial.</p>')
    return f'<section id="plots"><h2>Plots</h2>{legend}<div class="plots">{"".join(parts)}</div></section>'


def _trial_table(trials: list[Any], summary: dict[str, Any], spec: Spec, metric: str, mode: str, mlflow: Any,
                 experiment_id: str | None, child_runs: dict[str, str]) -> str:
    params = list(spec.search.space) + sorted({k for t in trials for k in t.config} - set(spec.search.space))
    objectives = sorted({k for t in trials for k in (getattr(t, "objectives", None) or {})})
    best_id = (summary.get("best") or {}).get("trial_id")
    web = _mlflow_web((mlflow or {}).get("tracking_uri"))[0] if isinstance(mlflow, dict) else None
    head = ["#", "trial", "status", f"best {metric}", "epochs run", "train s", *params, *objectives, "error"]
    titles = ["order the trial started in", "trial id", "how the trial ended", f"its best {metric} ({mode})",
              "epochs it ran", "seconds it trained", *params, *objectives, "why it failed"]
    header = "".join(f'<th title="{_e(t)}" scope="col">{_e(h)}</th>' for h, t in zip(head, titles))
    sign = -1 if mode == "max" else 1
    ranked = sorted(enumerate(trials), key=lambda it: (it[1].best_value is None, sign * (it[1].best_value or 0.0)))
    rows = []
    for order, t in ranked:
        trial_cell = _e(t.trial_id)
        if web and experiment_id and t.trial_id in child_runs:
            trial_cell = _link(f"{web}/#/experiments/{experiment_id}/runs/{child_runs[t.trial_id]}", t.trial_id)
        elif t.trial_id in child_runs:
            trial_cell += f'<br><small title="MLflow run id">{_e(child_runs[t.trial_id])}</small>'
        star = ' <span class="star" title="best trial">★</span>' if t.trial_id == best_id else ""
        cells = [(order + 1, str(order + 1)), (t.trial_id, trial_cell + star),
                 (t.status, f'<span class="badge {_e(t.status)}">{_e(STATUS_LABELS.get(t.status, t.status))}</span>'),
                 (t.best_value, _metric(t.best_value)), (t.epochs_run, _value(t.epochs_run)),
                 (t.train_seconds, f"{t.train_seconds:.1f}")]
        cells += [(t.config.get(p), _e(_value(t.config.get(p)))) for p in params]
        measured = getattr(t, "objectives", None) or {}
        cells += [(measured.get(o), _e(_value(measured.get(o)))) for o in objectives]
        cells.append((t.error or "", f'<span class="error">{_e(t.error)}</span>' if t.error else ""))
        classes = f"status-{t.status}" + (" best" if t.trial_id == best_id else "")
        rows.append(f'<tr class="{_e(classes)}" data-trial="{_e(t.trial_id)}">' + "".join(
            f'<td data-sort="{_e(_sort_key(key))}"{" class=num" if _scalar(key) else ""}>{shown}</td>'
            for key, shown in cells) + "</tr>")
    return (f'<section id="trials"><h2>Trials</h2><p class="note">Best first; click a column heading to sort '
            f'(again to reverse).</p><div class="scroll"><table id="trial-table" class="sortable">'
            f"<thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table></div></section>")


def _history_of_sweep(summary: dict[str, Any]) -> str:
    parts = []
    warm = summary.get("warm_start")
    if isinstance(warm, dict):
        if warm.get("trials_used"):
            sources = ", ".join(str(s) for s in warm.get("from") or []) or "earlier sweeps"
            text = f"Started from {warm['trials_used']} trial(s) of {sources}."
        else:
            text = "Started from nothing (no comparable earlier sweep, or warm start off)."
        skipped = warm.get("skipped") or {}
        if skipped:
            text += " Left out: " + "; ".join(f"{n} ({reason})" for reason, n in skipped.items()) + "."
        parts.append(f'<h3>Warm start</h3><p id="warm-start">{_e(text)}</p>')
    extended = summary.get("extended") or []
    if extended:
        keys = list(dict.fromkeys(k for e in extended if isinstance(e, dict) for k, v in e.items() if _plain(v)))
        head = "".join(f"<th>{_e(k)}</th>" for k in keys)
        rows = "".join("<tr>" + "".join(f"<td>{_e(_value(e.get(k)))}</td>" for k in keys) + "</tr>"
                       for e in extended if isinstance(e, dict))
        parts.append(f'<h3>Extensions</h3><table id="extensions"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>')
    pareto = summary.get("pareto")
    if isinstance(pareto, dict):
        front = [row for row in pareto.get("front") or [] if isinstance(row, dict)]
        keys = list(dict.fromkeys(k for row in front for k, v in row.items() if _plain(v)))
        rows = "".join("<tr>" + "".join(f"<td>{_e(_value(row.get(k)))}</td>" for k in keys) + "</tr>" for row in front)
        parts.append(f"<h3>Pareto front</h3><p>Objectives {_e(', '.join(pareto.get('objectives') or []))}; constraints "
                     f"{_e(json.dumps(pareto.get('constraints') or {}))}; {_e(pareto.get('within_constraints'))} "
                     f"trial(s) within them.</p><table id=\"pareto\"><thead><tr>"
                     + "".join(f"<th>{_e(k)}</th>" for k in keys) + f"</tr></thead><tbody>{rows}</tbody></table>")
    return f'<section id="history"><h2>Where the sweep came from</h2>{"".join(parts)}</section>' if parts else ""


def _files(sweep_dir: Path) -> str:
    names = ["summary.json", "trials.json", *[f"{n}.png" for n in PLOTS], "optuna.db"]
    links = "".join(f'<li><a href="{_e(n)}">{_e(n)}</a></li>' for n in names if (sweep_dir / n).exists())
    dashboard = ""
    if (sweep_dir / "optuna.db").exists():
        dashboard = (f"<p>The trials as an Optuna study: <code>optuna-dashboard "
                     f"sqlite:///{_e((sweep_dir / 'optuna.db').resolve())}</code></p>")
    return (f'<section id="files"><h2>Files</h2><p>In <code>{_e(sweep_dir.resolve())}</code>:</p>'
            f"<ul>{links}</ul>{dashboard}</section>")


# ---- helpers --------------------------------------------------------------------------------------

def _svg(figure: Any, name: str) -> str:
    """The figure as inline SVG: text kept as text, and its ids prefixed with the plot's name so that
    four SVGs in one page do not share clip paths or markers; each learning curve gets its trial."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{name}-{m.group(1)}"', text)
    text = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#{name}-{m.group(1)})" if m.group(1) in ids else m.group(0), text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{name}-{m.group(1)}"' if m.group(1) in ids else m.group(0), text)

    def curve(match: re.Match) -> str:
        status, trial = match.group(2), match.group(3)
        label = STATUS_LABELS.get(status, status)
        return (f'<g id="{match.group(1)}" class="curve status-{status}" data-trial="{trial}">'
                f"<title>trial {trial}: {html.escape(label)}</title>")

    text = re.sub(r'<g id="(learning_curves-curve-(completed|stopped_early|failed)-([^"]+))">', curve, text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{_e(PLOT_TITLES.get(name, name))}" ', 1)


def _child_runs(mlflow: dict[str, Any]) -> dict[str, str]:
    """Trial id -> the trial's MLflow run id, for the table's links; empty if the store will not say."""
    try:
        from ..tracking import runs as tracking

        client = tracking.client_for(mlflow["tracking_uri"])
        parent = client.get_run(mlflow["parent_run_id"])
        runs = client.search_runs([parent.info.experiment_id], max_results=5000,
                                  filter_string=f"tags.`{tracking.PARENT_TAG}` = '{mlflow['parent_run_id']}'")
        return {r.data.tags[tracking.TRIAL_TAG]: r.info.run_id for r in runs if tracking.TRIAL_TAG in r.data.tags}
    except Exception as exc:  # noqa: BLE001 - links are a nicety
        log.warning("report: trial runs not linked: %s", (str(exc).splitlines() or [type(exc).__name__])[0][:300])
        return {}


def _experiment_id(sweep_dir: Path) -> str | None:
    try:
        return json.loads((sweep_dir / "mlflow.json").read_text()).get("experiment_id")
    except (OSError, ValueError):
        return None


def _mlflow_web(uri: str | None) -> tuple[str | None, str]:
    """(the MLflow UI's base URL, "") for a server; (None, how to open one) for a local store."""
    if not uri:
        return None, ""
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/"), ""
    return None, (f"A local store: <code>mlflow ui --backend-store-uri {_e(uri)}</code> shows these runs "
                  "(the parent run lists its trials' runs).")


def _card(title: str, value: str, detail: str) -> str:
    return f'<div class="card"><div class="label">{_e(title)}</div><div class="value">{value}</div><div class="detail">{detail}</div></div>'


def _kv_table(rows: dict[str, Any], table_id: str | None = None) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows.items())
    ident = f' id="{table_id}"' if table_id else ""
    return f'<table class="kv"{ident}>{body}</table>'


def _link(url: str, text: str, link_id: str | None = None) -> str:
    ident = f' id="{link_id}"' if link_id else ""
    return f'<a href="{_e(url)}"{ident}>{_e(text)}</a>'


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _metric(value: Any) -> str:
    """A metric as the page shows it everywhere: four decimals."""
    if not _scalar(value):
        return "" if value is None else str(value)
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def _signed(value: Any) -> str:
    return f"{value:+.4f}" if _scalar(value) else "?"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _duration(seconds: Any) -> str:
    if not _scalar(seconds):
        return "?"
    minutes, secs = divmod(float(seconds), 60)
    return f"{int(minutes)} min {secs:.0f} s" if minutes else f"{secs:.1f} s"


def _sort_key(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(float(value)) if _scalar(value) else str(value)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:16px 28px}header h1{margin:0;font-size:22px}
.sub{margin:4px 0 0;color:#c9d1d9}main{padding:8px 28px 40px;max-width:1500px}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 18px;margin:16px 0}
h2{font-size:18px;margin:4px 0 10px}h3{font-size:15px;margin:12px 0 6px}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;min-width:170px}
.card .label{color:#57606a;font-size:12px;text-transform:uppercase}.card .value{font-size:24px;font-weight:600}
.card .detail{color:#57606a;font-size:12px}.columns{display:flex;flex-wrap:wrap;gap:28px}
table{border-collapse:collapse;font-size:13px}th,td{border-bottom:1px solid #e5e7eb;padding:4px 10px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}table.kv th{color:#57606a;font-weight:500}
table.sortable th{cursor:pointer;user-select:none;background:#f6f8fa;position:sticky;top:0}
table.sortable th:hover{background:#eaeef2}th[aria-sort=ascending]::after{content:" ▲"}th[aria-sort=descending]::after{content:" ▼"}
.scroll{overflow-x:auto}
tr.status-stopped_early{background:#fff4e5}tr.status-stopped_early td{color:#6e4b00}
tr.status-failed{background:#ffebe9}tr.status-failed td{color:#82071e}tr.best td{font-weight:600}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;white-space:nowrap}
.badge.completed{background:#ddf4ff;color:#0550ae}.badge.stopped_early{background:#ffd8a8;color:#7a3e00;border:1px dashed #bc4c00}
.badge.failed{background:#ff8182;color:#fff}.star{color:#bf8700}.error{color:#cf222e}
#decision.promoted strong{color:#1a7f37}#decision.kept strong{color:#9a6700}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:14px}
figure.plot{margin:0;border:1px solid #e5e7eb;border-radius:6px;padding:8px}figcaption{font-weight:600;margin-bottom:4px}
figure.plot svg,figure.plot img{width:100%;height:auto;display:block}
g.curve:hover path{stroke-width:3.5}.note{color:#57606a;font-size:12px}.skipped{color:#57606a;font-style:italic}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f6f8fa;padding:1px 4px;border-radius:4px}
.path{font-size:12px;color:#57606a;word-break:break-all}
"""

# Sorts any `table.sortable` by the clicked column: by each cell's `data-sort` (numbers as numbers,
# empty cells last whichever the direction); clicking again reverses. Keyboard: Enter or Space.
SCRIPT = """
(function(){
  function cmp(a,b){
    if(a===""||b==="")return a===b?0:(a===""?1:-1);
    var x=Number(a),y=Number(b);
    if(!isNaN(x)&&!isNaN(y))return x-y;
    return a.localeCompare(b,undefined,{numeric:true});
  }
  function sortBy(table,col,th){
    var up=th.getAttribute("aria-sort")!=="ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.removeAttribute("aria-sort");});
    th.setAttribute("aria-sort",up?"ascending":"descending");
    var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
    function key(r){var c=r.cells[col];return c.hasAttribute("data-sort")?c.getAttribute("data-sort"):c.textContent.trim();}
    rows.sort(function(r,s){var a=key(r),b=key(s);if(a===""||b==="")return cmp(a,b);return up?cmp(a,b):cmp(b,a);});
    rows.forEach(function(r){body.appendChild(r);});
  }
  document.querySelectorAll("table.sortable").forEach(function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,col){
      th.tabIndex=0;
      th.addEventListener("click",function(){sortBy(table,col,th);});
      th.addEventListener("keydown",function(e){if(e.key==="Enter"||e.key===" "){e.preventDefault();sortBy(table,col,th);}});
    });
  });
})();
"""
