"""The fine-tuning loop that every worker runs, under Ray Train, in a Ray Tune trial, or without Ray.

`run_loop(config, session)` reads top to bottom: set up (data, tokenizer, model, optimizer,
schedule), maybe resume, then loop epochs of training with evaluation, early stopping, checkpointing
and reporting. Where it runs is the `session`'s business (`train.session`): under Ray Train
(`train_loop_per_worker`, what `TorchTrainer` starts on every worker) the session is Ray's context,
checkpoints and reports; in a sweep's one-worker trial (`search.sweep.run_trial`) it is Tune's
checkpoints and `ray.tune.report`; without Ray (`train.local`, one process or `torchrun` for DDP), and
in a one-worker `tunefleet train`'s Ray task (`train.launch.fit_in_task`), it is `torch.distributed`
(for several processes) and a folder. Workers train on disjoint shards and evaluate on disjoint shards
whose predictions are gathered, so every worker computes the same metric and takes the same
early-stopping decision.

`config` holds the validated spec as a dict, the tokenized data (a Ray object ref, shared by every
worker and every trial, or the arrays themselves) and the label names. Every rank returns a summary
(every reported evaluation, the divergence or out-of-memory reason if the run failed, the batch size
and accumulation it trained with, and a fingerprint of what the rank trained on and ended with); Ray
Train hands back rank 0's as `Result.return_value`.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..spec import Spec, spec_from_dict
from ..tasks import IGNORE, Task, TokenizedSplit, get_task
from .allocator import keep_freed_memory
from .batching import collate, eval_batches, expected_targets, train_batches
from .checkpoint import load_training_state, save_checkpoint
from .dropout import use_fast_dropout
from .embedding_rows import RowwiseAdamW, rowwise_embedding
from .models import build_model, load_tokenizer, quiet_transformers, resolve_precision
from .onednn import pays_here as onednn_pays_here, use_onednn_linear
from .packing import pack, packing_check, position_offset
from .peft import apply_lora, is_adapted, merged_copy, parameter_counts
from .runlog import RunLogger
from .session import Session


class TrainingOutOfMemory(RuntimeError):
    """The run did not fit in GPU memory; raised by the launchers from the loop's summary."""


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """What Ray Train runs on every worker."""
    from .session import RayTrainSession

    return run_loop(config, RayTrainSession())


