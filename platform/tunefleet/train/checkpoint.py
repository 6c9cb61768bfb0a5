"""Checkpoints in the Hugging Face `save_pretrained` layout, written so that a half-written one is
never used.

A checkpoint folder holds `model.safetensors` + `config.json` (weights and label map), the tokenizer
files, `tunefleet.json` (task, labels, metrics, the spec that trained it) and `training_state.pt`
(optimizer, scheduler, RNG, epoch, early-stopping state) for resuming; a LoRA run (`train.peft`) adds
`adapter/` (the LoRA weights and head, also only for resuming: the weights above are the merged,
plain model, see `train/peft.py`). Everything is written into a temporary sibling folder,
`tunefleet.json` last, and the folder is then renamed into place: a rename is atomic, so a crash
leaves either no checkpoint or a complete one. Readers check for `tunefleet.json` and refuse
anything without it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

META_FILE = "tunefleet.json"
STATE_FILE = "training_state.pt"
ADAPTER_DIR = "adapter"


class IncompleteCheckpointError(RuntimeError):
    pass


def save_checkpoint(target: Path, model: Any, tokenizer: Any, meta: dict[str, Any],
                    training_state: dict[str, Any] | None, adapter: Any | None = None) -> Path:
    """Write a checkpoint to `target` atomically (see module doc); `adapter`, a peft model, is saved
    in `adapter/` beside the (merged) `model`."""
    import torch

    target = Path(target)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    if training_state is not None:
        torch.save(training_state, staging / STATE_FILE)
    if adapter is not None:
        adapter.save_pretrained(staging / ADAPTER_DIR)
    (staging / META_FILE).write_text(json.dumps(meta, indent=2, default=_jsonable))
    _fsync_dir(staging)
    if target.exists():
        shutil.rmtree(target)
    os.rename(staging, target)
    return target


def read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise IncompleteCheckpointError(
            f"{folder}: not a complete tunefleet checkpoint ({META_FILE} missing); it was never "
            "published or its write was interrupted"
        )
    return json.loads(path.read_text())


def load_training_state(folder: str | Path) -> dict[str, Any] | None:
    import torch

    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    # weights_only: a checkpoint file is data, never code to unpickle.
    return torch.load(path, map_location="cpu", weights_only=True)


def load_for_inference(folder: str | Path, device: str = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, meta) from a complete checkpoint folder, in eval mode."""
    import transformers

    meta = read_meta(folder)
    model_class = getattr(transformers, meta["model_class"])
    model = model_class.from_pretrained(folder, use_safetensors=True).to(device).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, use_fast=True)
    return model, tokenizer, meta


def _fsync_dir(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
