"""The fine-tuning loop that every Ray Train worker runs.

`train_loop_per_worker(config)` reads top to bottom: set up (data, tokenizer, model, optimizer,
schedule), maybe resume, then loop epochs of training with evaluation, early stopping, checkpointing
and reporting. Ray Train starts one copy per worker and wraps the model in DistributedDataParallel;
workers train on disjoint shards and evaluate on disjoint shards whose predictions are gathered, so
every worker computes the same metric and takes the same early-stopping decision.

`config` holds the validated spec as a dict, the tokenized data (a Ray object ref, shared by every
worker and every trial) and the label names. Every rank returns a summary (every reported evaluation,
the divergence reason if the loss blew up, and a fingerprint of what the rank trained on and ended
with); Ray Train hands back rank 0's as `Result.return_value`.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .batching import collate, eval_batches, train_batches
from .checkpoint import load_training_state, save_checkpoint
from .runlog import RunLogger
from .models import build_model, load_tokenizer, quiet_transformers, resolve_precision
from ..spec import Spec, spec_from_dict
from ..tasks import Task, TokenizedSplit, get_task


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    import ray.train
    import ray.train.torch
    from transformers import get_linear_schedule_with_warmup

    # ---- setup ------------------------------------------------------------------------------------
    quiet_transformers()
    spec = spec_from_dict(config["spec"])
    cfg = spec.train
    label_names: list[str] = config["label_names"]
    data = _fetch(config["data"])
    train_split, val_split = data["train"], data["validation"]
    task = get_task(spec.task)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    node_id = ray.get_runtime_context().get_node_id()
    # Ray gives each worker `cpus_per_worker` CPUs; more torch threads than that only fight each other.
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))
    device = ray.train.torch.get_device()
    precision = resolve_precision(cfg.precision, str(device))
    torch.manual_seed(cfg.seed)

    tokenizer = load_tokenizer(spec.model.name_or_path)
    checkpoint = ray.train.get_checkpoint()
    with (checkpoint.as_directory() if checkpoint else nullcontext()) as resume_dir:
        # Resuming (a restarted worker, or a retried trial) continues from the last published
        # checkpoint: its weights, optimizer moments, schedule position and RNG state.
        model = build_model(task.model_class_name, resume_dir or spec.model.name_or_path, label_names,
                            None if resume_dir else cfg.dropout)
        state = load_training_state(resume_dir) if resume_dir else None
    model = ray.train.torch.prepare_model(model)
    # fused: one kernel over all parameters instead of a loop of per-tensor ops; on CPU the default
    # AdamW step costs more than a short batch's forward and backward (benchmarks/throughput.py).
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, fused=True)
    batches_per_epoch = len(train_batches(train_split, cfg.batch_size, cfg.seed, 0, rank, world, cfg.group_by_length))
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / cfg.grad_accum_steps))
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)

    tracker = _Progress(spec)
    # Rank 0 alone logs to MLflow, into the run the driver created (None: untracked).
    run_log = RunLogger.from_config(config.get("tracking")) if rank == 0 else None
    start_epoch = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        tracker.restore(state["progress"])
        start_epoch = int(state["next_epoch"])

    def evaluate_and_report(epoch_done: float, train_loss: float, tokens_per_second: float) -> bool:
        """Score the validation split, publish a checkpoint if it improved, report; True = stop."""
        scores = evaluate(model, val_split, task, label_names, cfg.batch_size, device, precision,
                          tokenizer.pad_token_id, rank, world)
        improved = tracker.update(scores[cfg.metric])
        metrics = {
            "epoch": epoch_done, "step": tracker.step, "train_loss": train_loss,
            "lr": scheduler.get_last_lr()[0], "tokens_per_second": tokens_per_second,
            **{f"val_{k}": v for k, v in scores.items() if k != "report"},
            f"best_val_{cfg.metric}": tracker.best, "diverged": 0,
            # Lets the sweep tell a trial that early stopping ended from one the scheduler stopped.
            "planned_epochs": cfg.epochs, "early_stopped": int(tracker.should_stop()), "workers": world,
            # Where the run is: on a multi-node cluster, shows a retried trial moving to another node.
            "node_id": node_id,
        }
        tracker.log(metrics, rank)
        if run_log is not None:
            run_log.log_metrics(metrics, step=tracker.step)
        if improved and rank == 0:
            # Only the best checkpoint is kept (RunConfig keeps one): publish only on improvement.
            with tempfile.TemporaryDirectory() as tmp:
                meta = _checkpoint_meta(spec, task, label_names, metrics, scores)
                folder = save_checkpoint(Path(tmp) / "model", _unwrap(model), tokenizer, meta, {
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    # A mid-epoch checkpoint resumes at the start of that epoch.
                    "torch_rng": torch.get_rng_state(), "next_epoch": math.floor(epoch_done),
                    "progress": tracker.state(),
                })
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))
        else:
            ray.train.report(metrics)
        return tracker.should_stop()

    # ---- train ------------------------------------------------------------------------------------
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    seen = _Seen()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        batches = train_batches(train_split, cfg.batch_size, cfg.seed, epoch, rank, world, cfg.group_by_length)
        loss_sum, loss_count, tokens, started = 0.0, 0, 0, time.perf_counter()
        stop = False
        for i, indices in enumerate(batches):
            seen.add(indices)
            batch = {k: v.to(device) for k, v in collate(train_split, indices, tokenizer.pad_token_id,
                                                          spec.task == "token-classification").items()}
            last_of_step = (i + 1) % cfg.grad_accum_steps == 0 or i + 1 == len(batches)
            # DDP all-reduces gradients on every backward; while accumulating, skip that sync.
            sync = nullcontext() if last_of_step or world == 1 else model.no_sync()
            with sync:
                with autocast:
                    loss = model(**batch).loss
                (loss / cfg.grad_accum_steps).backward()
            loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
            tokens += int(batch["attention_mask"].sum())
            if not last_of_step:
                continue
            # The gradient norm is computed after DDP's all-reduce, so a NaN/inf on any worker shows
            # up on all of them and every worker stops at the same step.
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or float("inf"))
            if cfg.fail_on_nonfinite_loss and not torch.isfinite(grad_norm):
                if run_log is not None:
                    run_log.close()
                return _report_divergence(spec, tracker, epoch, loss.item())
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            tracker.step += 1
            if cfg.eval_every_steps and tracker.step % cfg.eval_every_steps == 0 and i + 1 < len(batches):
                rate = tokens * world / (time.perf_counter() - started)
                stop = evaluate_and_report(epoch + (i + 1) / len(batches), loss_sum / loss_count, rate)
                model.train()
                if stop:
                    break
        if stop:
            break
        rate = tokens * world / (time.perf_counter() - started)
        if evaluate_and_report(float(epoch + 1), loss_sum / max(1, loss_count), rate):
            break
    if run_log is not None:
        run_log.close()
    return {"history": tracker.history, "diverged": None, **seen.summary(model, rank)}


@torch.no_grad()
def evaluate(model: Any, split: TokenizedSplit, task: Task, label_names: list[str], batch_size: int,
             device: Any, precision: str, pad_id: int, rank: int = 0, world: int = 1) -> dict[str, Any]:
    """Loss and task metrics over a whole split. With several workers each scores its shard and the
    predictions are gathered, so every worker returns the same numbers."""
    model.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    token_labels = task.name == "token-classification"
    indices, predicted, loss_sum = [], [], 0.0
    for batch_indices in eval_batches(split, batch_size * 2, rank, world):
        batch = {k: v.to(device) for k, v in collate(split, batch_indices, pad_id, token_labels).items()}
        with autocast:
            out = model(**batch)
        loss_sum += out.loss.item() * len(batch_indices)
        predicted += task.predictions(out.logits.float().cpu().numpy(), batch["labels"].cpu().numpy())
        indices += batch_indices.tolist()
    if world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, (indices, predicted, loss_sum))
        indices = [i for part in gathered for i in part[0]]
        predicted = [p for part in gathered for p in part[1]]
        loss_sum = sum(part[2] for part in gathered)
    scores = task.score(predicted, split, indices, label_names)
    scores["loss"] = loss_sum / max(1, len(split))
    return scores


class _Progress:
    """Early-stopping bookkeeping and the per-evaluation log line."""

    def __init__(self, spec: Spec):
        self.metric = spec.train.metric
        self.maximize = spec.metric_mode() == "max"
        self.patience = spec.train.early_stopping_patience
        self.best = -math.inf if self.maximize else math.inf
        self.bad_evals = 0
        self.step = 0
        self.name = spec.name
        self.history: list[dict[str, Any]] = []

    def update(self, value: float) -> bool:
        improved = value > self.best if self.maximize else value < self.best
        if improved:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        return improved

    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "bad_evals": self.bad_evals, "step": self.step, "history": self.history}

    def restore(self, state: dict[str, Any]) -> None:
        self.best, self.bad_evals, self.step = state["best"], state["bad_evals"], state["step"]
        self.history = list(state["history"])

    def log(self, metrics: dict[str, Any], rank: int) -> None:
        self.history.append(metrics)
        if rank == 0:
            print(f"[{self.name}] epoch {metrics['epoch']:.2f} step {self.step}: train_loss "
                  f"{metrics['train_loss']:.4f} val_{self.metric} {metrics[f'val_{self.metric}']:.4f} "
                  f"(best {self.best:.4f}) {metrics['tokens_per_second']:.0f} tok/s", flush=True)


class _Seen:
    """What one worker trained on and ended with, so that data parallelism can be checked from
    outside: every rank must end with identical weights and must have trained on its own shard.

    `seen_sha256` hashes the training example indices in the order this worker processed them (this
    attempt only: a resumed worker starts counting at its resume epoch), `weights_sha256` the final
    state_dict.
    """

    def __init__(self) -> None:
        self.count, self.digest = 0, hashlib.sha256()

    def add(self, indices: np.ndarray) -> None:
        self.count += len(indices)
        self.digest.update(np.asarray(indices, dtype=np.int64).tobytes())

    def summary(self, model: Any, rank: int) -> dict[str, Any]:
        weights = hashlib.sha256()
        for name, tensor in _unwrap(model).state_dict().items():
            weights.update(name.encode())
            weights.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return {"rank": rank, "examples_seen": self.count, "seen_sha256": self.digest.hexdigest(),
                "weights_sha256": weights.hexdigest()}


def _report_divergence(spec: Spec, tracker: _Progress, epoch: int, loss: float) -> dict[str, Any]:
    """End the run as diverged. The caller turns this into a failed trial with the reason; raising
    here instead would make Ray Train retry a run that would only diverge again."""
    import ray.train

    worst = -math.inf if tracker.maximize else math.inf
    reason = f"non-finite loss/gradient ({loss}) at epoch {epoch + 1}, step {tracker.step + 1}"
    print(f"[{spec.name}] diverged: {reason}", flush=True)
    # The metric keys stay present (schedulers insist on them), at the worst possible value.
    ray.train.report({"epoch": float(epoch + 1), "step": tracker.step, f"val_{spec.train.metric}": worst,
                      f"best_val_{spec.train.metric}": tracker.best, "diverged": 1, "diverged_reason": reason})
    return {"history": tracker.history, "diverged": reason}


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    # Decay shrinks weights towards zero; for biases and LayerNorm gains that only hurts (BERT recipe).
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _checkpoint_meta(spec: Spec, task: Task, label_names: list[str], metrics: dict[str, Any],
                     scores: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": spec.task, "model_class": task.model_class_name, "label_names": label_names,
        "base_model": spec.model.name_or_path, "max_length": spec.model.max_length,
        "metric": spec.train.metric, "epoch": metrics["epoch"], "validation": scores,
        "spec": spec.to_dict(),
    }


def _unwrap(model: Any) -> Any:
    return model.module if hasattr(model, "module") else model


def _fetch(data: Any) -> dict[str, TokenizedSplit]:
    """The tokenized splits, from a Ray object ref (the normal case) or given inline."""
    import ray

    if isinstance(data, ray.ObjectRef):
        data = ray.get(data)
    return {name: TokenizedSplit.from_arrays(arrays) for name, arrays in data.items()}
