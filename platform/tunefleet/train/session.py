"""Where the loop runs: the few things `run_loop` needs from its surroundings.

The loop asks its session for its rank and world size, its device, a model wrapped for data
parallelism, the checkpoint to resume from, and a place to report metrics and checkpoints to. Three
sessions exist:

- `RayTrainSession`: inside a Ray Train worker (`TorchTrainer`): Ray's context, device, DDP wrapper,
  checkpoints and `ray.train.report`, through which metrics reach Tune's schedulers.
- `TuneTrialSession`: a sweep's one-worker trial, trained in the Tune trial's own process
  (`search.trial_runner`): `ray.tune.report` and Tune's checkpoints, no Train run in between.
- `LocalSession`: without Ray, in one process or under `torchrun` (which sets RANK, WORLD_SIZE and
  LOCAL_RANK): `torch.distributed` for DDP, and a folder that keeps the best checkpoint and every
  report. It keeps the loop debuggable with a plain debugger, and runnable where Ray is not installed.
  A one-worker `tunefleet train` uses it too, inside one Ray task (`launch.fit_in_task`).
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ContextManager, Iterator, Protocol


class Session(Protocol):
    rank: int
    world: int
    node_id: str

    def device(self) -> Any:
        """The torch device this worker trains on."""

    def prepare(self, model: Any) -> Any:
        """The model on its device, wrapped for data parallelism when world > 1."""

    def resume_dir(self) -> ContextManager[str | None]:
        """The checkpoint folder to resume from, or None for a fresh start."""

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """Publish one evaluation's metrics, and the checkpoint when it improved (rank 0 only)."""


class RayTrainSession:
    """The loop inside a Ray Train worker."""

    def __init__(self) -> None:
        import ray
        import ray.train

        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.node_id = ray.get_runtime_context().get_node_id()

    def device(self) -> Any:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare(self, model: Any) -> Any:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def resume_dir(self) -> ContextManager[str | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        return checkpoint.as_directory() if checkpoint else nullcontext()

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        import ray.train

        if checkpoint is None:
            ray.train.report(metrics)
        else:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint)))


class TuneTrialSession:
    """The loop in a Ray Tune trial's own process: one worker, no Ray Train run around it.

    Tune keeps the trial's checkpoints (under the sweep's folder, `<trial>/checkpoint_*`), hands the
    latest back when it retries or resumes the trial, and sends each report to the scheduler. A
    trial that the scheduler stops is waiting inside `report` (Tune's function trials report
    synchronously), where Tune ends its thread, so the process is free for the next trial at once.
    """

    rank, world = 0, 1

    def __init__(self) -> None:
        import ray

        self.node_id = ray.get_runtime_context().get_node_id()

    def device(self) -> Any:
        import ray
        import torch

        # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPU(s): the first visible one is its own.
        return torch.device("cuda:0" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")

    def prepare(self, model: Any) -> Any:
        return model.to(self.device())

    def resume_dir(self) -> ContextManager[str | None]:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        return checkpoint.as_directory() if checkpoint else nullcontext()

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        from ray import tune

        if checkpoint is None:
            tune.report(metrics)
        else:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint)))


class LocalSession:
    """The loop without Ray: one process, or one of `torchrun`'s processes.

    Args:
        output_dir: where rank 0 keeps `checkpoint/` (the best so far) and `reports.jsonl`.
        resume_from: a checkpoint folder to resume from (its training state included), or None.
        device: a torch device string; None picks cuda:LOCAL_RANK when a GPU is there, else cpu.
        rank, world: this process's place; None reads torchrun's RANK and WORLD_SIZE (default 0 of 1).
    """

    def __init__(self, output_dir: str | Path, resume_from: str | Path | None = None, device: str | None = None,
                 rank: int | None = None, world: int | None = None):
        import socket

        import torch

        self.output_dir = Path(output_dir)
        self.rank = int(os.environ.get("RANK", "0")) if rank is None else rank
        self.world = int(os.environ.get("WORLD_SIZE", "1")) if world is None else world
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.node_id = socket.gethostname()
        self._resume_from = resume_from
        if device is None:
            device = f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        if self._device.type == "cuda":
            torch.cuda.set_device(self._device)
        if self.world > 1 and not torch.distributed.is_initialized():
            # torchrun set MASTER_ADDR/PORT; NCCL between GPUs, gloo between CPU processes.
            torch.distributed.init_process_group("nccl" if self._device.type == "cuda" else "gloo")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.reports: list[dict[str, Any]] = []

    def device(self) -> Any:
        return self._device

    def prepare(self, model: Any) -> Any:
        import torch

        model = model.to(self._device)
        if self.world == 1:
            return model
        ids = [self._device.index] if self._device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    @contextmanager
    def resume_dir(self) -> Iterator[str | None]:
        yield None if self._resume_from is None else str(self._resume_from)

    @property
    def checkpoint(self) -> Path | None:
        """The best checkpoint so far (rank 0's folder), or None before the first improvement."""
        folder = self.output_dir / "checkpoint"
        return folder if folder.is_dir() else None

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        self.reports.append(metrics)
        if self.rank != 0:
            return
        with open(self.output_dir / "reports.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps(metrics, default=str) + "\n")
        if checkpoint is not None:
            # The loop reports a checkpoint only when the metric improved: the newest is the best.
            target = self.output_dir / "checkpoint"
            staging = self.output_dir / ".checkpoint.partial"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(checkpoint, staging)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(staging, target)
