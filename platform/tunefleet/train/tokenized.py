"""Tokenize the splits once and keep the result on disk.

The cache key is the data fingerprint (content of every split and the label set), the tokenizer's
own serialisation and max_length, so a second `tunefleet train` and every trial of a sweep reuse the
same arrays, and any change to data, tokenizer or length makes a new entry. Entries are `.npz` files
(plain arrays, loaded with allow_pickle=False) written to a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..tasks import TokenizedSplit, get_task

SPLITS = ("train", "validation", "test")


def cache_dir() -> Path:
    """`$TUNEFLEET_CACHE`, else ~/.cache/tunefleet."""
    return Path(os.environ.get("TUNEFLEET_CACHE", Path.home() / ".cache" / "tunefleet"))


def tokenize_splits(splits: Any, tokenizer: Any, max_length: int, cache: Path | None = None) -> tuple[dict[str, TokenizedSplit], bool]:
    """Tokenized train/validation/test, from the cache when possible.

    Returns:
        (splits by name, whether they came from the cache).
    """
    task = get_task(splits.task)
    key = hashlib.sha256("|".join([
        splits.fingerprint, splits.task, str(max_length),
        _tokenizer_fingerprint(tokenizer),
    ]).encode()).hexdigest()[:32]
    folder = (cache or cache_dir()) / "tokenized"
    path = folder / f"{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as archive:
            return {name: TokenizedSplit.from_arrays(_prefixed(archive, name)) for name in SPLITS}, True
    result = {name: task.tokenize(getattr(splits, name), tokenizer, splits.label_names, max_length)
              for name in SPLITS}
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{key}.{os.getpid()}.partial.npz"
    np.savez(partial, **{f"{name}/{k}": v for name, split in result.items() for k, v in split.to_arrays().items()})
    os.replace(partial, path)
    return result, False


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the tokenizer's serialisation without its truncation and padding settings: the Rust
    tokenizer stores those of its *last call* (every call with max_length rewrites them), so keeping
    them would make the key depend on what the tokenizer was last used for, not on what it does."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def _prefixed(archive: Any, name: str) -> dict[str, np.ndarray]:
    prefix = f"{name}/"
    return {k[len(prefix):]: archive[k] for k in archive.files if k.startswith(prefix)}
