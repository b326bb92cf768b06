"""What one save tells the world: a log line per attempt and per outcome.

``SaveTrace`` is created by the storage for each logical save and receives every step of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from storage_guard import conf
from storage_guard.classification import Classification
from storage_guard.retry import AttemptInfo, Outcome, RetryListener

logger = logging.getLogger("storage_guard")


@dataclass
class SaveTrace(RetryListener):
    storage_alias: str
    operation: str
    key: str
    key_bytes: int
    size: int | None = None
    content_type: str = ""
    sha256: str = ""
    record_id: int | None = None
    attempts: list[AttemptInfo] = field(default_factory=list)

    def fields(self, **extra) -> dict:
        limit = conf.get("LOG_KEY_CHARS")
        key = self.key if len(self.key) <= limit else self.key[: limit - 1] + "…"
        return {"storage": self.storage_alias, "operation": self.operation, "key": key,
                "key_bytes": self.key_bytes, "size": self.size, "record_id": self.record_id,
                **extra}

    def attempt_started(self, number: int) -> None:
        logger.debug("save_attempt %s #%s", self.key, number,
                     extra=self.fields(event="save_attempt", attempt=number))

    def attempt_failed(self, info: AttemptInfo, result: Classification, will_retry: bool) -> None:
        self.attempts.append(info)
        logger.warning("storage_error %s on %s attempt %s: %s", result.code, self.key, info.number,
                       result.message, extra=self.fields(
                           event="storage_error", attempt=info.number, error_code=result.code,
                           transient=result.transient, duration_ms=info.duration_ms,
                           request_id=result.request_id, host_id=result.host_id))
        if will_retry:
            logger.info("save_retry %s after %s", self.key, result.code, extra=self.fields(
                event="save_retry", attempt=info.number, error_code=result.code))

    def succeeded(self, outcome: Outcome) -> None:
        logger.info("save_success %s in %.1f ms after %s attempt(s)", self.key, outcome.duration_ms,
                    outcome.attempt_count, extra=self.fields(
                        event="save_success", attempts=outcome.attempt_count,
                        duration_ms=outcome.duration_ms))

    def stashed(self, outcome: Outcome, status: str) -> None:
        result = outcome.classification
        logger.error("save_stashed %s: %s after %s attempt(s), record %s", self.key, result.code,
                     outcome.attempt_count, self.record_id, extra=self.fields(
                         event="save_stashed", status=status, error_code=result.code,
                         transient=result.transient, attempts=outcome.attempt_count,
                         duration_ms=outcome.duration_ms, request_id=result.request_id))

    def record_failed(self, exc: BaseException) -> None:
        logger.error("record_failed %s: could not write the SaveAttempt row: %r", self.key, exc,
                     extra=self.fields(event="record_failed", error_code=type(exc).__name__))

    def rejected(self, exc) -> None:
        logger.warning("save_rejected %s: %s", self.key, exc, extra=self.fields(
            event="save_rejected", error_code=exc.code))