def run_loop(config: dict[str, Any], session: Session) -> dict[str, Any]:
    """Train one run on this worker; returns its summary (see the module docstring).

    Out of GPU memory ends the run as failed, with a reason naming batch size, max_length and model
    (returned and reported like a divergence, never raised: Ray Train's worker restarts are for faults,
    and a restarted worker would only run out of memory again). With `train.auto_batch_size` the run
    starts over in this process at half the batch size and twice the accumulation steps instead, so the
    effective batch, and so what a sweep compares, stays the same. With several workers this assumes
    every rank runs out of memory at the same batch (they train the same shapes); one that alone did
    would leave the others waiting in DDP's all-reduce until its timeout, a fault Ray Train restarts.
    """
    quiet_transformers()
    spec = spec_from_dict(config["spec"])
    data = fetch_splits(config["data"])
    device = session.device()
    retries: list[str] = []
    try:
        while True:
            try:
                summary = _run_once(config, spec, data, session, device)
                return summary | {"batch_size": spec.train.batch_size,
                                  "grad_accum_steps": spec.train.grad_accum_steps, "oom_retries": retries}
            except torch.cuda.OutOfMemoryError:
                cfg = spec.train
                reason = (f"out of GPU memory at batch_size {cfg.batch_size}, max_length {spec.model.max_length}, "
                          f"model {spec.model.name_or_path}")
                if not cfg.auto_batch_size or cfg.batch_size == 1:
                    fix = ("" if cfg.auto_batch_size else ", or set train.auto_batch_size: true")
                    failure = f"{reason}: lower train.batch_size or model.max_length{fix}"
                else:
                    failure = None
                    spec = spec.model_copy(update={"train": cfg.model_copy(update={
                        "batch_size": cfg.batch_size // 2, "grad_accum_steps": cfg.grad_accum_steps * 2})})
                    retries.append(f"{reason}; retrying at batch_size {spec.train.batch_size}, "
                                   f"grad_accum_steps {spec.train.grad_accum_steps}")
                    if session.rank == 0:
                        print(f"[{spec.name}] {retries[-1]}", flush=True)
            # Outside the except block: its traceback no longer holds the failed attempt's model,
            # optimizer and activations, so they can be freed before the next attempt.
            _free_memory(device)
            if failure is not None:
                return _report_failure(spec, session, failure) | {"oom_retries": retries}
    finally:
        # A process that runs several trials (reused Tune actors) starts each with the GPU's cache empty.
        _free_memory(device)


def _run_once(config: dict[str, Any], spec: Spec, data: dict[str, TokenizedSplit], session: Session,
              device: Any) -> dict[str, Any]:
    """One attempt at the run with these settings: set up, then loop epochs."""
    from transformers import get_linear_schedule_with_warmup

    # ---- setup ------------------------------------------------------------------------------------
    cfg = spec.train
    label_names: list[str] = config["label_names"]
    task = get_task(spec.task)
    rank, world = session.rank, session.world
    # A worker is given `cpus_per_worker` CPUs; more torch threads than that only fight each other.
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))
    precision = resolve_precision(cfg.precision, str(device))
    if device.type == "cuda":
        # TF32 for what still runs in fp32 under autocast (the optimizer step, fp32 runs): ~8x the
        # fp32 matmul rate on Ampere and later, with a 10-bit mantissa that fine-tuning never notices.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)

    tokenizer = load_tokenizer(spec.model.name_or_path)
    with session.resume_dir() as resume_dir:
        # Resuming (a restarted worker, or a retried trial) continues from the last published
        # checkpoint: its weights, optimizer moments, schedule position and RNG state.
        if cfg.peft is None:
            model = build_model(task, resume_dir or spec.model.name_or_path, label_names,
                                None if resume_dir else cfg.dropout)
        else:
            # LoRA: the frozen encoder always comes from the pretrained model; a resumed run takes the
            # adapters and the head from the checkpoint's adapter/ (see train/peft.py).
            model = apply_lora(build_model(task, spec.model.name_or_path, label_names, cfg.dropout), spec, resume_dir)
        state = load_training_state(resume_dir) if resume_dir else None
    parameters = parameter_counts(model)
    if device.type == "cpu":
        # Dropout masks from 16-bit random numbers: a quarter of bernoulli_'s draws, ~5% of an fp32
        # step on a CPU (train/dropout.py). A GPU's own dropout is already one fused kernel.
        use_fast_dropout(model)
        # fp32 linear layers through oneDNN rather than MKL: ~7% of an fp32 step and ~13% of an fp32
        # evaluation on an AVX-512 EPYC, but no gain on an AVX2-only one (0.96x per step), so only
        # where it pays (train/onednn.py); bf16 under autocast reaches oneDNN already.
        if onednn_pays_here():
            use_onednn_linear(model)
        # The word-embedding gradient (47 MB for MiniLM; with one worker, the used rows' compact
        # blocks RowwiseAdamW makes instead, up to a few MB) is made and freed every step; malloc would
        # page-fault it in afresh each time: 7% of a MiniLM step in fp32, 18% in bf16 (train/allocator.py).
        keep_freed_memory()
    packing = _packing(spec, task, model, data["train"], tokenizer.pad_token_id, rank)
    if cfg.gradient_checkpointing:
        # Before DDP wraps the model. Non-reentrant: the reentrant variant breaks under DDP and
        # needs inputs that require grad.
        if hasattr(model, "activation_checkpointing_enable"):  # its name from transformers 5 on
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = session.prepare(model)
    # fused: one kernel over all parameters instead of a loop of per-tensor ops; on CPU the default
    # AdamW step costs more than a short batch's forward and backward (benchmarks/throughput.py).
    # Only trainable parameters get AdamW state: with LoRA, the adapters and the head.
    groups = _param_groups(model, cfg.weight_decay)
    # On a CPU with one worker, the word embedding's rows are updated only once a batch has used
    # them: dense AdamW's result, without a pass over the whole 47 MB table, its gradient and
    # moments every step (1.08x per packed fp32 MiniLM step on a 2-core CPU; train/embedding_rows.py).
    embedding = rowwise_embedding(model) if device.type == "cpu" and world == 1 else None
    if embedding is not None:
        optimizer = RowwiseAdamW(groups, embedding, lr=cfg.lr)
    else:
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
    batches_per_epoch = len(train_batches(data["train"], cfg.batch_size, cfg.seed, 0, rank, world,
                                          cfg.group_by_length and packing is None))
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / cfg.grad_accum_steps))
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)

    run = _Run(spec, task, label_names, data, tokenizer, model, optimizer, scheduler, session, device, precision,
               parameters, packing, progress=_Progress(spec), seen=_Seen(),
               # Rank 0 alone logs to MLflow, into the run the driver created (None: untracked).
               run_log=RunLogger.from_config(config.get("tracking")) if rank == 0 else None)
    if run.run_log is not None:
        run.run_log.log_metrics({"trainable_parameters": parameters["trainable"],
                                 "total_parameters": parameters["total"]}, step=0)
    start_epoch = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        run.progress.restore(state["progress"])
        start_epoch = int(state["next_epoch"])

    # ---- train, evaluate, save --------------------------------------------------------------------
    try:
        for epoch in range(start_epoch, cfg.epochs):
            outcome = _train_epoch(run, epoch)
            if outcome.diverged is not None:
                return _report_divergence(run, epoch, outcome.diverged)
            if outcome.stop:
                break
            if _evaluate_and_report(run, float(epoch + 1), outcome.mean_loss, outcome.tokens_per_second):
                break
    finally:
        # Metrics still queued for MLflow are flushed whatever ended the run.
        if run.run_log is not None:
            run.run_log.close()
    return {"history": run.progress.history, "diverged": None, "parameters": parameters,
            "batching": _batching(cfg, packing), **run.seen.summary(model, rank)}


