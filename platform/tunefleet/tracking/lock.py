"""The per-model lock around the registry's read-compare-set of `champion` (see `registry`'s doc).

A store on this machine (SQLite, file) is locked with `flock` on a file beside the database; a
remote store (HTTP server, PostgreSQL) with a lease in the registered-model tag `tunefleet.lock`,
taken by Fischer's timed mutual exclusion.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from .runs import local_store_path

LOCK_TAG = "tunefleet.lock"
LEASE_SECONDS = 60.0


class LockTimeout(RuntimeError):
    """The lock stayed held past the timeout: another registration is stuck, not bad input."""


@contextlib.contextmanager
def model_lock(client: Any, uri: str, name: str, timeout: float = 180.0) -> Iterator[None]:
    """Hold the registered model `name`'s lock for the body (the model must exist for a remote store)."""
    store = local_store_path(uri)
    if store is not None:
        with _file_lock(store.parent / f".{store.name}.{name}.registry-lock", timeout, name):
            yield
    else:
        with _tag_lease(client, name, timeout):
            yield


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float, name: str) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"{name}: registry lock {path} held for over {timeout:.0f}s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _tag_lease(client: Any, name: str, timeout: float, settle: float = 1.0) -> Iterator[None]:
    """Fischer's timed mutual exclusion on a registered-model tag (see the module doc)."""
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    while True:
        holder = client.get_registered_model(name).tags.get(LOCK_TAG, "")
        if not _lease_live(holder):
            started = time.monotonic()
            try:
                client.set_registered_model_tag(name, LOCK_TAG, f"{token} {time.time() + LEASE_SECONDS:.3f}")
            except Exception:  # noqa: BLE001 - a racer wrote first; the read-back below decides
                # When the tag is absent, racers' writes are INSERTs of one key: on PostgreSQL all
                # but the first fail with a unique-key violation (HTTP 400), which means a racer
                # took the lock, not that the store is broken. A store that is really down fails
                # the read-back instead.
                pass
            # Settle longer than a write takes, so a racer that read "free" has written by now.
            time.sleep(max(settle, 3 * (time.monotonic() - started)))
            if client.get_registered_model(name).tags.get(LOCK_TAG, "").split(" ")[0] == token:
                break
        if time.monotonic() > deadline:
            raise LockTimeout(f"{name}: registry lock (tag {LOCK_TAG}) held by another process for over "
                                f"{timeout:.0f}s; if no sweep is registering, delete that tag")
        time.sleep(random.uniform(0.2, 0.8))
    try:
        yield
    finally:
        try:
            if client.get_registered_model(name).tags.get(LOCK_TAG, "").split(" ")[0] == token:
                client.delete_registered_model_tag(name, LOCK_TAG)
        except Exception:  # noqa: BLE001 - the lease expires on its own
            pass


def _lease_live(holder: str) -> bool:
    parts = holder.split(" ")
    try:
        return len(parts) == 2 and float(parts[1]) > time.time()
    except ValueError:
        return False
