"""One fixed configuration trained by tunefleet's loop and by the HF `Trainer`, over several seeds.

    .venv/bin/python benchmarks/config_quality.py --side tunefleet|trainer [--seeds 0 1 2 --lr 1e-4
        --weight-decay 0.01 --dropout 0.1 --epochs 3 --precision fp32 --set train.pack_sequences=false
        --out FILE]

`sweep_vs_trainer.py` compares two searches, whose bests differ mostly by which points each search
happened to draw. This asks the question under them: given the same hyperparameters, does
tunefleet's loop train as good a model as the Trainer does? Any systematic gap would show in every
sweep, however the points were drawn.

The work is `sweep_vs_trainer.py`'s (the first 2,000 CoNLL-2003 training, 1,000 validation and 1,000
test sentences, bundled MiniLM, max_length 128, batch 16, the same tokens and labels, the same
entity-F1 code) with one configuration instead of a search:
- tunefleet: `train_local` (the loop without Ray, as a one-worker trial runs it) with `train.seed` =
  the seed, tunefleet's defaults otherwise (random batches packed into shared rows, since session 23;
  length-grouped padded ones before, `--set train.pack_sequences=false`; warmup 10% of the steps, fused
  AdamW, dropout masks from 16-bit numbers on a CPU); `--set` changes any `train.` field, to find
  which of those a gap comes from;
- trainer: `Trainer.train()` with `TrainingArguments(seed=the seed, learning_rate, weight_decay,
  num_train_epochs, eval_strategy="epoch")`, the model built with the dropout on every dropout field
  (as `sweep_vs_trainer.py`'s `model_init`), the Trainer's defaults otherwise (fp32, random batches,
  no warmup, linear decay).

Both score the best epoch's model on test (tunefleet keeps that checkpoint; on the Trainer side a
callback copies the weights of the best evaluation so far). Reported per seed: each epoch's
validation F1, the best, its test F1, training seconds; then the mean and sample sd over the seeds.
The F1 figures do not depend on the machine's load (seeded, fixed thread count), so sides may run at
the same time; the seconds do.

Smoke test (figures mean nothing): --train 64 --validation 32 --test 32 --epochs 1 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep_vs_trainer as work  # noqa: E402 - the same data, tokens and scoring as the sweep comparison
from machine import machine  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=work.SIDES, required=True)
    parser.add_argument("--train", type=int, default=2000, help="first N training sentences")
    parser.add_argument("--validation", type=int, default=1000, help="first N validation sentences")
    parser.add_argument("--test", type=int, default=1000, help="first N test sentences")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, default=1.0e-4)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2, help="torch threads")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="fp32",
                        help="tunefleet's train.precision (the Trainer trains in fp32, its default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="train.FIELD=VALUE",
                        help="another tunefleet train setting, YAML value (tunefleet side only)")
    parser.add_argument("--out", metavar="FILE", help="write the JSON line here too")
    args = parser.parse_args(argv)
    # sweep_vs_trainer's spec reads these; one configuration is a one-point space.
    args.trials, args.start_up_design = 1, "latin_hypercube"
    return args


def spec_dict(args: argparse.Namespace, storage: Path, seed: int) -> dict[str, Any]:
    """sweep_vs_trainer's spec with the configuration fixed and the search left out."""
    import yaml

    spec = work.sweep_spec(argparse.Namespace(**{**vars(args), "epochs": [args.epochs]}), storage, seed)
    del spec["search"]
    spec["train"] |= {"lr": args.lr, "weight_decay": args.weight_decay, "dropout": args.dropout,
                      "epochs": args.epochs, "seed": seed}
    for override in args.overrides:
        key, _, value = override.partition("=")
        section, _, field = key.partition(".")
        if section != "train" or not field:
            sys.exit(f"--set {override}: only train.FIELD=VALUE is taken here")
        spec["train"][field] = yaml.safe_load(value)
    return spec


