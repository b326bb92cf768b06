"""What one storage operation tells the world: log lines, and Sentry breadcrumbs and events.

The storage creates one ``SaveTrace`` per logical save (operation ``"save"``), per redelivery of
a stashed save (``"redeliver"``) and per read (``"open"``, ``"exists"``, ``"size"``,
``"listdir"``, ``"delete"``, ``"head"``), and calls it at every step. Everything goes to the
``storage_guard`` logger, with the fields in ``extra=`` (``docs/observability.md`` lists them)
and a message that reads on its own.

Cost: on a first-try success the trace builds one ``extra`` dict, and only when the logger is
enabled for INFO (DEBUG for reads); Sentry is not touched. Object bodies, credentials and
presigned URL signatures are never logged: only the key, sizes, codes, S3's error message and
ids are, and signatures in any text are replaced by ``[redacted]``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from storage_guard import conf, signals
from storage_guard.integrations import sentry
from storage_guard.log import LOGGER_NAME, logger  # noqa: F401 - LOGGER_NAME is re-exported
from storage_guard.saving.classification import (
    SAFE_ERROR_FIELDS,  # noqa: F401 - re-exported
    Classification,
    key_bytes_bucket,
    safe_response,
    size_bucket,
)
from storage_guard.saving.retry_loop import AttemptInfo, Outcome, RetryListener
from storage_guard.saving.safetext import (  # noqa: F401 - MESSAGE_CHARS and redact are re-exported
    ESCAPED,
    MESSAGE_CHARS,
    escape_controls,
    preview_key,
    redact,
)

WRITE_OPERATIONS = frozenset({"save", "redeliver"})
READ_OPERATIONS = frozenset({"open", "exists", "size", "listdir", "delete", "head"})

# The old name of safetext.preview_key (operations/report.py and tests import it from here).
cut_key = preview_key


def _response_ids(value) -> tuple[str, str]:
    """Request and host id of a successful boto3 call (``put_object`` returns them)."""
    if isinstance(value, dict):
        meta = value.get("ResponseMetadata") or {}
        return str(meta.get("RequestId") or ""), str(meta.get("HostId") or "")
    return "", ""


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
    _trace_id: str = field(default="", repr=False)
    _short_key: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not sentry.installed():  # a flag read; wires sentry up once it has been imported
            sentry.setup()

    # ------------------------------------------------------------------ helpers
    @property
    def is_write(self) -> bool:
        return self.operation in WRITE_OPERATIONS

    @property
    def trace_id(self) -> str:
        """Short id shared by every line of this operation (made on first use)."""
        if not self._trace_id:  # not os.urandom: a syscall that gives the GIL away
            self._trace_id = f"{random.getrandbits(48):012x}"
        return self._trace_id

    @property
    def short_key(self) -> str:
        """The key as log lines show it: shortened to ``LOG_KEY_CHARS`` and escaped (worked
        out on first use)."""
        if not self._short_key:
            self._short_key = escape_controls(preview_key(self.key, conf.get("LOG_KEY_CHARS")))
        return self._short_key

    def _event(self, suffix: str) -> str:
        return ("save_" if self.is_write else "read_") + suffix

    def fields(self, **extra) -> dict:
        return {"storage": self.storage_alias, "operation": self.operation,
                "key": self.short_key, "key_bytes": self.key_bytes, "size": self.size,
                "record_id": self.record_id, "trace_id": self.trace_id, **extra}

    def _log(self, level: int, msg: str, *args, escaped: bool = False, **extra) -> None:
        """``logger.log`` without its stack walk (every line's caller is this method).

        ``escaped=True``: the caller escaped every text value itself, so the logger's escaping
        filter can leave the line alone (``safetext.ESCAPED``).
        """
        if not logger.isEnabledFor(level):
            return
        fields = self.fields(**extra)
        if escaped:
            fields[ESCAPED] = True
        _emit(level, msg, args, fields)

    # ------------------------------------------------------------------ RetryListener
    def attempt_started(self, number: int) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            event = self._event("attempt")
            self._log(logging.DEBUG, "%s %s %s #%s", event, self.operation, self.short_key,
                      number, event=event, attempt=number)

    def attempt_failed(self, info: AttemptInfo, result: Classification, will_retry: bool) -> None:
        self.attempts.append(info)
        if will_retry:
            sentry.breadcrumb(
                f"{self._event('retry')} {self.operation} after {result.code}",
                self._sentry_data(result, attempt=info.number, duration_ms=info.duration_ms),
                level="warning")
        level = logging.WARNING if self.is_write or result.category != "client" \
            else logging.DEBUG
        if logger.isEnabledFor(level):
            self._log(level, "storage_error %s on %s %s attempt %s: %s", result.code,
                      self.operation, self.short_key, info.number, redact(result.message),
                      event="storage_error", attempt=info.number, error_code=result.code,
                      transient=result.transient, category=result.category,
                      duration_ms=round(info.duration_ms, 2), request_id=result.request_id,
                      host_id=result.host_id, will_retry=will_retry)
        if will_retry and logger.isEnabledFor(logging.INFO):
            event = self._event("retry")
            self._log(logging.INFO, "%s %s %s: attempt %s after %s", event, self.operation,
                      self.short_key, info.number + 1, result.code, event=event,
                      attempt=info.number + 1, error_code=result.code,
                      request_id=result.request_id, host_id=result.host_id)

    # ------------------------------------------------------------------ outcomes
    def finished(self, outcome: Outcome) -> None:
        """The end of a read or a redelivery (a save ends in ``succeeded`` or ``stashed``)."""
        if outcome.ok:
            self.succeeded(outcome)
        elif self.is_write:
            self.redelivery_failed(outcome)
        else:
            self.read_failed(outcome)

    def succeeded(self, outcome: Outcome) -> None:
        count = outcome.attempt_count
        self._announce("succeeded", "", outcome)
        retried = count > 1
        if retried:
            sentry.breadcrumb(
                f"{self._event('success')} {self.operation} after {count} attempts",
                {**self._sentry_data(None), "attempts": count,
                 "codes": [a.code for a in outcome.attempts]})
        level = logging.INFO if self.is_write else logging.DEBUG
        if not logger.isEnabledFor(level):
            return
        event = self._event("success")
        request_id, host_id = _response_ids(outcome.value)
        key, duration = self.short_key, outcome.duration_ms
        # The line every save writes, so its fields are built in one dict (those of fields(),
        # in the same order, then the success's). Every text value is escaped here or is ours
        # (constants, hex, the escaped key): the escaping filter leaves the line alone.
        _emit(level, "%s %s %s in %.1f ms after %s attempt(s)",
              (event, self.operation, key, duration, count), {
                  "storage": escape_controls(self.storage_alias), "operation": self.operation,
                  "key": key, "key_bytes": self.key_bytes, "size": self.size,
                  "record_id": self.record_id, "trace_id": self.trace_id, "event": event,
                  "attempt": count, "attempts": count,
                  "error_code": escape_controls(outcome.attempts[0].code) if retried else "",
                  "duration_ms": round(duration, 2), "request_id": escape_controls(request_id),
                  "host_id": escape_controls(host_id),
                  "sha256": self.sha256 if self.is_write else "", ESCAPED: True})

    def stashed(self, outcome: Outcome, status: str) -> None:
        """A save gave up: its bytes are in the stash and ``record_id`` is its row."""
        result = outcome.classification
        self._announce(status, result.code, outcome)
        event_id = self._capture(outcome, status, level="error")
        if logger.isEnabledFor(logging.ERROR):
            self._log(logging.ERROR, "save_stashed %s %s: %s after %s attempt(s), status %s, "
                      "record %s: %s", self.operation, self.short_key, result.code,
                      outcome.attempt_count, status, self.record_id, redact(result.message),
                      **self._outcome_fields(outcome, "save_stashed", status),
                      sentry_event_id=event_id or "")

    def redelivery_failed(self, outcome: Outcome) -> None:
        """A redelivery of stashed bytes failed again: they stay stashed for the next run."""
        result = outcome.classification
        self._announce("failed", result.code, outcome)
        event_id = self._capture(outcome, "still_stashed", level="warning")
        if logger.isEnabledFor(logging.WARNING):
            self._log(logging.WARNING, "save_stashed %s %s: %s after %s attempt(s), record %s "
                      "stays stashed", self.operation, self.short_key, result.code,
                      outcome.attempt_count, self.record_id,
                      **self._outcome_fields(outcome, "save_stashed", "still_stashed"),
                      sentry_event_id=event_id or "")

    def read_failed(self, outcome: Outcome) -> None:
        """A read gave up; the error goes to the caller, so no Sentry event is sent here."""
        result = outcome.classification
        level = logging.DEBUG if result.category == "client" else logging.WARNING
        if logger.isEnabledFor(level):
            self._log(level, "read_failed %s %s: %s after %s attempt(s)", self.operation,
                      self.short_key, result.code, outcome.attempt_count,
                      **self._outcome_fields(outcome, "read_failed", ""))

    def rejected(self, exc) -> None:
        """A save refused before any request (``SaveRejected``): data-dependent by nature."""
        self._announce("rejected", exc.code, None)
        context = {**self._sentry_context(), "error_code": exc.code,
                   "message": redact(str(exc.message))}
        sentry.capture_failure(exc, tags=self._sentry_tags(exc.code, False, exc.category, 0),
                               context=context, fingerprint=self._fingerprint(exc.code),
                               level="warning", scrub=redact)
        if logger.isEnabledFor(logging.WARNING):
            self._log(logging.WARNING, "save_rejected %s: %s", self.short_key,
                      redact(str(exc)), event="save_rejected", error_code=exc.code,
                      category=exc.category, transient=False, attempt=0, attempts=0,
                      content_type=self.content_type)

    def record_failed(self, exc: BaseException) -> None:
        """The ``SaveAttempt`` row could not be written; the save itself is unaffected."""
        code = type(exc).__name__
        data = {**self._sentry_data(None), "error_code": code}
        sentry.breadcrumb(f"record_failed {self.operation}: {code}", data, level="error")
        sentry.capture_message_throttled(
            f"record_failed:{code}", f"storage_guard could not write a SaveAttempt row: {code}",
            tags={"storage_guard.error_code": code, "storage_guard.storage": self.storage_alias,
                  "storage_guard.category": "record"},
            context={**data, "message": redact(str(exc))},
            fingerprint=["storage_guard", "record_failed", code])
        if logger.isEnabledFor(logging.ERROR):
            self._log(logging.ERROR, "record_failed %s %s: could not write the SaveAttempt row: "
                      "%s: %s", self.operation, self.short_key, code, redact(str(exc)),
                      event="record_failed", error_code=code)

    # ------------------------------------------------------------------ shared pieces
    def _announce(self, status: str, code: str, outcome: Outcome | None) -> None:
        """The end of a save or redelivery: counted (``count_saves``) and sent as
        ``signals.save_finished`` (a signal with no receivers costs a check)."""
        if not self.is_write:
            return
        attempts = outcome.attempt_count if outcome else 0
        duration_ms = outcome.duration_ms if outcome else 0.0
        if _counter is not None:
            try:
                _counter(self, status, code, attempts, duration_ms)
            except Exception:  # counting must never fail a save
                logger.warning("metrics_failed: a save could not be counted", exc_info=True,
                               extra={"event": "metrics_failed"})
        signals.save_finished.send_robust(SaveTrace, trace=self, status=status,
                                          error_code=code, attempts=attempts,
                                          duration_ms=duration_ms)

    def _outcome_fields(self, outcome: Outcome, event: str, status: str) -> dict:
        result = outcome.classification
        return {"event": event, "status": status, "error_code": result.code,
                "transient": result.transient, "category": result.category,
                "attempt": outcome.attempt_count, "attempts": outcome.attempt_count,
                "codes": [a.code for a in outcome.attempts],
                "duration_ms": round(outcome.duration_ms, 2), "request_id": result.request_id,
                "host_id": result.host_id, "sha256": self.sha256,
                "content_type": self.content_type}

    def _capture(self, outcome: Outcome, status: str, *, level: str) -> str | None:
        result = outcome.classification
        context = {**self._sentry_context(), "status": status, "error_code": result.code,
                   "message": redact(result.message),
                   "attempts": [a.as_dict() for a in outcome.attempts],
                   "duration_ms": round(outcome.duration_ms, 2),
                   "error_response": safe_response(result.response),
                   "request_id": result.request_id, "host_id": result.host_id}
        return sentry.capture_failure(
            outcome.error, context=context, fingerprint=self._fingerprint(result.code),
            tags=self._sentry_tags(result.code, result.transient, result.category,
                                   outcome.attempt_count), level=level, scrub=redact)

    def _fingerprint(self, code: str) -> list[str]:
        return ["storage_guard", self.operation, code]

    def _sentry_tags(self, code: str, transient: bool, category: str, attempts: int) -> dict:
        return {"storage_guard.error_code": code,
                "storage_guard.transient": "true" if transient else "false",
                "storage_guard.category": category,
                "storage_guard.attempts": str(attempts),
                "storage_guard.operation": self.operation,
                "storage_guard.storage": self.storage_alias or "-",
                "storage_guard.size_bucket": size_bucket(self.size),
                "storage_guard.key_bytes_bucket": key_bytes_bucket(self.key_bytes)}

    def _sentry_context(self) -> dict:
        return {"operation": self.operation, "storage": self.storage_alias,
                "key": escape_controls(self.key),
                "key_bytes": self.key_bytes, "size": self.size,
                "content_type": self.content_type, "sha256": self.sha256,
                "record_id": self.record_id, "trace_id": self.trace_id}

    def _sentry_data(self, result: Classification | None, **extra) -> dict:
        data = {"operation": self.operation, "storage": self.storage_alias,
                "key": self.short_key, "key_bytes": self.key_bytes, "size": self.size,
                "trace_id": self.trace_id, **extra}
        if result is not None:
            data.update(error_code=result.code, transient=result.transient,
                        request_id=result.request_id)
        return data


# What counts every save's end (integrations.metrics.count_save, when prometheus-client is
# installed): called directly, a signal's dispatch would double what counting costs.
_counter = None


def count_saves(counter) -> None:
    """Have ``counter(trace, status, error_code, attempts, duration_ms)`` called at the end of
    every save and redelivery (None: no longer)."""
    global _counter
    _counter = counter


def _emit(level: int, msg: str, args: tuple, fields: dict) -> None:
    """Hand one line to ``logger`` (enabled for ``level``), ``fields`` as its extra attributes."""
    if type(logger).makeRecord is not _STOCK_MAKE_RECORD:  # a logger class of its own
        logger.handle(logger.makeRecord(logger.name, level, _CALLER.co_filename,
                                        _CALLER.co_firstlineno, msg, args, None, "_log",
                                        fields))
        return
    # What Logger.makeRecord does, without checking each field's name against the record's
    # attributes: these names are ours, and tests/test_logging.py checks none collides.
    record = logging.getLogRecordFactory()(logger.name, level, _CALLER.co_filename,
                                           _CALLER.co_firstlineno, msg, args, None, "_log")
    record.__dict__.update(fields)
    logger.handle(record)


_CALLER = SaveTrace._log.__code__  # the caller every trace line names (file, line, function)
_STOCK_MAKE_RECORD = logging.Logger.makeRecord