@dataclass
class _Run:
    """What one worker's run holds while it trains: the pieces built in setup, and its bookkeeping."""

    spec: Spec
    task: Task
    label_names: list[str]
    data: dict[str, TokenizedSplit]
    tokenizer: Any
    model: Any
    optimizer: Any
    scheduler: Any
    session: Session
    device: Any
    precision: str
    parameters: dict[str, int]  # trainable and total
    packing: int | None  # where packed sentences' positions start; None: batches are padded, not packed
    progress: "_Progress"
    seen: "_Seen"
    run_log: RunLogger | None


@dataclass(frozen=True)
class _EpochOutcome:
    mean_loss: float
    tokens_per_second: float
    stop: bool = False  # a mid-epoch evaluation decided to stop
    diverged: float | None = None  # the loss when the gradient stopped being finite


def _train_epoch(run: _Run, epoch: int) -> _EpochOutcome:
    """One pass over this worker's shard: forward, backward, clip, step; mid-epoch evaluations when
    `train.eval_every_steps` asks for them."""
    cfg, model, world = run.spec.train, run.model, run.session.world
    split = run.data["train"]
    autocast = torch.autocast(run.device.type, dtype=torch.bfloat16) if run.precision == "bf16" else nullcontext()
    model.train()
    # Packed batches need no grouping: random batches pad as little packed as grouped ones do padded.
    batches = train_batches(split, cfg.batch_size, cfg.seed, epoch, run.session.rank, world,
                            cfg.group_by_length and run.packing is None)
    lengths = split.lengths()
    targets_per_batch = expected_targets(split, cfg.batch_size) if run.task.per_token_labels else None
    loss_sum, loss_count, tokens, started = 0.0, 0, 0, time.perf_counter()
    for i, indices in enumerate(batches):
        run.seen.add(indices)
        if run.packing is None:
            batch = collate(split, indices, run.tokenizer.pad_token_id, run.task.per_token_labels)
        else:
            batch = pack(split, indices, run.tokenizer.pad_token_id, run.packing)
        # The model's loss is a mean over the batch's targets: its examples, or for a token task its
        # labelled tokens, 16 to 500 in a length-grouped batch of 16. Weighted by the batch's share of
        # an average batch's targets, every labelled token counts the same in every step, so a step
        # accumulated over several batches (grad_accum_steps, auto_batch_size's halved batches) has the
        # gradient of one batch of them all, and a batch of one-word headlines no longer weighs as
        # much as one of long sentences.
        weight = int((batch["labels"] != IGNORE).sum()) / targets_per_batch if targets_per_batch else 1.0
        batch = to_device(batch, run.device)
        last_of_step = (i + 1) % cfg.grad_accum_steps == 0 or i + 1 == len(batches)
        # DDP all-reduces gradients on every backward; while accumulating, skip that sync.
        sync = nullcontext() if last_of_step or world == 1 else model.no_sync()
        with sync:
            with autocast:
                loss = model(**batch).loss * weight
            (loss / cfg.grad_accum_steps).backward()
        # The epoch's train_loss: the mean over its targets, from the very losses the gradients came from.
        loss_sum, loss_count = loss_sum + loss.item(), loss_count + weight
        tokens += int(lengths[indices].sum())
        if not last_of_step:
            continue
        # The gradient norm is computed after DDP's all-reduce, so a NaN/inf on any worker shows up
        # on all of them and every worker stops at the same step.
        grad_norm = clip_in_step(run.optimizer, model.parameters(), cfg.max_grad_norm)
        if cfg.fail_on_nonfinite_loss and not torch.isfinite(grad_norm):
            return _EpochOutcome(loss_sum / loss_count, 0.0, diverged=loss.item())
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.progress.step += 1
        if cfg.eval_every_steps and run.progress.step % cfg.eval_every_steps == 0 and i + 1 < len(batches):
            rate = tokens * world / (time.perf_counter() - started)
            if _evaluate_and_report(run, epoch + (i + 1) / len(batches), loss_sum / loss_count, rate):
                return _EpochOutcome(loss_sum / loss_count, rate, stop=True)
            model.train()
    rate = tokens * world / (time.perf_counter() - started)
    return _EpochOutcome(loss_sum / loss_count if loss_count else 0.0, rate)


