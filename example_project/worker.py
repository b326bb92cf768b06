"""The demo's retry worker: what a production deployment runs as the task worker or a cron'd
``retry_failed_saves``, here a thread of ``manage.py demo`` that replays every few seconds.

It calls ``operations.redelivery.replay`` (the function behind the command, the admin and the
task), so a partial result on the example page turns into a stored object while the page polls.
"""

from __future__ import annotations

import logging
import threading

from django.db import close_old_connections

from storage_guard.operations import redelivery

logger = logging.getLogger(__name__)

BATCH = 20


class RetryWorker(threading.Thread):
    """Replays up to ``BATCH`` stashed saves every ``interval`` seconds until ``stop()``."""

    def __init__(self, interval: float):
        super().__init__(name="storage-guard-retry-worker", daemon=True)
        self.interval = interval
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.round()

    def round(self) -> redelivery.ReplayResult | None:
        """One pass; a failing pass is logged and the next one tries again."""
        try:
            result = redelivery.replay(redelivery.Selection(limit=BATCH), via="worker")
        except Exception:  # the worker must outlive a bad moment of the database or S3
            logger.exception("retry worker: replay failed", extra={"event": "worker_error"})
            return None
        finally:
            close_old_connections()
        if result.total:
            logger.info("retry worker: %s", result.summary(),
                        extra={"event": "worker_round", "delivered": result.delivered,
                               "failed": result.failed, "skipped": result.skipped})
        return result

    def stop(self) -> None:
        self._stopped.set()
