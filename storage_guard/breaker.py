"""A circuit breaker per endpoint and bucket, its state in Django's cache so processes agree.

Closed: requests flow; each transient failure adds one to a shared counter, each success clears
it. At ``threshold`` consecutive transient failures the circuit opens: for ``cooldown`` seconds
every operation fails at once with ``CircuitOpen`` and sends nothing. After the cooldown one
caller (whoever wins ``cache.add`` on the probe key) sends a probe request; its success closes
the circuit, its failure opens it for another cooldown.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

from django.core.cache import caches

from storage_guard.classification import Classification
from storage_guard.errors import CircuitOpen

logger = logging.getLogger("storage_guard")


@dataclass(frozen=True)
class BreakerSnapshot:
    """What an operator needs to know about one circuit (admin banner, doctor, report, metrics).

    ``state`` is ``closed``, ``open``, ``half-open`` or ``unknown`` (the cache could not be read).
    Times are Unix timestamps; ``next_probe_in`` is seconds until a probe may be sent (0 when
    one may be sent now, None when the circuit is closed).
    """

    name: str
    state: str
    failures: int = 0
    opened_at: float | None = None
    next_probe_in: float | None = None
    cooldown: float = 0.0


class CircuitBreaker:
    def __init__(self, name: str, *, threshold: int, cooldown: float, cache_alias: str = "default",
                 probe_timeout: float = 30.0):
        self.name = name
        digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:16]
        self.failures_key = f"storage_guard:cb:{digest}:failures"
        self.opened_key = f"storage_guard:cb:{digest}:opened"
        self.probe_key = f"storage_guard:cb:{digest}:probe"
        self.threshold = threshold
        self.cooldown = cooldown
        self.cache_alias = cache_alias
        self.probe_timeout = probe_timeout
        self._seen = threading.local()  # what before_attempt read, so success needs no read

    @property
    def cache(self):
        return caches[self.cache_alias]

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    def state(self) -> str:
        opened = self.cache.get(self.opened_key)
        if opened is None:
            return "closed"
        return "open" if time.time() < opened + self.cooldown else "half-open"

    def snapshot(self) -> BreakerSnapshot:
        """The circuit's state for display; never raises (a cache error reads as ``unknown``)."""
        try:
            failures, opened = self._read()
        except Exception:  # noqa: BLE001 - display must not fail because the cache did
            return BreakerSnapshot(self.name, "unknown", cooldown=self.cooldown)
        if opened is None:
            return BreakerSnapshot(self.name, "closed", failures=failures or 0,
                                   cooldown=self.cooldown)
        remaining = max(opened + self.cooldown - time.time(), 0.0)
        return BreakerSnapshot(self.name, "open" if remaining > 0 else "half-open",
                               failures=failures or 0, opened_at=opened,
                               next_probe_in=round(remaining, 3), cooldown=self.cooldown)

    def before_attempt(self) -> None:
        """Raise ``CircuitOpen`` unless a request may be sent now."""
        if not self.enabled:
            return
        failures, opened = self._read()
        self._seen.dirty = bool(failures) or opened is not None
        if opened is None:
            return
        remaining = opened + self.cooldown - time.time()
        if remaining > 0:
            raise CircuitOpen(f"circuit {self.name} is open for another {remaining:.1f}s",
                              breaker=self.name, retry_after=round(remaining, 3))
        if not self.cache.add(self.probe_key, 1, timeout=self.probe_timeout):
            raise CircuitOpen(f"circuit {self.name} is half-open and another caller is probing",
                              breaker=self.name, retry_after=0)

    def after_success(self) -> None:
        """Clear the count (and close the circuit) only if before_attempt saw anything to clear:
        a healthy success path costs one cache read in all."""
        if not self.enabled or not getattr(self._seen, "dirty", True):
            return
        self._seen.dirty = False
        failures, opened = self._read()
        if failures or opened is not None:
            self.cache.delete_many([self.failures_key, self.opened_key, self.probe_key])
            if opened is not None:
                logger.info("circuit %s closed", self.name,
                            extra={"event": "circuit_closed", "breaker": self.name})

    def after_failure(self, result: Classification) -> None:
        if not self.enabled or result.code == "CircuitOpen" or not result.transient:
            return
        self._seen.dirty = True
        self.cache.add(self.failures_key, 0, timeout=None)
        try:
            failures = self.cache.incr(self.failures_key)
        except ValueError:  # evicted between add and incr
            self.cache.set(self.failures_key, 1, timeout=None)
            failures = 1
        probing = self.cache.get(self.opened_key) is not None
        if failures >= self.threshold or probing:
            self.open(failures)

    def open(self, failures: int | None = None) -> None:
        self.cache.set(self.opened_key, time.time(), timeout=max(int(self.cooldown * 10), 60))
        self.cache.delete(self.probe_key)
        logger.warning("circuit %s opened after %s consecutive transient failures", self.name,
                       failures, extra={"event": "circuit_opened", "breaker": self.name,
                                        "failures": failures, "cooldown": self.cooldown})

    def reset(self) -> None:
        self.cache.delete_many([self.failures_key, self.opened_key, self.probe_key])

    def _read(self):
        values = self.cache.get_many([self.failures_key, self.opened_key])
        return values.get(self.failures_key, 0), values.get(self.opened_key)
