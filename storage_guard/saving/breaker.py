"""A circuit breaker per endpoint and bucket, its state in Django's cache so processes agree.

Closed: requests flow. A transient failure starts (or extends) a *run*: a shared count and the
time of the run's first failure. Every success whose request started while a run was visible
ends the run. The circuit opens when a run holds ``threshold`` failures **and** has lasted
``window`` seconds: no request that started after the run began got through in that time. A
success that was already in flight when the run began cannot end it (its read of the cache was
clean, and a healthy success writes nothing), which is why one quick burst of failures never
opens the circuit: random failures spread over many successes (a flaky but healthy endpoint)
never survive the window; an outage does.

Open: until the next probe time every operation fails at once with ``CircuitOpen`` and sends
nothing. Then one caller (whoever wins ``cache.add`` on the probe key) sends a probe. Its
success closes the circuit for every process at once; its failure opens it again for twice the
previous cooldown, starting at ``initial_cooldown`` (about 1 s) and capped at ``cooldown``, so
a short outage is over for the callers within seconds and a long one costs one probe per
``cooldown``. An operator's delivery (``retry_failed_saves``, "Retry now") may force the probe
(``operator_probe``).

The breaker fails open: any error of the cache reads as "closed" and the request goes ahead.
After a cache error this process stops asking that cache for ``cache_backoff`` seconds (one
warning per period), so a cache that is down or silent costs one timeout per period, not one per
request. Set socket timeouts on the cache (``docs/failure.md``).

Cost: a healthy success writes nothing, and reads the cache (one ``get_many``) only when this
process has not found the circuit closed and clean (no open state, no failures) in the last
``refresh`` seconds (``BREAKER_REFRESH``, 0.1 s): every breaker of this process on the same cache
and circuit shares that memo (``clean_memo``), so N healthy saves within one period cost one read.
What this process does that changes or reveals a non-clean state (a transient failure, opening,
a failed probe, closing, ``open()``, ``reset()``, a read that sees failures or an open state, an
error of the cache) forgets the memo at once, so its own next attempt reads the cache. What other
processes do is seen later, by at most ``refresh``: a circuit another process opened is honoured
here at most ``refresh`` after it opened, and a run of failures that started elsewhere is ended
by a success here at most ``refresh`` after it began (a success that skipped the read cannot see
the run, like one already in flight when it began). Keep ``refresh`` well under ``window``
(check ``storage_guard.W008`` warns at half of it), or a flaky but healthy endpoint's runs could
survive the window. ``refresh = 0`` reads the cache before every attempt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from dataclasses import dataclass

from django.core.cache import caches

from storage_guard.errors import CircuitOpen
from storage_guard.log import logger
from storage_guard.options import is_number
from storage_guard.saving.classification import Classification

CLOSED, OPEN, HALF_OPEN, UNKNOWN = "closed", "open", "half-open", "unknown"
UNAVAILABLE = object()  # what a cache call returns when the cache failed or is being skipped


@dataclass(frozen=True)
class BreakerSnapshot:
    """What an operator needs to know about one circuit (admin banner, doctor, report, metrics).

    ``state`` is ``closed``, ``open``, ``half-open`` or ``unknown`` (the cache could not be read).
    Times are Unix timestamps; ``next_probe_in`` is seconds until a probe may be sent (0 when
    one may be sent now, None when the circuit is closed). ``failures`` is the current run of
    failures (closed) or the failures that opened it plus the failed probes (open);
    ``cooldown`` is the wait after the latest failed probe (open) or the first wait (closed).
    """

    name: str
    state: str
    failures: int = 0
    opened_at: float | None = None
    next_probe_in: float | None = None
    cooldown: float = 0.0


class CacheHealth:
    """Per process and cache alias: after a cache error, leave that cache alone for a while.

    When the back-off period is over, exactly one caller tries the cache again (the others keep
    skipping it until that try has told whether the cache is back).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._down_until: dict[str, float] = {}
        self._warned_at: dict[str, float] = {}

    def may_call(self, alias: str, backoff: float) -> bool:
        until = self._down_until.get(alias)
        if until is None:
            return True
        now = time.monotonic()
        if now < until:
            return False
        with self._lock:
            if self._down_until.get(alias) != until:
                return False  # another caller is trying the cache again
            self._down_until[alias] = now + backoff
        return True

    def failed(self, alias: str, backoff: float, exc: BaseException, breaker: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._down_until[alias] = now + backoff
            warn = now - self._warned_at.get(alias, -backoff) >= backoff
            if warn:
                self._warned_at[alias] = now
        if warn:  # the exception's text may name hosts or URLs: only its type is logged
            logger.warning(
                "breaker_unavailable: cache %r failed (%s); circuit %s treated as closed, S3 "
                "requests go ahead unguarded; the cache is not asked again for %.0f s",
                alias, type(exc).__name__, breaker, backoff,
                extra={"event": "breaker_unavailable", "cache": alias, "breaker": breaker,
                       "error_code": type(exc).__name__, "backoff": backoff})

    def succeeded(self, alias: str) -> None:
        if alias not in self._down_until:
            return
        with self._lock:
            was_down = self._down_until.pop(alias, None) is not None
        if was_down:
            logger.info("breaker_available: cache %r answers again", alias,
                        extra={"event": "breaker_available", "cache": alias})

    def reset(self) -> None:
        with self._lock:
            self._down_until.clear()
            self._warned_at.clear()


cache_health = CacheHealth()


class CleanMemo:
    """Per process and circuit (cache alias, key prefix): when a read last found it closed and
    clean, so that attempts in the next ``refresh`` seconds need not read the cache again.

    ``forget(key)`` drops the memo at once and counts a change; ``remember`` keeps a read's
    result only if no change was counted since before that read began, so a read that raced with
    this process's own failure, opening or reset is never remembered as clean. Times are
    ``time.monotonic()`` (``clock``), taken when the read began, so a memo's age is never
    understated.

    A forked child inherits the memo as it is: nothing to do, since monotonic times are the
    machine's and stay valid in the child (the memo is at most ``refresh`` old there too). Only
    the lock is made new in the child, in case a thread of the parent held it at the fork.
    """

    def __init__(self):
        self.clock = time.monotonic  # a test may move it by hand
        self._lock = threading.Lock()
        self._clean_at: dict[tuple[str, str], float] = {}
        self._changes: dict[tuple[str, str], int] = {}

    def fresh(self, key: tuple[str, str], refresh: float) -> bool:
        """Did a read find this circuit clean less than ``refresh`` seconds ago? (No lock: one
        dictionary lookup on every healthy attempt.)"""
        at = self._clean_at.get(key)
        return at is not None and self.clock() - at < refresh

    def changes(self, key: tuple[str, str]) -> int:
        return self._changes.get(key, 0)

    def remember(self, key: tuple[str, str], read_at: float, changes: int) -> None:
        """A read begun at ``read_at`` (monotonic), when ``changes(key)`` was ``changes``, found
        the circuit clean."""
        with self._lock:
            if self._changes.get(key, 0) == changes:
                self._clean_at[key] = read_at

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._changes[key] = self._changes.get(key, 0) + 1
            self._clean_at.pop(key, None)

    def reset(self) -> None:
        with self._lock:
            self._clean_at.clear()
            self._changes.clear()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()


clean_memo = CleanMemo()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=clean_memo._after_fork_in_child)


