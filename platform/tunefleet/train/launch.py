"""One fine-tuning run on Ray, from a validated spec to test metrics.

The driver reads and tokenizes the data once and puts the arrays in Ray's object store (every worker,
and every trial of a sweep, reads them from there without copying or re-tokenizing). Then:

- one worker (`search.trial_runner` auto or in_trial, storage a folder): the loop runs in one Ray
  task with a `LocalSession` that keeps the best checkpoint in `<storage>/<run>/checkpoint`. Ray
  retries the task up to `resources.max_failures` times when its process dies or raises, and each
  retry resumes from that checkpoint. No Train controller or worker group is started: about 25 s
  less per run on 2 cores (benchmarks/RESULTS.md), and the test split is scored in the same process.
- several workers (or `ray_train`, or storage a URI such as s3://): a `TorchTrainer` over
  `train_loop_per_worker`, with Ray Train's checkpoints and restarts; the driver scores the best
  checkpoint on the test split.

Checking that the cluster can host the run is `tunefleet.cluster`'s job, done before this is called.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..cluster import storage_uri
from ..data import DataSplits, load_data
from ..spec import Spec, spec_from_dict
from ..tasks import TokenizedSplit, get_task
from .checkpoint import META_FILE, load_for_inference, read_meta
from .loop import TrainingOutOfMemory, evaluate_examples, fetch_splits, run_loop, train_loop_per_worker
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


def trains_without_ray_train(spec: Spec) -> bool:
    """`search.trial_runner`: whether one run (a sweep's trial, or `tunefleet train`'s run) trains its
    one worker in a process of its own rather than as a Ray Train run."""
    runner = spec.search.trial_runner
    return runner == "in_trial" or (runner == "auto" and spec.resources.workers == 1)


def trains_in_task(spec: Spec) -> bool:
    """Whether `tunefleet train` runs this spec in one Ray task rather than on Ray Train (module
    docstring): one worker, and checkpoints in a folder (not a URI, which Ray Train uploads to)."""
    return trains_without_ray_train(spec) and "://" not in storage_uri(spec)


def fit_and_score(spec: Spec, prepared: PreparedData, run_name: str, tracking: dict[str, Any] | None) -> dict[str, Any]:
    """Train the spec's point (in a Ray task or on Ray Train, see the module docstring) and score its
    best checkpoint on the test split.

    Raises:
        TrainingDiverged, TrainingOutOfMemory: the loop's own verdicts, never retried.
        TrainingFailed: the run's process failed more than `resources.max_failures` times.
    """
    import ray

    data_ref = ray.put(prepared.arrays())
    started = time.perf_counter()
    if trains_in_task(spec):
        summary = fit_in_task(spec, data_ref, prepared.splits.label_names, run_name, tracking)
    else:
        summary = _fit_on_ray_train(spec, data_ref, prepared, run_name, tracking)
    train_seconds = time.perf_counter() - started
    history = summary.get("history", [])
    rates = [h["tokens_per_second"] for h in history if h.get("tokens_per_second")]
    return {
        "task": spec.task,
        "model": spec.model.name_or_path,
        "metrics": {"validation": summary["validation"], "test": summary["test"]},
        "checkpoint": summary["checkpoint"],
        "epochs_run": max((h["epoch"] for h in history), default=0),
        "train_seconds": round(train_seconds, 2),
        "parameters": summary.get("parameters"),
        "train_tokens_per_second": round(sum(rates) / len(rates), 1) if rates else None,
    }


def _check_outcome(spec: Spec, summary: dict[str, Any], checkpoint: Any) -> None:
    """Raise what the loop's summary and the run's best checkpoint (None: none published) say went wrong."""
    if summary.get("out_of_memory"):
        raise TrainingOutOfMemory(f"{spec.name}: {summary['diverged']}")
    if summary.get("diverged"):
        raise TrainingDiverged(f"{spec.name}: training diverged: {summary['diverged']}")
    if checkpoint is None:
        raise RuntimeError(f"{spec.name}: the run published no checkpoint; see the worker logs above")


def _fit_on_ray_train(spec: Spec, data_ref: Any, prepared: PreparedData, run_name: str,
                      tracking: dict[str, Any] | None) -> dict[str, Any]:
    result = build_trainer(spec, data_ref, prepared.splits.label_names, run_name, tracking=tracking).fit()
    summary = result.return_value or {}
    _check_outcome(spec, summary, result.checkpoint)
    with result.checkpoint.as_directory() as folder:
        test = score_checkpoint(folder, prepared.tokenized["test"], spec.train.batch_size * 2)
        validation = read_meta(folder)["validation"]
    return summary | {"checkpoint": result.checkpoint.path, "validation": validation, "test": test}


def fit_in_task(spec: Spec, data_ref: Any, label_names: list[str], run_name: str,
                tracking: dict[str, Any] | None, loop: Callable[..., dict[str, Any]] = run_loop) -> dict[str, Any]:
    """Train one worker in one Ray task (module docstring) and score its best checkpoint there.

    Args:
        data_ref: the object ref of `PreparedData.arrays()` (the test split included).
        run_name: the run's folder under the storage path; it must not hold a checkpoint yet.
        loop: `run_loop`, or a test's instrumented wrapper of it (called as `loop(config, session)`).

    Returns:
        The loop's summary (its `history`) with `checkpoint` (the folder), `validation` and `test`.
    """
    import ray
    from ray.exceptions import RayError, RayTaskError

    run_dir = Path(storage_uri(spec)) / run_name
    if (run_dir / "checkpoint").exists():
        raise FileExistsError(f"{run_dir}: a run of this name already has a checkpoint; "
                              "give the run another name or move that folder away")
    res = spec.resources
    task = ray.remote(_train_in_task).options(
        num_cpus=res.cpus_per_worker, num_gpus=res.gpus_per_worker, name=f"tunefleet-train:{run_name}",
        # Ray runs the task again when its process dies (a lost node, the OOM killer) or it raises,
        # as Ray Train's FailureConfig would restart its worker group; the retry resumes from the
        # checkpoint the last attempt published.
        max_retries=res.max_failures, retry_exceptions=True)
    config = {"spec": spec.to_dict(), "data": data_ref, "label_names": label_names, "tracking": tracking}
    ref = task.remote(config, str(run_dir), loop)
    try:
        summary = ray.get(ref)
    except KeyboardInterrupt:
        ray.cancel(ref, force=True)  # on a remote cluster the task would otherwise train on
        raise
    except RayTaskError:
        raise  # the loop itself raised on every attempt: that error (an instance of its own class too)
    except RayError as exc:  # the process died on every attempt
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise TrainingFailed(
            f"{spec.name}: the training process failed {res.max_failures + 1} time(s) "
            f"(resources.max_failures: {res.max_failures}): {first}. The best checkpoint so far, if any, "
            f"is in {run_dir / 'checkpoint'}; the Ray session logs (/tmp/ray/session_latest/logs) say why "
            "the process ended.") from None
    _check_outcome(spec, summary, summary.get("checkpoint"))
    return summary


def _train_in_task(config: dict[str, Any], run_dir: str, loop: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The Ray task of `fit_in_task`: resume from the run's checkpoint if an earlier attempt left one,
    train, and score the best checkpoint on the test split while the model code is loaded."""
    import ray
    import torch

    from .session import LocalSession

    folder = Path(run_dir)
    previous = folder / "checkpoint"
    resume = previous if (previous / META_FILE).is_file() else None
    if resume is not None:
        print(f"[{folder.name}] resuming from {resume} (epoch {read_meta(resume).get('epoch')})", flush=True)
    # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU(s): the first visible one is its own.
    device = "cuda:0" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    session = LocalSession(folder, resume_from=resume, device=device, rank=0, world=1)
    summary = loop(config, session)
    if summary.get("diverged") or session.checkpoint is None:
        return summary
    spec = spec_from_dict(config["spec"])
    test = score_checkpoint(str(session.checkpoint), fetch_splits(config["data"])["test"], spec.train.batch_size * 2)
    return summary | {"checkpoint": str(session.checkpoint), "validation": read_meta(session.checkpoint)["validation"],
                      "test": test}


class TrainingDiverged(RuntimeError):
    pass


class TrainingFailed(RuntimeError):
    """The run's process failed on every attempt `resources.max_failures` allowed."""