def _packing(spec: Spec, task: Task, model: Any, train: TokenizedSplit, pad_id: int, rank: int) -> int | None:
    """Where packed sentences' positions start if this run packs its batches (`train.pack_sequences`,
    a token task, a model that gives packed sentences what it gives them alone), else None."""
    if not (spec.train.pack_sequences and task.per_token_labels):
        return None
    why_not = packing_check(model, train, pad_id)
    if why_not is not None:
        if rank == 0:
            print(f"[{spec.name}] train.pack_sequences: this model does not take packed rows ({why_not}); "
                  f"training on {'length-grouped' if spec.train.group_by_length else 'random'} padded batches",
                  flush=True)
        return None
    return position_offset(model)


def _batching(cfg: Any, packing: int | None) -> str:
    """How the run's batches were made, for its summary."""
    return "packed" if packing is not None else "length-grouped" if cfg.group_by_length else "random"


def clip_in_step(optimizer: torch.optim.Optimizer, parameters: Any, max_norm: float | None) -> torch.Tensor:
    """The gradients' total norm, with their clipping to `max_norm` left to the optimizer's next step.

    `clip_grad_norm_` rescales every gradient in place: one more pass over the memory of every
    gradient per step, which on a CPU costs as much as a short batch's attention (the word-embedding
    gradient alone is 47 MB for MiniLM). The fused AdamW kernel already divides each gradient by
    `grad_scale` (the hook that mixed-precision loss scaling uses) in the pass it makes anyway, so the
    clipping factor rides along. The arithmetic is clip_grad_norm_'s: factor max_norm / (norm + 1e-6),
    capped at 1 (here as its reciprocal, a divisor of at least 1).
    """
    # A sparse gradient (the word embedding's under RowwiseAdamW) counts each row once, its
    # repeats summed, as its dense form would.
    grads = [p.grad.coalesce().values() if p.grad.is_sparse else p.grad for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if max_norm:
        # float32 whatever the gradients' dtype: the fused kernels take no other.
        optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0).float()  # type: ignore[attr-defined]
    return norm


