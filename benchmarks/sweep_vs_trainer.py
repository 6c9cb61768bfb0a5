"""tunefleet's sweep against Hugging Face `Trainer.hyperparameter_search`, on the same work, side by side.

    .venv/bin/python benchmarks/sweep_vs_trainer.py [--train 2000 --validation 1000 --test 1000 --trials 8 --seed 0
        --precision auto --out FILE]

The work: the first 2,000 CoNLL-2003 training sentences, the first 1,000 validation and the first 1,000
test sentences (../shared/data/conll2003), the bundled MiniLM with a fresh token-classification head,
max_length 128, batch 16, 8 trials over lr loguniform 1e-5..3e-4, weight_decay loguniform 1e-4..0.1,
dropout uniform 0..0.3 and epochs in {1, 2, 3}, one trial at a time on 2 CPUs, best by entity F1.

- tunefleet: `run_sweep` with Optuna TPE (search.seed `--seed`, default 0; no seeded first point) and ASHA (grace
  period 1 epoch, reduction factor 2), 1 worker x `--cpus` CPUs, tracking off, `train.precision` from
  `--precision` (auto: bf16 where the CPU has AVX-512 bf16 or AMX, so `--precision fp32` measures the
  fp32 path on such a CPU). Early stopping off, so a trial ends at its epochs or when ASHA stops it.
- trainer: the `hyperparameter_search` recipe of the transformers docs: `model_init` building
  AutoModelForTokenClassification with the trial's dropout on every dropout field MiniLM's config has
  (as tunefleet's `build_model` does), `hp_space` with optuna's `suggest_float(log=True)` /
  `suggest_categorical`, `backend="optuna"`, `direction="maximize"`, `compute_objective` = eval F1,
  `sampler=TPESampler(seed=--seed)` and `pruner=SuccessiveHalvingPruner()` passed through to
  `optuna.create_study`, `DataCollatorForTokenClassification`, `eval_strategy="epoch"` (so the pruner
  sees eval F1 once per epoch, at the global step), `save_strategy="no"`, torch threads = `--cpus`,
  Trainer defaults otherwise (fp32 unless `--trainer-bf16`). `--trainer-recipe matched` instead gives
  TPE tunefleet's number of random start-up trials and the pruner ASHA's rungs (one epoch, halving),
  to separate what the recipe's defaults cost from what the machinery costs.

What is the same on both sides, by construction:
- sentences: tunefleet's `max_*_samples` is a seeded shuffle, not "first N", so the parent reads the
  full files with tunefleet's reader, writes the first N sentences of each split to temporary CoNLL
  files, and both sides read those (no `max_*_samples`);
- tokens and labels: both sides take tunefleet's `prepare_data` output (first sub-word carries the
  word's tag, -100 elsewhere); the Trainer gets those ids and labels as rows;
- scoring: both score with tunefleet's token-classification task (`predictions` then `score`:
  seqeval, strict IOB2, words cut by truncation counted as predicted O), the Trainer through its
  `compute_metrics`;
- best: the best (trial, epoch) evaluation on validation, and the test F1 of that model. tunefleet
  keeps the best epoch's checkpoint and scores test inside `run_sweep`. On the Trainer side a callback
  copies the model's weights into memory whenever an evaluation beats every earlier one in the
  search; after the search, that copy is scored on test through the Trainer's own `evaluate`. The
  copies are benchmark instrumentation, not part of the recipe: their time is measured and
  subtracted from the Trainer's clock. (The Trainer's own `best_run` is also reported: its objective
  is a trial's *last* evaluation, not its best.)
- the clocks: each side runs in its own process (Ray and the Trainer never share one), with its own
  empty tokenization cache. A side's clock starts before its data is read and tokenized and stops
  once the best model's test F1 is known, so tunefleet's includes starting Ray and the Trainer's
  includes building the `Trainer`; imports are before it on both sides.

Reported per side: best validation F1, its test F1, trial-epochs (the epochs each trial actually
trained, pruned trials' partial runs included), wall seconds, every evaluation with its time, the
time (seconds since the side's start) at which it first reached its own best, and the time at which
it first reached the OTHER side's best validation F1: the earliest evaluation whose validation F1 is
at least the other side's best, null if none ever was. tunefleet's times are taken in the sweep's
driver when Tune receives each epoch's result (a Tune callback), the Trainer's when its `on_evaluate`
fires. Also the CPU (model name, avx512_bf16 / amx_bf16), torch and each side's training precision.
A readable table comes first, one JSON line last (also written to `--out`).

Smoke test (timings mean nothing): --train 64 --validation 32 --test 32 --trials 2 --epochs 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONLL = ROOT.parent / "shared" / "data" / "conll2003"
TASK = "token-classification"
MODEL = "bundled-minilm"
MAX_LENGTH = 128
BATCH_SIZE = 16
LR = (1.0e-5, 3.0e-4)
WEIGHT_DECAY = (1.0e-4, 0.1)
DROPOUT = (0.0, 0.3)
SIDES = ("tunefleet", "trainer")


def main() -> None:
    args = parse_args()
    if args.side:  # a child: run one side on the prepared files, write its JSON, exit
        run = run_tunefleet if args.side == "tunefleet" else run_trainer
        Path(args.result).write_text(json.dumps(run(args)))
        return
    if not CONLL.exists():
        sys.exit(f"{CONLL} not found: ../shared/data must lie beside the project")
    with tempfile.TemporaryDirectory(prefix="sweep-vs-trainer-") as work:
        files = write_first_sentences(args, Path(work) / "data")
        sides = {side: run_side(side, args, files, Path(work)) for side in (args.only or SIDES)}
    for side, other in (("tunefleet", "trainer"), ("trainer", "tunefleet")):
        if side in sides and "error" not in sides[side]:
            target = sides.get(other, {}).get("best_validation_f1")
            sides[side]["reached_other_best_seconds"] = None if target is None else \
                first_reached(sides[side]["evaluations"], target)
    report = {
        "benchmark": "sweep_vs_trainer",
        "work": {"train": args.train, "validation": args.validation, "test": args.test, "trials": args.trials,
                 "epochs_choice": args.epochs, "model": MODEL, "max_length": MAX_LENGTH, "batch_size": BATCH_SIZE,
                 "cpus": args.cpus, "trainer_recipe": args.trainer_recipe, "seed": args.seed,
                 "start_up_design": args.start_up_design, "rungs": args.rungs},
        "cpu": cpu_info(), "torch": version("torch"), "transformers": version("transformers"),
        "ray": version("ray"), "optuna": version("optuna"),
        **sides,
    }
    print_table(sides)
    line = json.dumps(report)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(line)


def add_work_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that `write_first_sentences` and `sweep_spec` read: the data, the space and the
    sweep's settings. benchmarks/warm_start.py runs the same work and takes them through this too."""
    parser.add_argument("--train", type=int, default=2000, help="first N training sentences")
    parser.add_argument("--validation", type=int, default=1000, help="first N validation sentences")
    parser.add_argument("--test", type=int, default=1000, help="first N test sentences")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 3], help="the epochs choice of the space")
    parser.add_argument("--cpus", type=int, default=2, help="tunefleet's cpus_per_worker; the Trainer's torch threads")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="tunefleet's train.precision")
    parser.add_argument("--start-up-design", choices=("latin_hypercube", "random"), default="latin_hypercube",
                        help="tunefleet's search.start_up_design (random: how its TPE started before session 13)")
    parser.add_argument("--rungs", choices=("shared", "by_length"), default="shared",
                        help="tunefleet's ASHA rungs: shared (Ray's ASHA, the default) or by_length "
                             "(search.rungs_by_length: a trial is compared only with trials planned for as many epochs)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_work_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="both sides' TPE seed (the issue's run: 0)")
    parser.add_argument("--trainer-bf16", action="store_true", help="TrainingArguments(bf16=True); fp32 otherwise")
    parser.add_argument("--trainer-recipe", choices=("docs", "matched"), default="docs",
                        help="docs: TPESampler(seed=0), SuccessiveHalvingPruner(); matched: tunefleet's TPE "
                             "start-up trials and ASHA's rungs (min_resource one epoch, reduction factor 2)")
    parser.add_argument("--only", choices=SIDES, nargs="+", help="run only these sides")
    parser.add_argument("--out", metavar="FILE", help="write the JSON line here too")
    # Internal: how the parent starts one side in a process of its own.
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args()


