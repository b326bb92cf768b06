"""Bounded retries: exponential backoff with full jitter, a total deadline, one table to classify.

botocore is configured to send exactly one request per call (see ``GuardedS3Storage``), so the
loop here is the only place that retries: ``max_attempts`` here equals requests on the wire.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from storage_guard.errors import CircuitOpen
from storage_guard.saving.classification import Classification, classify


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    deadline: float = 30.0
    backoff_base: float = 0.2
    backoff_cap: float = 5.0
    attempt_budget: float = 0.0  # a retry starts only if this much time is left before the deadline

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(n-1))] for the n-th retry."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** (retry_number - 1)))
        return (rng or random).uniform(0, ceiling)


@dataclass
class AttemptInfo:
    number: int
    code: str
    duration_ms: float
    delay_ms: float = 0.0
    timeout: float | None = None  # seconds this try could wait for S3's answer
    step: str = ""  # which request of a multi-request save ("part 3"), empty for a single one

    def as_dict(self) -> dict:
        entry = {"n": self.number, "code": self.code, "duration_ms": round(self.duration_ms, 2),
                 "delay_ms": round(self.delay_ms, 2)}
        if self.timeout is not None:
            entry["timeout_s"] = self.timeout
        if self.step:
            entry["step"] = self.step
        return entry


@dataclass
class Outcome:
    value: object = None
    error: BaseException | None = None
    classification: Classification | None = None
    attempts: list[AttemptInfo] = field(default_factory=list)
    duration_ms: float = 0.0
    refused: CircuitOpen | None = None  # the open circuit that stopped the loop (nothing sent)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def attempt_count(self) -> int:
        return len(self.attempts)


class RetryListener:
    """Hooks for observers; the default does nothing."""

    def attempt_started(self, number: int) -> None: ...

    def attempt_failed(self, info: AttemptInfo, classification: Classification,
                       will_retry: bool) -> None: ...


def call_with_retries(fn: Callable[[], object], policy: RetryPolicy, *,
                      guard=None, listener: RetryListener | None = None,
                      sleep=time.sleep, clock=time.monotonic, timeouts=None) -> Outcome:
    """Call ``fn`` until it succeeds, fails permanently, runs out of attempts or of time.

    ``guard`` (a circuit breaker) is asked before every attempt and told every result. A
    refusal by an open circuit is not an attempt: nothing was sent, so it is not counted in
    ``attempts`` and does not replace the error of an earlier attempt; it ends the loop and is
    kept in ``refused`` (and is the outcome's error only when no attempt was made).
    ``timeouts`` (a ``timeouts.AttemptTimeouts``) picks each attempt's timeout, which ``fn``
    reads from it; the attempt log records it.
    """
    listener = listener or RetryListener()
    started = clock()
    outcome = Outcome()
    for number in range(1, policy.max_attempts + 1):
        if guard is not None and not _admitted(guard, outcome):
            break
        listener.attempt_started(number)
        timeout = timeouts.start(number) if timeouts is not None else None
        attempt_started = clock()
        try:
            outcome.value = fn()
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none is hidden
            info = AttemptInfo(number, "", (clock() - attempt_started) * 1000, timeout=timeout)
            result = classify(exc)
            if timeouts is not None:
                timeouts.failed(result)
            info.code = result.code
            outcome.attempts.append(info)
            outcome.error, outcome.classification = exc, result
            if guard is not None:
                guard.after_failure(result)
            delay = _next_delay(policy, number, result, started, clock)
            info.delay_ms = (delay or 0.0) * 1000
            listener.attempt_failed(info, result, will_retry=delay is not None)
            if delay is None:
                break
            sleep(delay)
        else:
            outcome.attempts.append(AttemptInfo(number, "OK", (clock() - attempt_started) * 1000,
                                                timeout=timeout))
            outcome.error = outcome.classification = None
            if guard is not None:
                guard.after_success()
            break
    outcome.duration_ms = (clock() - started) * 1000
    return outcome


def _admitted(guard, outcome: Outcome) -> bool:
    """Ask the guard; on a refusal note it on the outcome and say no."""
    try:
        guard.before_attempt()
    except CircuitOpen as exc:
        outcome.refused = exc
        if not outcome.attempts:
            outcome.error, outcome.classification = exc, classify(exc)
        return False
    return True


def _next_delay(policy: RetryPolicy, number: int, result: Classification,
                started: float, clock) -> float | None:
    """The pause before the next attempt, or None when there must be no next attempt."""
    if not result.transient or result.code == "CircuitOpen" or number >= policy.max_attempts:
        return None
    delay = policy.backoff(number)
    remaining = policy.deadline - (clock() - started)
    if remaining - delay < max(policy.attempt_budget, 0.0):
        return None
    return delay