def _evaluate_and_report(run: _Run, epoch_done: float, train_loss: float, tokens_per_second: float) -> bool:
    """Score the validation split, publish a checkpoint if it improved, report; True = stop."""
    cfg, progress, rank = run.spec.train, run.progress, run.session.rank
    started = time.perf_counter()
    scores = evaluate(run.model, run.data["validation"], run.task, run.label_names, cfg.batch_size, run.device,
                      run.precision, run.tokenizer.pad_token_id, rank, run.session.world)
    eval_seconds = time.perf_counter() - started
    improved = progress.update(scores[cfg.metric])
    metrics = {
        "epoch": epoch_done, "step": progress.step, "train_loss": train_loss,
        "lr": run.scheduler.get_last_lr()[0], "tokens_per_second": tokens_per_second,
        # Validation runs after every epoch of every trial: on small data a large share of a sweep.
        "eval_seconds": eval_seconds,
        **{f"val_{k}": v for k, v in scores.items() if k != "report"},
        f"best_val_{cfg.metric}": progress.best, "diverged": 0,
        # Lets the sweep tell a trial that early stopping ended from one the scheduler stopped.
        "planned_epochs": cfg.epochs, "early_stopped": int(progress.should_stop()), "workers": run.session.world,
        # Where the run is: on a multi-node cluster, shows a retried trial moving to another node.
        "node_id": run.session.node_id,
    }
    if improved and rank == 0:
        model = _unwrap(run.model)
        # With LoRA the checkpoint's model is the merged, plain one (what is scored, registered and
        # served); the adapter goes beside it, for resuming (train/peft.py).
        plain, adapter = (merged_copy(model), model) if is_adapted(model) else (model, None)
        # A sweep's second objectives (search/pareto.py), measured on the model about to be kept.
        if "latency_ms" in run.spec.search.objectives:
            metrics["latency_ms"] = latency_ms(plain, run.data["validation"], run.task, run.device, run.precision,
                                               run.tokenizer.pad_token_id)
        if "parameters" in run.spec.search.objectives:
            metrics["parameters"] = sum(p.numel() for p in plain.parameters())
    progress.log(metrics, rank)
    if run.run_log is not None:
        run.run_log.log_metrics(metrics, step=progress.step)
    if improved and rank == 0:
        # Only the best checkpoint is kept: publish only on improvement.
        with tempfile.TemporaryDirectory() as tmp:
            meta = _checkpoint_meta(run, metrics, scores)
            folder = save_checkpoint(Path(tmp) / "model", plain, run.tokenizer, meta, {
                "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                # A mid-epoch checkpoint resumes at the start of that epoch.
                "torch_rng": torch.get_rng_state(), "next_epoch": math.floor(epoch_done),
                "progress": progress.state(),
            }, adapter=adapter)
            run.session.report(metrics, folder)
    else:
        run.session.report(metrics, None)
    return progress.should_stop()


LATENCY_EXAMPLES = 32  # validation examples timed one by one for `latency_ms`


@torch.inference_mode()
def latency_ms(model: Any, split: TokenizedSplit, task: Task, device: Any, precision: str, pad_id: int,
               examples: int = LATENCY_EXAMPLES) -> float:
    """Median milliseconds for the model to answer one example alone (a batch of one, the first
    `examples` validation examples, after two warm-up calls), on this device and thread count: the
    latency a served model has when requests come one at a time."""
    model.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    count = min(examples, len(split))
    times = []
    for index in [0, 0, *range(count)]:  # the first two warm up kernels and caches, and are not counted
        batch = to_device(collate(split, np.array([index]), pad_id, task.per_token_labels), device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with autocast:
            model(**batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - started) * 1000.0)
    return float(np.median(times[2:])) if count else float("nan")


# Padded tokens per evaluation batch on a GPU (at least 2 x the training batch, whatever their
# length): no activations are kept for a backward pass, so this costs a few hundred MiB at most, and
# short sentences go in batches of hundreds, which a GPU needs to be busy. Not on a CPU: there, batches
# past 32 sentences were no faster in bf16 and slower in fp32 (0.63x at this budget; the cache no
# longer holds a batch's activations), so a CPU evaluates in fixed batches of 2 x the training batch
# (benchmarks/eval_speed.py, benchmarks/RESULTS.md). Not measured on a GPU yet.
EVAL_BATCH_TOKENS = 8192


def evaluate(model: Any, split: TokenizedSplit, task: Task, label_names: list[str], batch_size: int,
             device: Any, precision: str, pad_id: int, rank: int = 0, world: int = 1,
             max_tokens: int | None = None) -> dict[str, Any]:
    """Loss and task metrics over a whole split (`evaluate_examples` without the predictions)."""
    return evaluate_examples(model, split, task, label_names, batch_size, device, precision, pad_id, rank, world,
                             max_tokens)[0]