def forget_on_settings_change(*, setting: str, **kwargs) -> None:
    """Receiver for ``setting_changed`` (tests): a cache alias may now name another cache."""
    if setting in ("CACHES", "STORAGE_GUARD"):
        clean_memo.reset()


class CircuitBreaker:
    def __init__(self, name: str, *, threshold: int, cooldown: float, cache_alias: str = "default",
                 probe_timeout: float = 30.0, window: float = 1.0, initial_cooldown: float = 1.0,
                 cache_backoff: float = 30.0, refresh: float = 0.1, clock=time.time):
        self.name = name
        digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:16]
        prefix = f"storage_guard:cb:{digest}"
        self.failures_key = f"{prefix}:failures"
        self.since_key = f"{prefix}:since"
        self.opened_key = f"{prefix}:opened"
        self.probe_key = f"{prefix}:probe"
        # Shared by every breaker of this process on this cache and circuit (CleanMemo).
        self.memo_key = (cache_alias, prefix)
        self.threshold = threshold
        self.cooldown = cooldown
        self.initial_cooldown = min(initial_cooldown, cooldown)
        self.window = window
        self.cache_alias = cache_alias
        self.cache_backoff = cache_backoff
        self.probe_timeout = probe_timeout
        # Seconds a clean read is trusted by this process; 0 (or a value the system checks
        # report, E002/E003) reads before every attempt.
        self.refresh = refresh if is_number(refresh) and refresh > 0 else 0.0
        self.clock = clock  # Unix time: the state is shared between processes
        self._local = threading.local()  # per thread: what before_attempt saw

    @property
    def cache(self):
        return caches[self.cache_alias]

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    @property
    def run_ttl(self) -> int:
        return max(60, int(self.window * 10))

    @property
    def state_ttl(self) -> int:
        return max(60, int(self.cooldown * 10))

    # ----------------------------------------------------------------- for operators
    def state(self) -> str:
        return self.snapshot().state

    def snapshot(self) -> BreakerSnapshot:
        """The circuit's state for display; never raises (a cache error reads as ``unknown``)."""
        values = self._cache_call(lambda c: c.get_many([self.failures_key, self.opened_key]))
        if values is UNAVAILABLE:
            return BreakerSnapshot(self.name, UNKNOWN, cooldown=self.initial_cooldown)
        opened = values.get(self.opened_key)
        if opened is not None or values.get(self.failures_key):
            clean_memo.forget(self.memo_key)  # this process's attempts read again at once
        if opened is None:
            return BreakerSnapshot(self.name, CLOSED, failures=values.get(self.failures_key) or 0,
                                   cooldown=self.initial_cooldown)
        remaining = max(opened["probe_at"] - self.clock(), 0.0)
        return BreakerSnapshot(self.name, OPEN if remaining > 0 else HALF_OPEN,
                               failures=opened["failures"], opened_at=opened["opened_at"],
                               next_probe_in=round(remaining, 3), cooldown=opened["cooldown"])

    @contextlib.contextmanager
    def operator_probe(self):
        """Inside this block, this thread's next attempt is sent even if the circuit is open:
        an operator asked for a delivery, so it serves as the probe."""
        self._local.force_probe = True
        try:
            yield
        finally:
            self._local.force_probe = False

    # ----------------------------------------------------------------- the guard protocol
    def before_attempt(self) -> None:
        """Raise ``CircuitOpen`` unless a request may be sent now (always allowed when the
        cache does not answer)."""
        local = self._local
        local.probing = local.dirty = False
        forced, local.force_probe = getattr(local, "force_probe", False), False
        if not self.enabled:
            return
        if not forced and clean_memo.fresh(self.memo_key, self.refresh):
            return  # found closed and clean less than `refresh` ago (module docstring)
        changes, read_at = clean_memo.changes(self.memo_key), clean_memo.clock()
        values = self._cache_call(lambda c: c.get_many([self.failures_key, self.opened_key]))
        if values is UNAVAILABLE:
            return
        opened = values.get(self.opened_key)
        local.dirty = bool(values.get(self.failures_key)) or opened is not None
        if local.dirty:
            clean_memo.forget(self.memo_key)
        elif self.refresh > 0:
            clean_memo.remember(self.memo_key, read_at, changes)
        if opened is None:
            return
        remaining = opened["probe_at"] - self.clock()
        if forced:
            local.probing = True
            return
        if remaining > 0:
            raise CircuitOpen(f"circuit {self.name} is open; next probe in {remaining:.1f}s",
                              breaker=self.name, retry_after=round(remaining, 3))
        won = self._cache_call(lambda c: c.add(self.probe_key, 1, timeout=self.probe_timeout))
        if won is False:
            raise CircuitOpen(f"circuit {self.name} is half-open and another caller is probing",
                              breaker=self.name, retry_after=0)
        local.probing = won is True

    def after_success(self) -> None:
        """A probe's success closes the circuit; a success that saw a run of failures ends it;
        a success that saw nothing writes nothing."""
        local = self._local
        probing, dirty = getattr(local, "probing", False), getattr(local, "dirty", False)
        local.probing = local.dirty = False
        if probing:
            self._close()
        elif dirty:
            self._cache_call(lambda c: c.delete_many([self.failures_key, self.since_key]))

    def after_failure(self, result: Classification) -> None:
        local = self._local
        probing = getattr(local, "probing", False)
        local.probing = False
        if not self.enabled or result.code == "CircuitOpen":
            return
        if probing:  # a permanent error is an answer: the endpoint is up
            self._reopen() if result.transient else self._close()
            return
        if not result.transient:
            return
        local.dirty = True
        # Forgotten before counting (this process's next attempts read the run) and after (a read
        # that began before the count was written must not be remembered as clean).
        clean_memo.forget(self.memo_key)
        failures, since = self._count_failure()
        clean_memo.forget(self.memo_key)
        if failures >= self.threshold and since is not None and \
                self.clock() - since >= self.window:
            self._open(failures, since)

    # ----------------------------------------------------------------- transitions
    def open(self, failures: int | None = None, cooldown: float | None = None) -> None:
        """Open the circuit now, for ``cooldown`` (default: the initial cooldown)."""
        state = self._open_state(failures or 0, cooldown=cooldown)
        self._changing(lambda c: c.set(self.opened_key, state, timeout=self.state_ttl))

    def reset(self) -> None:
        self._changing(lambda c: c.delete_many(
            [self.failures_key, self.since_key, self.opened_key, self.probe_key]))

    def _open_state(self, failures: int, *, opened_at: float | None = None,
                    cooldown: float | None = None, since: float | None = None) -> dict:
        """The value of the open key: the next probe is due ``cooldown`` after ``since`` (the
        run's first failure, or the previous probe's due time), or now if that has passed.

        Counting from there, not from when a late probe failed, keeps the schedule at 1, 3, 7,
        15 s ... after the outage began: a 5 s outage is followed by at most 2 s of refusals.
        """
        now = self.clock()
        cooldown = self.initial_cooldown if cooldown is None else cooldown
        due = (now if since is None else since) + cooldown
        return {"opened_at": now if opened_at is None else opened_at, "cooldown": cooldown,
                "probe_at": max(due, now), "failures": failures}

    def _open(self, failures: int, since: float) -> None:
        state = self._open_state(failures, since=since)
        added = self._changing(lambda c: c.add(self.opened_key, state, timeout=self.state_ttl))
        if added is True:  # the first to see the outage says so; the others find it open
            logger.warning("circuit %s opened after %s consecutive transient failures; next "
                           "probe in %.1fs", self.name, failures,
                           state["probe_at"] - state["opened_at"],
                           extra={"event": "circuit_opened", "breaker": self.name,
                                  "failures": failures, "cooldown": state["cooldown"]})

    def _reopen(self) -> None:
        """A probe failed: open again for twice the previous cooldown (capped)."""
        clean_memo.forget(self.memo_key)
        previous = self._cache_call(lambda c: c.get(self.opened_key))
        if previous is UNAVAILABLE:
            return
        previous = previous or self._open_state(0)
        cooldown = min(max(previous["cooldown"] * 2, self.initial_cooldown), self.cooldown)
        due = previous["probe_at"] + cooldown
        state = self._open_state(previous["failures"] + 1, opened_at=previous["opened_at"],
                                 cooldown=cooldown,
                                 since=previous["probe_at"] if due > self.clock() else None)

        def write(cache):
            cache.set(self.opened_key, state, timeout=self.state_ttl)
            cache.delete(self.probe_key)

        self._changing(write)
        logger.warning("circuit %s probe failed; next probe in %.1fs", self.name,
                       state["probe_at"] - self.clock(),
                       extra={"event": "circuit_probe_failed", "breaker": self.name,
                              "failures": state["failures"], "cooldown": cooldown})

    def _close(self) -> None:
        done = self._changing(lambda c: c.delete_many(
            [self.failures_key, self.since_key, self.opened_key, self.probe_key]))
        if done is not UNAVAILABLE:
            logger.info("circuit %s closed", self.name,
                        extra={"event": "circuit_closed", "breaker": self.name})

    def _count_failure(self) -> tuple[int, float | None]:
        """Add one failure to the current run (starting it if needed): (count, run start)."""
        now = self.clock()

        def count(cache):
            cache.add(self.since_key, now, timeout=self.run_ttl)
            cache.add(self.failures_key, 0, timeout=self.run_ttl)
            try:
                failures = cache.incr(self.failures_key)
            except ValueError:  # a success ended the run between add and incr
                cache.set(self.failures_key, 1, timeout=self.run_ttl)
                failures = 1
            if failures < self.threshold:
                return failures, None
            return failures, cache.get(self.since_key)

        counted = self._cache_call(count)
        return (0, None) if counted is UNAVAILABLE else counted

    def _changing(self, fn):
        """A write that changes the circuit's state: the memo is forgotten before it (this
        process's next attempts read the cache) and after it (a read begun before the write
        must not be remembered as clean)."""
        clean_memo.forget(self.memo_key)
        try:
            return self._cache_call(fn)
        finally:
            clean_memo.forget(self.memo_key)

    # ----------------------------------------------------------------- failing open
    def _cache_call(self, fn):
        """``fn(cache)``, or ``UNAVAILABLE`` when the cache fails or is being left alone."""
        if not cache_health.may_call(self.cache_alias, self.cache_backoff):
            return UNAVAILABLE
        try:
            value = fn(self.cache)
        except Exception as exc:  # noqa: BLE001 - the breaker must never fail a request
            clean_memo.forget(self.memo_key)  # the state is unknown now: read it when back
            cache_health.failed(self.cache_alias, self.cache_backoff, exc, self.name)
            return UNAVAILABLE
        cache_health.succeeded(self.cache_alias)
        return value