def run_tunefleet(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    import torch

    from tunefleet.spec import spec_from_dict
    from tunefleet.train.launch import prepare_data
    from tunefleet.train.local import train_local
    from tunefleet.train.models import resolve_precision

    torch.set_num_threads(args.cpus)
    # The data section is the same for every seed (only `train` changes): read and tokenize it once.
    prepared = prepare_data(spec_from_dict(spec_dict(args, folder / "runs", args.seeds[0])))
    runs = []
    for seed in args.seeds:
        spec = spec_from_dict(spec_dict(args, folder / "runs", seed))
        summary = train_local(spec, folder / f"seed-{seed}", prepared=prepared)
        runs.append({"seed": seed, "val_f1": [h["val_f1"] for h in summary["history"]],
                     "test_f1": summary["metrics"]["test"]["f1"], "train_seconds": summary["train_seconds"],
                     "precision": resolve_precision(args.precision, "cpu")})
        print(json.dumps(runs[-1]), flush=True)
    return runs


def run_trainer(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    import torch
    import transformers
    from transformers import DataCollatorForTokenClassification, Trainer, TrainerCallback, TrainingArguments

    from tunefleet.spec import spec_from_dict
    from tunefleet.train.launch import prepare_data
    from tunefleet.train.models import load_tokenizer, resolve_model_path

    torch.set_num_threads(args.cpus)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    prepared = prepare_data(spec_from_dict(spec_dict(args, folder / "unused", 0)))
    label_names = prepared.splits.label_names
    train, validation, test = (prepared.tokenized[name] for name in ("train", "validation", "test"))
    collator = DataCollatorForTokenClassification(load_tokenizer(work.MODEL))
    path = resolve_model_path(work.MODEL)

    def model_init() -> Any:
        return work.trainer_model(path, label_names, args.dropout)

    class KeepBest(TrainerCallback):
        def __init__(self) -> None:
            self.val_f1: list[float] = []
            self.best_state: dict[str, torch.Tensor] | None = None

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, model: Any = None,
                        **kwargs: Any) -> None:
            if metrics["eval_f1"] > max(self.val_f1, default=-math.inf):
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.val_f1.append(metrics["eval_f1"])

    runs = []
    for seed in args.seeds:
        keep = KeepBest()
        arguments = TrainingArguments(
            output_dir=str(folder / f"seed-{seed}"), per_device_train_batch_size=work.BATCH_SIZE, seed=seed,
            learning_rate=args.lr, weight_decay=args.weight_decay, num_train_epochs=args.epochs,
            eval_strategy="epoch", save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True)
        # model_init, not a model: the Trainer seeds before it builds the model, so the fresh head
        # depends on the seed as tunefleet's does.
        trainer = Trainer(model_init=model_init, args=arguments, train_dataset=work.rows(train),
                          eval_dataset=work.rows(validation), data_collator=collator,
                          compute_metrics=work.entity_f1(validation, label_names), callbacks=[keep])
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        model = model_init()
        model.load_state_dict(keep.best_state)
        scorer = Trainer(model=model, args=arguments, eval_dataset=work.rows(test), data_collator=collator,
                         compute_metrics=work.entity_f1(test, label_names))
        runs.append({"seed": seed, "val_f1": keep.val_f1,
                     "test_f1": scorer.evaluate(metric_key_prefix="test")["test_f1"],
                     "train_seconds": round(seconds, 2), "precision": "fp32"})
        print(json.dumps(runs[-1]), flush=True)
    return runs


def spread(values: list[float]) -> dict[str, float | None]:
    return {"mean": round(statistics.fmean(values), 4),
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not work.CONLL.exists():
        sys.exit(f"{work.CONLL} not found: ../shared/data must lie beside the project")
    with tempfile.TemporaryDirectory(prefix="config-quality-") as folder:
        files = work.write_first_sentences(args, Path(folder) / "data")
        args.data_dir = str(Path(files["train"]).parent)
        run = run_tunefleet if args.side == "tunefleet" else run_trainer
        runs = run(args, Path(folder))
    report = {
        "benchmark": "config_quality", "side": args.side, "machine": machine(),
        "config": {"lr": args.lr, "weight_decay": args.weight_decay, "dropout": args.dropout, "epochs": args.epochs,
                   "batch_size": work.BATCH_SIZE, "train": args.train, "validation": args.validation,
                   "test": args.test, "overrides": args.overrides},
        "runs": runs,
        "best_val_f1": spread([max(r["val_f1"]) for r in runs]),
        "last_val_f1": spread([r["val_f1"][-1] for r in runs]),
        "test_f1": spread([r["test_f1"] for r in runs]),
    }
    print(f"{args.side}: best validation F1 {report['best_val_f1']}, test F1 {report['test_f1']}")
    line = json.dumps(report)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