# ---- the work both sides do ----------------------------------------------------------------------

def write_first_sentences(args: argparse.Namespace, folder: Path) -> dict[str, str]:
    """The first N sentences of each split, read by tunefleet's CoNLL reader, written back as CoNLL
    files (word and IOB2 tag) that both sides read whole."""
    from tunefleet.data import load_data
    from tunefleet.spec import DataConfig

    splits = load_data(DataConfig(format="conll", train=str(CONLL / "train.txt"), validation=str(CONLL / "valid.txt"),
                                  test=str(CONLL / "test.txt")), TASK)
    folder.mkdir(parents=True)
    files = {}
    for name, count in (("train", args.train), ("validation", args.validation), ("test", args.test)):
        examples = getattr(splits, name)
        sentences = zip(examples.tokens[:count], examples.labels[:count])
        path = folder / f"{name}.txt"
        path.write_text("".join("".join(f"{w} {t}\n" for w, t in zip(words, tags)) + "\n" for words, tags in sentences))
        files[name] = str(path)
    return files


def sweep_spec(args: argparse.Namespace, storage: Path, seed: int) -> dict[str, Any]:
    """The tunefleet spec of the work, with TPE seed `seed`; the Trainer side reads its data through it too."""
    data = Path(args.data_dir)
    return {
        "name": "sweep-vs-trainer",
        "task": TASK,
        "data": {"format": "conll", "train": str(data / "train.txt"), "validation": str(data / "validation.txt"),
                 "test": str(data / "test.txt")},
        "model": {"name_or_path": MODEL, "max_length": MAX_LENGTH},
        # No early stopping: a trial ends at its epochs or when ASHA stops it, as on the Trainer side.
        "train": {"epochs": max(args.epochs), "batch_size": BATCH_SIZE, "metric": "f1", "precision": args.precision,
                  "early_stopping_patience": None},
        "resources": {"workers": 1, "cpus_per_worker": args.cpus, "storage_path": str(storage)},
        "tracking": {"enabled": False},
        "search": {"algorithm": "optuna", "scheduler": "asha", "num_trials": args.trials, "seed": seed,
                   "seed_with_spec": False, "grace_period": 1, "reduction_factor": 2, "max_concurrent": 1,
                   "start_up_design": args.start_up_design, "rungs_by_length": args.rungs == "by_length",
                   "space": {"train.lr": {"loguniform": list(LR)},
                             "train.weight_decay": {"loguniform": list(WEIGHT_DECAY)},
                             "train.dropout": {"uniform": list(DROPOUT)},
                             "train.epochs": {"choice": list(args.epochs)}}},
    }


