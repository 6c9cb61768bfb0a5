"""The model registry: register a sweep's best model and promote it with aliases, only if it is better.

Each registered model (named after the spec's `name`) has versions; a version is a pyfunc (see
`pyfunc`) carrying the checkpoint. Aliases, not the deprecated stages:
- `challenger`: set on every new version, kept by the latest version that did not become champion;
- `champion`: what `NAME` alone resolves to (serve, predict). A new version takes it only if it
  beats the champion by more than the margin (`tracking.promotion_margin`); the first version
  always does. "Beats" is a paired bootstrap over both versions' per-example test results
  (`paired.py`, `tracking.promotion_gate: bootstrap`, the default): the advantage must be above the
  margin with `tracking.promotion_confidence`, so a challenger that differs only by seed noise is
  not promoted. Every version keeps its per-example test results beside its model for this. Where
  they cannot be paired (a version registered without them, another test set, the loss as metric)
  or with `promotion_gate: margin`, the two test scores are compared directly, and the reason says
  so. The decision, the interval, the number of test examples, both metrics and the previous
  champion are tagged on the version, and the registered model keeps the champion history (tag
  `tunefleet.champion_history`) for rollback.

Concurrency: two sweeps of one task may finish at once. The read-compare-set of the champion runs
under a per-model lock, so exactly one consistent champion results (the better one, whatever order):
- a store on this machine (SQLite, file): an exclusive `flock` on a file beside the database;
- a remote store (HTTP server, PostgreSQL): a lease in the registered-model tag `tunefleet.lock`,
  taken with Fischer's timed mutual exclusion: read the tag; if free (or its lease expired), write
  our token; wait a settle delay longer than any writer's read-to-write gap; read it back and hold
  the lock only if our token is still there, else back off and retry. A writer that read "free"
  just before us has written by the time we re-read, so at most one of two racers sees its own
  token. Leases expire (60 s) so a crashed holder cannot block the model forever. The lock lives
  in `lock`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tasks import get_task
from ..train.checkpoint import META_FILE, read_meta
from .lock import model_lock
from .paired import RECORD_FILE, NotComparable, compare, seed_noise_of_difference
from .pyfunc import CHECKPOINT_ARTIFACT, save_pyfunc
from ..train.tokenized import cache_dir
from .runs import client_for, ensure_experiment, tracking_uri

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "tunefleet.champion_history"
# The seed-to-seed standard deviation of the version's recipe on the validation metric, when a sweep
# measured it (`search.final_seeds`); the paired gate adds it to its noise (`paired.py`). The
# registered model keeps the latest measurement under the same tag, for versions without their own.
SEED_STD_TAG = "tunefleet.seed_std"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_ALIAS = re.compile(r"[a-z0-9_-]{1,64}")


class RegistryError(ValueError):
    """A bad or unknown model name, version or alias (CLI exit 2)."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: int
    alias: str | None
    checkpoint: str  # local folder with the tunefleet checkpoint (HF layout + tunefleet.json)
    metrics: dict[str, Any]  # the version's recorded {"test": {...}, "validation": {...}}
    run_id: str | None


# ---- references -----------------------------------------------------------------------------------

def parse_model_ref(ref: str) -> tuple[str, str | None, int | None]:
    """`NAME`, `NAME@alias` or `NAME/version` -> (name, alias, version).

    Raises:
        RegistryError: naming what is wrong and the accepted forms.
    """
    name, alias, version = ref, None, None
    if "@" in ref:
        name, _, alias = ref.partition("@")
        if not _ALIAS.fullmatch(alias):
            raise RegistryError(f"model {ref!r}: alias {alias!r} must be lowercase letters, digits, '_' or '-' "
                                "(e.g. champion, challenger)")
    elif "/" in ref:
        name, _, text = ref.partition("/")
        if not text.isdigit() or int(text) < 1:
            raise RegistryError(f"model {ref!r}: version {text!r} must be a positive integer, e.g. {name}/3")
        version = int(text)
    if not _NAME.fullmatch(name):
        raise RegistryError(f"model {ref!r}: name {name!r} must be letters, digits, '.', '_' or '-'; "
                            "write NAME, NAME@alias or NAME/version")
    return name, alias, version


