"""One fine-tuning run on Ray Train, from a validated spec to test metrics.

The driver reads and tokenizes the data once, puts the arrays in Ray's object store (every worker,
and every trial of a sweep, reads them from there without copying or re-tokenizing), fits a
`TorchTrainer` over `train_loop_per_worker` and finally scores the best checkpoint on the test split.
Checking that the cluster can host the run is `tunefleet.cluster`'s job, done before this is called.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..cluster import storage_uri
from ..data import DataSplits, load_data
from ..spec import Spec
from ..tasks import TokenizedSplit, get_task
from .checkpoint import load_for_inference, read_meta
from .loop import TrainingOutOfMemory, evaluate_examples, train_loop_per_worker
from .models import load_tokenizer, resolve_precision
from .peft import check_lora
from .tokenized import tokenize_splits


@dataclass(frozen=True)
class PreparedData:
    splits: DataSplits
    tokenized: dict[str, TokenizedSplit]
    from_cache: bool

    def arrays(self) -> dict[str, dict[str, Any]]:
        return {name: split.to_arrays() for name, split in self.tokenized.items()}


def prepare_data(spec: Spec) -> PreparedData:
    """Read, validate and tokenize the spec's data (tokenization cached on disk), once the model is
    known to be usable: its tokenizer loads and `train.peft`'s target layers exist in it.

    Raises:
        DataError, ModelError, SpecError: bad input, before any Ray work.
    """
    splits = load_data(spec.data, spec.task)
    tokenizer = load_tokenizer(spec.model.name_or_path)
    check_lora(spec)
    tokenized, from_cache = tokenize_splits(splits, tokenizer, spec.model.max_length)
    return PreparedData(splits, tokenized, from_cache)


def build_trainer(spec: Spec, data: Any, label_names: list[str], run_name: str,
                  callbacks: list[Any] | None = None, tracking: dict[str, Any] | None = None) -> Any:
    """A TorchTrainer for one run of the loop (not yet fitted); `tracking` (`{"tracking_uri",
    "run_id"}` or None) is the MLflow run its rank 0 logs metrics into."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    res = spec.resources
    use_gpu = res.gpus_per_worker > 0
    resources = {"CPU": res.cpus_per_worker} | ({"GPU": res.gpus_per_worker} if use_gpu else {})
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec.to_dict(), "data": data, "label_names": label_names, "tracking": tracking},
        scaling_config=ScalingConfig(num_workers=res.workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_uri(spec),
            failure_config=FailureConfig(max_failures=res.max_failures),
            # The loop publishes a checkpoint only when the metric improves, so the latest is the best.
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=callbacks or [],
        ),
    )


def score_checkpoint(folder: str, split: TokenizedSplit, batch_size: int = 64) -> dict[str, Any]:
    """Task metrics of a checkpoint on a tokenized split, in this process."""
    return score_checkpoint_examples(folder, split, batch_size)[0]


def score_checkpoint_examples(folder: str, split: TokenizedSplit, batch_size: int = 64) -> tuple[dict[str, Any], list[Any]]:
    """Task metrics of a checkpoint on a tokenized split and its prediction for every example, in
    split order, in this process."""
    import torch

    model, tokenizer, meta = load_for_inference(folder)
    task = get_task(meta["task"])
    device = torch.device("cpu")
    # Scored at the precision it was trained in (its spec's `train.precision`), not this CPU's default.
    precision = resolve_precision(meta.get("spec", {}).get("train", {}).get("precision", "auto"), "cpu")
    return evaluate_examples(model, split, task, meta["label_names"], batch_size, device, precision,
                             tokenizer.pad_token_id)


def fit_and_score(spec: Spec, prepared: PreparedData, run_name: str, tracking: dict[str, Any] | None) -> dict[str, Any]:
    import ray

    data_ref = ray.put(prepared.arrays())
    started = time.perf_counter()
    result = build_trainer(spec, data_ref, prepared.splits.label_names, run_name, tracking=tracking).fit()
    train_seconds = time.perf_counter() - started
    summary = result.return_value or {}
    if summary.get("out_of_memory"):
        raise TrainingOutOfMemory(f"{spec.name}: {summary['diverged']}")
    if summary.get("diverged"):
        raise TrainingDiverged(f"{spec.name}: training diverged: {summary['diverged']}")
    if result.checkpoint is None:
        raise RuntimeError(f"{spec.name}: the run published no checkpoint; see the worker logs above")
    with result.checkpoint.as_directory() as folder:
        test = score_checkpoint(folder, prepared.tokenized["test"], spec.train.batch_size * 2)
        validation = read_meta(folder)["validation"]
    history = summary.get("history", [])
    rates = [h["tokens_per_second"] for h in history if h.get("tokens_per_second")]
    return {
        "task": spec.task,
        "model": spec.model.name_or_path,
        "metrics": {"validation": validation, "test": test},
        "checkpoint": result.checkpoint.path,
        "epochs_run": max((h["epoch"] for h in history), default=0),
        "train_seconds": round(train_seconds, 2),
        "parameters": summary.get("parameters"),
        "train_tokens_per_second": round(sum(rates) / len(rates), 1) if rates else None,
    }


class TrainingDiverged(RuntimeError):
    pass