def run_side(side: str, args: argparse.Namespace, files: dict[str, str], work: Path) -> dict[str, Any]:
    """One side in a fresh process, with its own (empty) tokenization cache; its JSON, or its error."""
    result = work / f"{side}.json"
    command = [sys.executable, __file__, "--side", side, "--data-dir", str(Path(files["train"]).parent),
               "--result", str(result), "--trials", str(args.trials), "--seed", str(args.seed), "--epochs", *map(str, args.epochs),
               "--cpus", str(args.cpus), "--precision", args.precision, "--trainer-recipe", args.trainer_recipe,
               "--start-up-design", args.start_up_design, "--rungs", args.rungs,
               *(["--trainer-bf16"] if args.trainer_bf16 else [])]
    env = os.environ | {"TUNEFLEET_CACHE": str(work / f"cache-{side}"), "HF_HUB_OFFLINE": "1",
                        "TOKENIZERS_PARALLELISM": "false"}
    print(f"== {side} ==", flush=True)
    code = subprocess.run(command, env=env, cwd=ROOT).returncode
    if code != 0 or not result.exists():
        return {"error": f"the {side} side exited with code {code}; see its output above"}
    return json.loads(result.read_text())


def first_reached(evaluations: list[dict[str, Any]], target: float) -> float | None:
    """Seconds since the side's start of its earliest evaluation with validation F1 >= target."""
    times = [e["seconds"] for e in evaluations if e["val_f1"] >= target]
    return round(min(times), 1) if times else None


def side_result(evaluations: list[dict[str, Any]], test_f1: float | None, trial_epochs: float, wall: float,
                precision: str, **extra: Any) -> dict[str, Any]:
    """What both sides report, from their evaluations in time order."""
    best = max((e["val_f1"] for e in evaluations), default=None)
    return {
        "best_validation_f1": best, "test_f1": test_f1, "trial_epochs": trial_epochs,
        "wall_seconds": round(wall, 1),
        "reached_own_best_seconds": None if best is None else first_reached(evaluations, best),
        "precision": precision, **extra,
        "evaluations": [e | {"seconds": round(e["seconds"], 1)} for e in evaluations],
    }


# ---- tunefleet -----------------------------------------------------------------------------------

