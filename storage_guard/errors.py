"""Errors raised by storage_guard, and the one table that classifies any storage error.

Every error raised to a caller carries a machine-readable ``code``, whether it is
``transient``, a ``category`` and the context it happened in. Configuration errors are
Django's ``ImproperlyConfigured`` and deliberately stay outside this hierarchy so that
nothing that catches ``StorageGuardError`` swallows them.
"""

from __future__ import annotations

from storage_guard.saving.classification import Classification, classify

__all__ = [
    "CircuitOpen",
    "Classification",
    "HeadersTooLarge",
    "InvalidHeader",
    "InvalidKey",
    "KeyTooLong",
    "SaveFailed",
    "SaveRejected",
    "StorageGuardError",
    "classify",
]


class StorageGuardError(OSError):
    """Base class. Subclasses ``OSError``, which Django callers of storages already catch."""

    code = "StorageGuardError"
    transient = False
    category = "client"

    def __init__(self, message: str = "", **context):
        super().__init__(message or self.__class__.__doc__)
        self.message = message
        self.context = context

    def __getattr__(self, name):
        try:
            return self.__dict__["context"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def as_dict(self) -> dict:
        return {"code": self.code, "transient": self.transient, "category": self.category,
                "message": self.message, **self.context}


class SaveFailed(StorageGuardError):
    """A save gave up after retrying or on a permanent error; its bytes are stashed."""

    def __init__(self, message: str, *, code: str, transient: bool, category: str,
                 attempts: int, record_id: int | None, key: str, **context):
        super().__init__(message, attempts=attempts, record_id=record_id, key=key, **context)
        self.code = code
        self.transient = transient
        self.category = category

    def __str__(self) -> str:
        return (f"[{self.code}] saving {self.context['key']!r} failed after "
                f"{self.context['attempts']} attempt(s): {self.message} ({self._where_kept()})")

    def _where_kept(self) -> str:
        if self.context["record_id"] is not None:
            return f"record {self.context['record_id']}, bytes stashed"
        if self.context.get("kept"):
            return (f"no record: the database failed; bytes kept in the last-resort spool as "
                    f"entry {self.context['spool_entry']}")
        return "no record: the database failed; the bytes could NOT be kept"


class SaveRejected(StorageGuardError, ValueError):
    """A save S3 would refuse, refused by us before any request was sent."""

    category = "validation"


class KeyTooLong(SaveRejected):
    """The object key is longer than the configured byte limit."""

    code = "KeyTooLong"


class HeadersTooLarge(SaveRejected):
    """User metadata or the whole request header section is over its byte limit."""

    code = "HeadersTooLarge"


class InvalidHeader(SaveRejected):
    """A header name or value holds a character HTTP or S3 cannot carry (CR, LF, NUL...)."""

    code = "InvalidHeader"


class InvalidKey(SaveRejected):
    """The key holds a character S3 cannot take (NUL, another control character, a lone
    surrogate)."""

    code = "InvalidKey"


class CircuitOpen(StorageGuardError):
    """The circuit breaker for this endpoint and bucket is open: no request was sent."""

    code = "CircuitOpen"
    transient = True
    category = "unavailable"
