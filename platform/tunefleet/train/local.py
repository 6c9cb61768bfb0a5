"""The loop without Ray: one process, or `torchrun` for DDP, with the same spec.

    python -m tunefleet.train.local SPEC --output DIR [--set train.lr=1e-4 ...]
    torchrun --nproc-per-node 4 -m tunefleet.train.local SPEC --output DIR

Every process reads and tokenizes the data (the tokenized cache makes the others' read cheap), runs
`run_loop` with a `LocalSession`, and rank 0 keeps the best checkpoint in `DIR/checkpoint`, every
evaluation in `DIR/reports.jsonl`, and scores the checkpoint on the test split. Nothing here imports
Ray: this is how to debug the loop with a plain debugger, or run it where Ray is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..spec import Spec
from .launch import PreparedData, TrainingDiverged, prepare_data, score_checkpoint
from .loop import TrainingOutOfMemory, run_loop
from .session import LocalSession


def train_local(spec: Spec, output_dir: str | Path, prepared: PreparedData | None = None,
                resume_from: str | Path | None = None, device: str | None = None) -> dict[str, Any]:
    """Train the spec's fixed hyperparameters in this process (one rank of `torchrun` when launched so).

    Args:
        spec: the validated spec; its `resources` section is not used (this process is the worker).
        output_dir: where the best checkpoint and the reports go.
        prepared: data already read and tokenized (default: read it now).
        resume_from: a tunefleet checkpoint to continue from.
        device: a torch device string (default: the GPU of this rank if there is one, else CPU).

    Returns:
        The run's summary: validation and (rank 0) test metrics, checkpoint folder, epochs, seconds.

    Raises:
        TrainingDiverged: the loss stopped being finite.
        TrainingOutOfMemory: out of GPU memory (after halving the batch down to 1 with
            `train.auto_batch_size`); the message names batch size, max_length, model and the fix.
    """
    prepared = prepared or prepare_data(spec)
    session = LocalSession(output_dir, resume_from=resume_from, device=device)
    config = {"spec": spec.to_dict(), "data": prepared.arrays(), "label_names": prepared.splits.label_names,
              "tracking": None}
    started = time.perf_counter()
    result = run_loop(config, session)
    seconds = time.perf_counter() - started
    if result.get("out_of_memory"):
        raise TrainingOutOfMemory(f"{spec.name}: {result['diverged']}")
    if result.get("diverged"):
        raise TrainingDiverged(f"{spec.name}: training diverged: {result['diverged']}")
    summary: dict[str, Any] = {"task": spec.task, "model": spec.model.name_or_path, "rank": session.rank,
                               "epochs_run": max((h["epoch"] for h in result["history"]), default=0),
                               "train_seconds": round(seconds, 2), "history": result["history"],
                               # What the run trained with: smaller than the spec's after out-of-memory
                               # retries (`train.auto_batch_size`), with the same effective batch.
                               "batch_size": result["batch_size"], "grad_accum_steps": result["grad_accum_steps"],
                               "oom_retries": result["oom_retries"],
                               # packed (token tasks, train.pack_sequences), length-grouped or random.
                               "batching": result.get("batching"),
                               # With LoRA (`train.peft`), the adapters and the head.
                               "parameters": result.get("parameters")}
    if session.rank == 0 and session.checkpoint is not None:
        from .checkpoint import read_meta

        summary["checkpoint"] = str(session.checkpoint)
        summary["metrics"] = {"validation": read_meta(session.checkpoint)["validation"],
                              "test": score_checkpoint(str(session.checkpoint), prepared.tokenized["test"],
                                                       spec.train.batch_size * 2)}
    return summary


def main(argv: list[str] | None = None) -> int:
    from ..spec import load_spec

    parser = argparse.ArgumentParser(prog="python -m tunefleet.train.local", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--output", required=True, help="folder for the best checkpoint and the reports")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec field")
    parser.add_argument("--resume-from", help="a tunefleet checkpoint folder to continue from")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: this rank's GPU, else cpu)")
    args = parser.parse_args(argv)
    summary = train_local(load_spec(args.spec, args.set), args.output, resume_from=args.resume_from,
                          device=args.device)
    if summary["rank"] == 0:
        summary.pop("history")
        print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