def run_tunefleet(args: argparse.Namespace) -> dict[str, Any]:
    """`run_sweep` on the spec; every epoch's validation F1 timed as Tune's driver receives it."""
    from ray import tune

    from tunefleet.search.sweep import run_sweep
    from tunefleet.spec import spec_from_dict
    from tunefleet.train.models import resolve_precision

    class EpochClock(tune.Callback):
        def __init__(self) -> None:
            self.started = 0.0
            self.evaluations: list[dict[str, Any]] = []

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if result.get("val_f1") is not None and not result.get("diverged"):
                self.evaluations.append({"trial": trial.trial_id, "epoch": result["epoch"], "val_f1": result["val_f1"],
                                         "seconds": time.perf_counter() - self.started,
                                         "lr": trial.config.get("train.lr"), "epochs": trial.config.get("train.epochs")})

    spec = spec_from_dict(sweep_spec(args, Path(args.data_dir).parent / "sweeps", args.seed))
    clock = EpochClock()
    clock.started = time.perf_counter()
    summary = run_sweep(spec, callbacks=[clock])
    wall = time.perf_counter() - clock.started
    best = summary["best"]
    return side_result(
        clock.evaluations, None if best is None else best["metrics"]["test"]["f1"], summary["trial_epochs"], wall,
        resolve_precision(args.precision, "cpu"),
        trials=summary["trials"], sweep_wall_seconds=summary["wall_seconds"],
        best_trial=None if best is None else {"trial_id": best["trial_id"], "config": best["config"]})


# ---- Hugging Face Trainer ------------------------------------------------------------------------

def run_trainer(args: argparse.Namespace) -> dict[str, Any]:
    """`Trainer.hyperparameter_search` with optuna, as the transformers docs write it."""
    import optuna
    import torch
    import transformers
    from transformers import DataCollatorForTokenClassification, Trainer, TrainerCallback, TrainingArguments

    from tunefleet.spec import spec_from_dict
    from tunefleet.train.launch import prepare_data
    from tunefleet.train.models import load_tokenizer, resolve_model_path

    torch.set_num_threads(args.cpus)
    transformers.logging.set_verbosity_error()  # the fresh head's "newly initialized" warning, per trial
    transformers.logging.disable_progress_bar()
    spec = spec_from_dict(sweep_spec(args, Path(args.data_dir).parent / "unused", args.seed))
    path = resolve_model_path(MODEL)

    class BestSoFar(TrainerCallback):
        """Every evaluation with its time; a copy of the weights whenever one beats the search so far."""

        def __init__(self) -> None:
            self.started, self.excluded, self.trial = 0.0, 0.0, -1
            self.evaluations: list[dict[str, Any]] = []
            self.trials: list[dict[str, Any]] = []
            self.best_state: dict[str, torch.Tensor] | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            self.trial += 1  # one train() per trial
            self.trials.append({"trial": self.trial, "learning_rate": args.learning_rate,
                                "weight_decay": args.weight_decay, "epochs": args.num_train_epochs,
                                "dropout": model.config.hidden_dropout_prob})

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, model: Any = None,
                        **kwargs: Any) -> None:
            now = time.perf_counter()
            best = max((e["val_f1"] for e in self.evaluations), default=-math.inf)
            self.evaluations.append({"trial": self.trial, "epoch": state.epoch, "val_f1": metrics["eval_f1"],
                                     "seconds": now - self.started - self.excluded})
            if metrics["eval_f1"] > best:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                self.excluded += time.perf_counter() - now  # instrumentation, not the recipe's cost

    def model_init(trial: Any) -> Any:
        # Called once with None when the Trainer is built, then once per trial (before hp_space).
        return trainer_model(path, label_names, None if trial is None else trial.suggest_float("dropout", *DROPOUT))

    def hp_space(trial: Any) -> dict[str, Any]:
        return {"learning_rate": trial.suggest_float("learning_rate", *LR, log=True),
                "weight_decay": trial.suggest_float("weight_decay", *WEIGHT_DECAY, log=True),
                "num_train_epochs": trial.suggest_categorical("num_train_epochs", list(args.epochs))}

    recorder = BestSoFar()
    with tempfile.TemporaryDirectory() as output_dir:
        recorder.started = time.perf_counter()
        prepared = prepare_data(spec)
        label_names = prepared.splits.label_names
        train, validation, test = (prepared.tokenized[name] for name in ("train", "validation", "test"))
        tokenizer = load_tokenizer(MODEL)
        arguments = TrainingArguments(output_dir=output_dir, per_device_train_batch_size=BATCH_SIZE,
                                      eval_strategy="epoch", save_strategy="no", report_to="none", use_cpu=True,
                                      disable_tqdm=True, bf16=args.trainer_bf16)
        collator = DataCollatorForTokenClassification(tokenizer)
        trainer = Trainer(model_init=model_init, args=arguments, train_dataset=rows(train), eval_dataset=rows(validation),
                          data_collator=collator, compute_metrics=entity_f1(validation, label_names), callbacks=[recorder])
        steps_per_epoch = math.ceil(len(train) / BATCH_SIZE)
        if args.trainer_recipe == "docs":
            sampler, pruner = optuna.samplers.TPESampler(seed=args.seed), optuna.pruners.SuccessiveHalvingPruner()
        else:  # tunefleet's start-up trials (searchers.optuna_tpe) and ASHA's rungs, in optimizer steps
            startup = min(10, max(3, args.trials // 4))
            sampler = optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=startup)
            pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=steps_per_epoch, reduction_factor=2)
        best_run = trainer.hyperparameter_search(
            hp_space=hp_space, compute_objective=lambda metrics: metrics["eval_f1"], n_trials=args.trials,
            direction="maximize", backend="optuna", sampler=sampler, pruner=pruner)
        test_f1 = None
        if recorder.best_state is not None:
            model = model_init(None)
            model.load_state_dict(recorder.best_state)
            scorer = Trainer(model=model, args=arguments, eval_dataset=rows(test), data_collator=collator,
                             compute_metrics=entity_f1(test, label_names))
            test_f1 = scorer.evaluate(metric_key_prefix="test")["test_f1"]
        wall = time.perf_counter() - recorder.started - recorder.excluded
    # A trial's last evaluation is its last epoch: the pruner stops trials only right after one.
    epochs = {}
    for e in recorder.evaluations:
        epochs[e["trial"]] = max(epochs.get(e["trial"], 0.0), e["epoch"])
    return side_result(
        recorder.evaluations, test_f1, round(sum(epochs.values()), 2), wall, "bf16" if args.trainer_bf16 else "fp32",
        trials={"total": len(recorder.trials),
                "pruned": sum(epochs.get(t["trial"], 0.0) < t["epochs"] for t in recorder.trials)},
        excluded_seconds=round(recorder.excluded, 2), steps_per_epoch=steps_per_epoch,
        best_run={"run_id": best_run.run_id, "objective": best_run.objective,
                  "hyperparameters": best_run.hyperparameters},
        trial_hyperparameters=recorder.trials)