def resolve_model(ref: str, tracking_uri: str | None = None) -> ResolvedModel:
    """Find a version (`NAME` alone means `NAME@champion`) and download its checkpoint (cached).

    Raises:
        RegistryError: unknown model, alias or version.
    """
    name, alias, version = parse_model_ref(ref)
    alias = alias if version is not None or alias else CHAMPION
    uri = _uri(tracking_uri)
    client = client_for(uri)
    found = _get_version(client, name, version=version, alias=alias if version is None else None)
    folder = _download_checkpoint(found, uri)
    return ResolvedModel(name=name, version=int(found.version), alias=None if version is not None else alias,
                         checkpoint=str(folder), metrics=_recorded_metrics(found), run_id=found.run_id)


def current_version(name: str, alias: str, tracking_uri: str | None = None) -> int | None:
    """The version an alias points to now, or None (no such model or alias). Cheap: one request."""
    parse_model_ref(f"{name}@{alias}")
    try:
        return int(client_for(_uri(tracking_uri)).get_model_version_by_alias(name, alias).version)
    except Exception:  # noqa: BLE001 - "not there" in whatever form the store says it
        return None


# ---- registering and the champion gate ------------------------------------------------------------

def register_checkpoint(checkpoint: str, name: str, test_metrics: dict[str, Any], *, tracking_uri: str | None = None,
                        run_id: str | None = None, margin: float = 0.0, source_sweep: str | None = None,
                        test_predictions: str | Path | dict[str, Any] | None = None, gate: str = "bootstrap",
                        confidence: float = 0.95, seed_std: float | None = None,
                        extra_tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Log `checkpoint` as a pyfunc model, register it under `name`, alias it `challenger` and apply
    the champion gate.

    Args:
        checkpoint: a complete tunefleet checkpoint folder.
        test_metrics: its test scores; the gate compares the one named by the checkpoint's `metric`.
        run_id: the run that holds the model's artifacts (a sweep's parent run); None creates one.
        margin: how much the test metric must beat the champion's by.
        source_sweep: recorded on the version.
        test_predictions: its per-example test results (`paired.example_record`, or a JSON file of
            one), kept with the version for paired gates now and later; None: the gate compares
            test scores only.
        gate: "bootstrap" (paired, with `confidence`) or "margin" (`tracking.promotion_gate`).
        seed_std: the recipe's seed-to-seed standard deviation of the metric, when measured
            (`search.final_seeds`); the gate counts it as noise.
        extra_tags: more version tags (a sweep's finalist seeds: `tunefleet.final_seeds`).

    Returns:
        `{"name", "version", "aliases", "promoted": {"promoted", "reason"}}`.
    """
    parse_model_ref(name)
    meta = read_meta(checkpoint)
    metric = meta["metric"]
    # Whether lower is better is the task's to say (loss, mse); the version records it for later gates.
    mode = "min" if metric in get_task(meta["task"]).minimize else "max"
    if not isinstance(test_metrics.get(metric), (int, float)):
        raise RegistryError(f"{checkpoint}: test metrics have no {metric!r}; cannot compare with the champion")
    uri = _uri(tracking_uri)
    client = client_for(uri)
    own_run = run_id is None
    if own_run:
        run_id = client.create_run(ensure_experiment(client, uri, name), run_name=f"register-{name}").info.run_id
    # A version's files must never change: a resumed sweep registering again gets a fresh path.
    artifact_path = f"model-{uuid.uuid4().hex[:8]}" if client.list_artifacts(run_id, "model") else "model"
    record = _read_record(test_predictions)
    with tempfile.TemporaryDirectory(prefix="tunefleet-model-") as tmp:
        save_pyfunc(checkpoint, str(Path(tmp) / "model"), meta["task"], get_task(meta["task"]).example_inputs)
        if record is not None:
            (Path(tmp) / "model" / RECORD_FILE).write_text(json.dumps(record))
        client.log_artifacts(run_id, str(Path(tmp) / "model"), artifact_path)
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    numbers = {k: v for k, v in test_metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    trained = (meta.get("spec") or {}).get("train") or {}
    validation = {k: v for k, v in meta.get("validation", {}).items() if isinstance(v, (int, float))}
    tags = {"tunefleet.metric": metric, "tunefleet.mode": mode, "tunefleet.test_metric": repr(float(numbers[metric])),
            "tunefleet.metrics": json.dumps({"test": numbers, "validation": validation}),
            "tunefleet.margin": repr(float(margin)), "tunefleet.task": meta["task"],
            "tunefleet.source_sweep": source_sweep or "",
            # Full fine-tuning or LoRA (merged into the registered weights), and what it trained.
            "tunefleet.finetuning": (trained.get("peft") or {}).get("method", "full"),
            "tunefleet.trainable_parameters": str((meta.get("parameters") or {}).get("trainable", "")),
            # What trained it, so that a later sweep can start from the champion's hyperparameters.
            "tunefleet.spec": _spec_tag(meta.get("spec") or {}),
            # How this version is to be judged, now and by a later `tunefleet promote`.
            "tunefleet.promotion_gate": gate, "tunefleet.confidence": repr(float(confidence)),
            "tunefleet.test_examples": "" if record is None else str(record["examples"]),
            SEED_STD_TAG: "" if seed_std is None else repr(float(seed_std))} | (extra_tags or {})
    if gate not in ("bootstrap", "margin"):
        raise RegistryError(f"promotion gate {gate!r}: use bootstrap or margin (tracking.promotion_gate)")
    _ensure_registered_model(client, name)
    with model_lock(client, uri, name):
        version = int(client.create_model_version(name, source, run_id=run_id, tags=tags).version)
        if seed_std is not None:
            # The recipe's latest measured seed spread, for later versions registered without one.
            client.set_registered_model_tag(name, SEED_STD_TAG, repr(float(seed_std)))
        earlier_challenger = _alias_version(client, name, CHALLENGER)
        client.set_registered_model_alias(name, CHALLENGER, str(version))
        decision = _gate(client, uri, name, version, float(numbers[metric]), metric, mode, margin, force=False,
                         gate=gate, confidence=confidence, record=record)
        if decision["promoted"] and earlier_challenger is not None:
            # The winner left `challenger`; the latest version that lost keeps it.
            client.set_registered_model_alias(name, CHALLENGER, str(earlier_challenger))
    if own_run:
        client.set_terminated(run_id, "FINISHED")
    aliases = sorted(client.get_model_version(name, str(version)).aliases)
    return {"name": name, "version": version, "aliases": aliases, "promoted": decision}


def promote(name: str, version: int, force: bool = False, tracking_uri: str | None = None) -> dict[str, Any]:
    """Make `version` champion if it beats the champion by its recorded margin, or always with `force`."""
    parse_model_ref(f"{name}/{version}")
    uri = _uri(tracking_uri)
    client = client_for(uri)
    with model_lock(client, uri, name):
        found = _get_version(client, name, version=int(version))
        value = float(found.tags.get("tunefleet.test_metric", "nan"))
        gate = found.tags.get("tunefleet.promotion_gate", "margin")  # versions from before the paired gate
        decision = _gate(client, uri, name, int(version), value, found.tags.get("tunefleet.metric", "?"),
                         found.tags.get("tunefleet.mode", "max"), float(found.tags.get("tunefleet.margin", "0")),
                         force=force, gate=gate, confidence=float(found.tags.get("tunefleet.confidence", "0.95")),
                         record=None if force or gate != "bootstrap" else _version_record(found, uri))
    return {"name": name, "version": int(version), "aliases": sorted(_get_version(client, name, version=int(version)).aliases),
            "promoted": decision}


def rollback(name: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """Give `champion` back to the previous champion; the demoted version keeps no alias.

    Raises:
        RegistryError: the model has no earlier champion.
    """
    parse_model_ref(name)
    uri = _uri(tracking_uri)
    client = client_for(uri)
    _registered(client, name)
    with model_lock(client, uri, name):
        history = _history(client, name)
        current = _alias_version(client, name, CHAMPION)
        if history and history[-1] == current:
            history.pop()
        if not history:
            raise RegistryError(f"{name}: no previous champion to roll back to; `tunefleet models {name}` "
                                "lists versions, `tunefleet promote NAME VERSION --force` sets one")
        previous = history[-1]
        client.set_registered_model_alias(name, CHAMPION, str(previous))
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-100:]))
        if current is not None:
            client.set_model_version_tag(name, str(current), "tunefleet.decision", f"rolled back to version {previous}")
    return {"name": name, "champion": previous, "rolled_back": current}


def list_models(name: str | None = None, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """Every version (of `name`, or of every model): aliases, metrics, decision and source sweep."""
    client = client_for(_uri(tracking_uri))
    if name is not None:
        parse_model_ref(name)
        _registered(client, name)
        names = [name]
    else:
        names = sorted(m.name for m in client.search_registered_models(max_results=1000))
    rows = []
    for model_name in names:
        # Version search does not fill in aliases on every store; the registered model has them all.
        aliases: dict[int, list[str]] = {}
        for alias, number in client.get_registered_model(model_name).aliases.items():
            aliases.setdefault(int(number), []).append(alias)
        versions = client.search_model_versions(f"name = '{model_name}'", max_results=10000)
        for v in sorted(versions, key=lambda v: -int(v.version)):
            rows.append({"name": model_name, "version": int(v.version), "aliases": sorted(aliases.get(int(v.version), [])),
                         "metric": v.tags.get("tunefleet.metric"), "test_metric": _float(v.tags.get("tunefleet.test_metric")),
                         "metrics": _recorded_metrics(v), "decision": v.tags.get("tunefleet.decision"),
                         "reason": v.tags.get("tunefleet.reason"), "gate": v.tags.get("tunefleet.gate"),
                         "advantage": _float(v.tags.get("tunefleet.advantage")),
                         "interval": json.loads(v.tags.get("tunefleet.interval") or "null"),
                         "confidence": _float(v.tags.get("tunefleet.confidence")),
                         "seed_std": _float(v.tags.get(SEED_STD_TAG)), "seed_noise": _float(v.tags.get("tunefleet.seed_noise")),
                         "test_examples": int(v.tags["tunefleet.test_examples"]) if v.tags.get("tunefleet.test_examples") else None,
                         "source_sweep": v.tags.get("tunefleet.source_sweep") or None, "run_id": v.run_id,
                         "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.creation_timestamp / 1000))})
    return rows


def champion_spec(name: str, tracking_uri: str | None = None) -> dict[str, Any] | None:
    """The spec (as a dict, without its `search` section) that trained `name@champion`; None when
    the model, its champion or the record is missing (versions registered before it was kept)."""
    client = client_for(_uri(tracking_uri))
    try:
        version = _get_version(client, name, alias=CHAMPION)
    except RegistryError:
        return None
    try:
        return json.loads(version.tags.get("tunefleet.spec") or "null")
    except json.JSONDecodeError:
        return None


def _spec_tag(spec: dict[str, Any]) -> str:
    """The training spec as a version tag: the search section left out (the space is not what
    trained this model), and cut down to `train` and `model` if the whole would pass MLflow's
    5,000-character limit on tag values."""
    kept = {key: value for key, value in spec.items() if key != "search"}
    text = json.dumps(kept, default=str)
    if len(text) > 5000:
        text = json.dumps({key: kept[key] for key in ("train", "model") if key in kept}, default=str)
    return text if len(text) <= 5000 else "{}"


def _gate(client: Any, uri: str, name: str, version: int, value: float, metric: str, mode: str, margin: float,
          force: bool, gate: str = "margin", confidence: float = 0.95, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """The read-compare-set of `champion`; the caller holds the model's lock.

    With `gate == "bootstrap"` and per-example results on both sides (`record`, and the champion's
    kept beside its model), the paired bootstrap decides; otherwise the two test scores do."""
    champion = _alias_version(client, name, CHAMPION)
    if champion == version:
        return {"promoted": False, "reason": f"version {version} is already champion"}
    champion_value, champion_version = None, None
    if champion is not None:
        champion_version = _get_version(client, name, version=champion)
        champion_value = _float(champion_version.tags.get("tunefleet.test_metric"))
    paired, unpaired_because = None, None
    if force:
        promoted, reason = True, f"forced over version {champion}" if champion else "forced; no champion before"
    elif champion is None or champion_value is None:
        promoted, reason = True, "first version with a test metric: becomes champion"
    else:
        if gate == "bootstrap":
            # Each version's own measured spread; where neither has one, the model's latest measurement
            # (the same task, data and metric), standing for both.
            noise = seed_noise_of_difference(
                _float(champion_version.tags.get(SEED_STD_TAG)),
                _float(client.get_model_version(name, str(version)).tags.get(SEED_STD_TAG))) or \
                seed_noise_of_difference(_float(client.get_registered_model(name).tags.get(SEED_STD_TAG)), None)
            paired, unpaired_because = _paired(champion_version, uri, record, metric, mode, confidence, noise)
        if paired is not None:
            promoted = paired.lower_bound > margin
            low, high = paired.interval
            noise_text = (f" and seed noise (sd {paired.seed_noise:.4f})" if paired.seed_noise else
                          "; seed noise not measured (search.final_seeds measures it)")
            reason = (f"test {metric} {value:.4f} vs champion v{champion}'s {champion_value:.4f}: advantage "
                      f"{paired.advantage:+.4f}, {paired.confidence:.0%} interval [{low:+.4f}, {high:+.4f}] over "
                      f"{paired.examples} paired test examples{noise_text}; {paired.confidence:.0%} lower bound "
                      f"{paired.lower_bound:+.4f} {'>' if promoted else '<='} margin {margin:g}")
        else:
            better = value > champion_value + margin if mode == "max" else value < champion_value - margin
            promoted = better
            reason = (f"test {metric} {value:.4f} {'beats' if better else 'does not beat'} champion v{champion}'s "
                      f"{champion_value:.4f} by more than margin {margin:g}")
            if unpaired_because:
                reason += f" (scores compared directly, not paired: {unpaired_because})"
    tags = {"tunefleet.decision": "promoted" if promoted else "kept challenger", "tunefleet.reason": reason,
            "tunefleet.previous_champion": str(champion or ""),
            "tunefleet.champion_metric": "" if champion_value is None else repr(champion_value),
            "tunefleet.gate": "forced" if force else "paired bootstrap" if paired else "first" if champion_value is None
            else "margin"}
    if paired is not None:
        tags |= {"tunefleet.seed_noise": "" if paired.seed_noise is None else repr(paired.seed_noise)}
        tags |= {"tunefleet.advantage": repr(paired.advantage), "tunefleet.lower_bound": repr(paired.lower_bound),
                 "tunefleet.interval": json.dumps(list(paired.interval)),
                 "tunefleet.test_examples": str(paired.examples), "tunefleet.bootstrap_samples": str(paired.samples)}
    for key, text in tags.items():
        client.set_model_version_tag(name, str(version), key, text)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, str(version))
        if _alias_version(client, name, CHALLENGER) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
        history = [v for v in _history(client, name) if v != version] + [version]
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-100:]))
    decision = {"promoted": promoted, "reason": reason}
    return decision | ({"paired": paired.as_dict()} if paired is not None else {})


def _paired(champion: Any, uri: str, record: dict[str, Any] | None, metric: str, mode: str,
            confidence: float, seed_noise: float | None = None) -> tuple[Any, str | None]:
    """(the paired comparison, None), or (None, why the two cannot be paired)."""
    if record is None:
        return None, "this version has no per-example test results"
    champion_record = _version_record(champion, uri)
    if champion_record is None:
        return None, f"champion v{champion.version} has no per-example test results"
    try:
        return compare(champion_record, record, metric, mode, confidence, seed_noise=seed_noise), None
    except NotComparable as exc:
        return None, str(exc)


# ---- helpers --------------------------------------------------------------------------------------

def _uri(configured: str | None) -> str:
    return tracking_uri(configured)


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _ensure_registered_model(client: Any, name: str) -> None:
    try:
        client.get_registered_model(name)
        return
    except Exception:  # noqa: BLE001 - not found
        pass
    try:
        client.create_registered_model(name, description=f"tunefleet model for spec {name}")
    except Exception:  # noqa: BLE001 - a racing process created it
        client.get_registered_model(name)


def _registered(client: Any, name: str) -> Any:
    try:
        return client.get_registered_model(name)
    except Exception:  # noqa: BLE001
        raise RegistryError(f"no registered model {name!r}; `tunefleet models` lists them (a sweep registers "
                            "its best model under the spec's name)") from None


def _get_version(client: Any, name: str, version: int | None = None, alias: str | None = None) -> Any:
    _registered(client, name)
    try:
        if version is not None:
            return client.get_model_version(name, str(version))
        return client.get_model_version_by_alias(name, alias)
    except Exception:  # noqa: BLE001
        what = f"version {version}" if version is not None else f"alias @{alias}"
        raise RegistryError(f"model {name!r} has no {what}; `tunefleet models {name}` lists its versions "
                            "and aliases") from None


def _alias_version(client: Any, name: str, alias: str) -> int | None:
    aliases = client.get_registered_model(name).aliases  # {alias: version}
    return int(aliases[alias]) if alias in aliases else None


def _history(client: Any, name: str) -> list[int]:
    return [int(v) for v in json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))]


def _read_record(record: str | Path | dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None or isinstance(record, dict):
        return record
    try:
        return json.loads(Path(record).read_text())
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{record}: per-example test results unreadable ({exc}); score the checkpoint "
                            "again or register without them") from None


def _version_record(version: Any, uri: str) -> dict[str, Any] | None:
    """A version's per-example test results, kept beside its model; None for a version without."""
    import mlflow.artifacts

    if not version.tags.get("tunefleet.test_examples"):
        return None
    with tempfile.TemporaryDirectory(prefix="tunefleet-record-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"{version.source.rstrip('/')}/{RECORD_FILE}",
                                                    dst_path=tmp, tracking_uri=uri)
        return json.loads(Path(local).read_text())


def _recorded_metrics(version: Any) -> dict[str, Any]:
    return json.loads(version.tags.get("tunefleet.metrics", "{}"))


def _download_checkpoint(version: Any, uri: str) -> Path:
    """The version's checkpoint under the cache; versions never change, so a complete copy is reused.
    The key includes the run id, so a recreated store with a new "version 1" never hits a stale copy."""
    import mlflow.artifacts

    key = hashlib.sha256(f"{uri}|{version.run_id}|{version.source}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / version.name / f"v{version.version}-{key}"
    if (target / META_FILE).is_file():
        return target
    staging = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:6]}")
    staging.mkdir(parents=True)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"{version.source.rstrip('/')}/{CHECKPOINT_ARTIFACT}",
                                                    dst_path=str(staging), tracking_uri=uri)
        if target.exists():  # another process finished first
            return target
        Path(local).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
