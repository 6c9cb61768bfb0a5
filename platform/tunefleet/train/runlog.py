"""`RunLogger`: how rank 0 of a training run sends its metrics to MLflow without ever waiting on it.

The training loop calls `log_metrics` (a list append) and goes on; a daemon thread sends whatever has
piled up with one `MlflowClient.log_batch` call, so a slow or briefly unreachable tracking server
costs the loop nothing. Failed batches are retried with backoff and finally dropped with one
warning: losing a few metric points is better than losing a training run. Once the run is closing, a
failed batch is not retried: it and what is queued behind it are dropped at once, so a trial whose
tracking server has gone away ends without waiting out its retries. The run is named by an
explicit `run_id`, never through `mlflow.start_run`'s thread-local active run, which does not exist
in a Ray worker anyway.

This module imports nothing from tunefleet, so the worker loop can use it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

log = logging.getLogger("tunefleet.tracking")

# MLflow accepts at most 1000 metrics in one log_batch request.
MAX_BATCH = 1000


class RunLogger:
    """Buffers metrics for one MLflow run and flushes them from a background thread.

    Args:
        tracking_uri: where the run lives.
        run_id: the run to log into (created by the driver).
        retries: attempts per batch before it is dropped.
        backoff: seconds before the first retry; doubles each time.
    """

    def __init__(self, tracking_uri: str, run_id: str, retries: int = 5, backoff: float = 0.5):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.retries, self.backoff = retries, backoff
        self.dropped = 0
        self._pending: list[Any] = []
        self._wake = threading.Condition()
        self._closing = False
        self._client: Any = None
        # Daemon: a worker that is killed (ASHA stopped its trial) must not hang on the logger.
        self._thread = threading.Thread(target=self._run, name="tunefleet-mlflow", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, tracking: dict[str, Any] | None) -> "RunLogger | None":
        """A logger for the `{"tracking_uri", "run_id"}` the driver passed, or None when untracked."""
        if not tracking or not tracking.get("run_id"):
            return None
        return cls(tracking["tracking_uri"], tracking["run_id"])

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """Queue the numeric, finite values of `metrics` at `step`; never blocks, never raises."""
        # Plain tuples: importing mlflow (seconds) happens on the logger's thread, not the loop's.
        now = int(time.time() * 1000)
        batch = [(str(key), float(value), now, int(step)) for key, value in metrics.items()
                 if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)]
        with self._wake:
            self._pending += batch
            self._wake.notify()

    def close(self, timeout: float = 30.0) -> None:
        """Flush what is queued (waiting at most `timeout` seconds) and stop the thread."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("mlflow: run %s: gave up flushing after %.0fs; some metrics are not logged",
                        self.run_id, timeout)

    def _run(self) -> None:
        self._connect()
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    self._wake.wait()
                if not self._pending:
                    return
                # Everything that piled up while the previous request was in flight goes in one batch.
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self._send(batch)

    def _connect(self) -> None:
        """Import mlflow and open the store while the loop sets up; a failure is retried in `_send`."""
        try:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        except Exception as exc:  # noqa: BLE001
            log.debug("mlflow: client not ready yet: %s", exc)

    def _send(self, batch: list[tuple[str, float, int, int]]) -> None:
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            try:
                from mlflow.entities import Metric

                if self._client is None:
                    self._connect()
                metrics = [Metric(key, value, timestamp, step) for key, value, timestamp, step in batch]
                self._client.log_batch(self.run_id, metrics=metrics, synchronous=True)
                return
            except Exception as exc:  # noqa: BLE001 - retried, then dropped: never raised into training
                if attempt == self.retries or self._closing:
                    # Closing, one failed attempt is enough: it already contains MLflow's own retries
                    # (about 15 s, `cluster.mlflow_client_env`), and the trial's process is wanted by
                    # the next trial. Retrying here made every trial wait out close()'s whole timeout
                    # (30 s) while a tracking server was down.
                    with self._wake:
                        if self._closing:
                            batch, self._pending = batch + self._pending, []
                    self.dropped += len(batch)
                    log.warning("mlflow: run %s: dropped %d metric values after %d attempt(s)%s: %s",
                                self.run_id, len(batch), attempt, " (closing)" if self._closing else "",
                                str(exc).splitlines()[0][:200])
                    return
                time.sleep(delay)
                delay *= 2