def trainer_model(path: str, label_names: list[str], dropout: float | None) -> Any:
    """The Trainer side's model: MiniLM with a fresh token-classification head, and `dropout` (None:
    the config's own) on every dropout field MiniLM's config has, as tunefleet's `build_model` sets it."""
    from transformers import AutoModelForTokenClassification

    fields = {} if dropout is None else dict.fromkeys(
        ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"), dropout)
    return AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
        label2id={label: i for i, label in enumerate(label_names)}, **fields)


def entity_f1(split: Any, label_names: list[str]) -> Any:
    """The Trainer's `compute_metrics` for `split`: entity F1, precision and recall by tunefleet's
    token-classification task, the code that scores tunefleet's side."""
    from tunefleet.tasks import get_task

    task = get_task(TASK)

    def compute_metrics(prediction: Any) -> dict[str, float]:
        # Trainer pads logits and labels across batches with -100; predictions() keeps labelled places.
        predicted = task.predictions(prediction.predictions, prediction.label_ids)
        scores = task.score(predicted, split, list(range(len(split))), label_names)
        return {k: scores[k] for k in ("f1", "precision", "recall")}
    return compute_metrics


def rows(split: Any) -> list[dict[str, list[int]]]:
    """A tokenized split as the Trainer's dataset: one row of ids and aligned labels per sentence."""
    return [{"input_ids": split.ids[a:b].tolist(), "labels": split.labels[a:b].tolist()}
            for a, b in zip(split.offsets[:-1], split.offsets[1:])]


# ---- the report ----------------------------------------------------------------------------------

def cpu_info() -> dict[str, Any]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": None, "avx512_bf16": None, "amx_bf16": None}
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return {"model": model, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "logical_cpus": os.cpu_count()}


def print_table(sides: dict[str, dict[str, Any]]) -> None:
    lines = [("best validation F1", "best_validation_f1"), ("its test F1", "test_f1"),
             ("trial-epochs", "trial_epochs"), ("wall seconds", "wall_seconds"),
             ("reached own best (s)", "reached_own_best_seconds"),
             ("reached other's best (s)", "reached_other_best_seconds"), ("precision", "precision")]
    print(f"{'':26}" + "".join(f"{side:>14}" for side in sides))
    for label, key in lines:
        cells = [result.get(key) for result in sides.values()]
        print(f"{label:26}" + "".join(f"{c:>14.4f}" if isinstance(c, float) and key.endswith("f1") else f"{str(c):>14}"
                                      for c in cells))
    for side, result in sides.items():
        if "error" in result:
            print(f"{side}: {result['error']}")

if __name__ == "__main__":
    main()