@torch.inference_mode()
def evaluate_examples(model: Any, split: TokenizedSplit, task: Task, label_names: list[str], batch_size: int,
                      device: Any, precision: str, pad_id: int, rank: int = 0, world: int = 1,
                      max_tokens: int | None = None) -> tuple[dict[str, Any], list[Any]]:
    """Loss and task metrics over a whole split, and every example's prediction in split order (what
    the registry keeps for the paired promotion gate). With several workers each scores its shard
    and the predictions are gathered, so every worker returns the same numbers.

    Batches are sorted by length and, with `max_tokens` (default: `EVAL_BATCH_TOKENS` on a GPU, none
    on a CPU), filled up to that many padded tokens; all under `inference_mode` (no autograd
    bookkeeping at all, less than `no_grad`)."""
    model.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    indices, predicted, loss_sum, targets = [], [], 0.0, 0
    budget = max_tokens if max_tokens is not None else (EVAL_BATCH_TOKENS if device.type == "cuda" else 0)
    for batch_indices in eval_batches(split, batch_size * 2, rank, world, budget):
        batch = to_device(collate(split, batch_indices, pad_id, task.per_token_labels), device)
        with autocast:
            out = model(**batch)
        # The model's loss is a mean over the batch's targets (labelled tokens for a token task): weighted
        # back by their count, the split's loss is the same whatever the batches.
        count = int((batch["labels"] != IGNORE).sum()) if task.per_token_labels else len(batch_indices)
        loss_sum, targets = loss_sum + out.loss.item() * count, targets + count
        predicted += task.predictions(out.logits.float().cpu().numpy(), batch["labels"].cpu().numpy())
        indices += batch_indices.tolist()
    if world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, (indices, predicted, loss_sum, targets))
        indices = [i for part in gathered for i in part[0]]
        predicted = [p for part in gathered for p in part[1]]
        loss_sum, targets = sum(part[2] for part in gathered), sum(part[3] for part in gathered)
    scores = task.score(predicted, split, indices, label_names)
    scores["loss"] = loss_sum / max(1, targets)
    in_order: list[Any] = [None] * len(split)
    for index, prediction in zip(indices, predicted):
        in_order[index] = prediction
    return scores, in_order


def to_device(batch: dict[str, torch.Tensor], device: Any) -> dict[str, torch.Tensor]:
    """A collated batch on the device. To a GPU through pinned memory, without waiting: the copy
    overlaps the previous step's kernels still in flight."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


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


def _report_divergence(run: _Run, epoch: int, loss: float) -> dict[str, Any]:
    """End the run as diverged. The caller turns this into a failed trial with the reason; raising
    here instead would make Ray Train retry a run that would only diverge again."""
    progress = run.progress
    reason = f"non-finite loss/gradient ({loss}) at epoch {epoch + 1}, step {progress.step + 1}"
    print(f"[{run.spec.name}] diverged: {reason}", flush=True)
    _report_failed(run.spec, run.session, reason, float(epoch + 1), progress.step, progress.best)
    return {"history": progress.history, "diverged": reason}


def _report_failure(spec: Spec, session: Session, reason: str) -> dict[str, Any]:
    """End a run that cannot train (out of GPU memory) as a failed one, the way a divergence ends:
    through `diverged`/`diverged_reason`, which the sweep turns into a failed trial with this reason
    and the launchers into an error. Returned, not raised, so Ray Train does not restart the worker."""
    print(f"[{spec.name}] failed: {reason}", flush=True)
    worst = -math.inf if spec.metric_mode() == "max" else math.inf
    _report_failed(spec, session, reason, 0.0, 0, worst)
    return {"history": [], "diverged": reason, "out_of_memory": True}


def _report_failed(spec: Spec, session: Session, reason: str, epoch: float, step: int, best: float) -> None:
    """The last report of a failed run. The metric keys stay present (schedulers insist on them), at
    the worst possible value; `diverged_reason` is what the sweep shows as the trial's failure."""
    metric = spec.train.metric
    worst = -math.inf if spec.metric_mode() == "max" else math.inf
    session.report({"epoch": epoch, "step": step, f"val_{metric}": worst, f"best_val_{metric}": best,
                    "diverged": 1, "diverged_reason": reason}, None)


def _free_memory(device: Any) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    # Decay shrinks weights towards zero; for biases and LayerNorm gains that only hurts (BERT recipe).
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _checkpoint_meta(run: _Run, metrics: dict[str, Any], scores: dict[str, Any]) -> dict[str, Any]:
    spec = run.spec
    return {
        "task": spec.task, "model_class": run.task.model_class_name, "label_names": run.label_names,
        "base_model": spec.model.name_or_path, "max_length": spec.model.max_length,
        "metric": spec.train.metric, "epoch": metrics["epoch"], "validation": scores,
        "spec": spec.to_dict(), "parameters": run.parameters,
    }


def _unwrap(model: Any) -> Any:
    return model.module if hasattr(model, "module") else model


def fetch_splits(data: Any) -> dict[str, TokenizedSplit]:
    """The tokenized splits, from a Ray object ref (the normal case under Ray) or given inline."""
    if type(data).__name__ == "ObjectRef":
        import ray

        data = ray.get(data)
    return {name: TokenizedSplit.from_arrays(arrays) for name, arrays in data.items()}
