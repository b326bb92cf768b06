"""Timeouts that fit the payload, and the botocore clients that apply them.

A request that carries ``n`` bytes may wait ``floor + n / rate`` seconds for S3's answer, at most
``ceiling``: a stalled 2 KB PUT is given up after the floor (1.5 s with the default preset)
while an 8 MB part on a slow link still gets the time it needs. After a timeout the next try
of the same request waits ``GROWTH`` times longer (still at most the ceiling), in case the
link is slow rather than stalled. No try waits past the operation's deadline.

botocore applies its ``read_timeout`` per client, so every timeout is rounded to a short ladder
of classes (``1, 1.5, 2, 3, 4, 6, 8, 12 ...`` seconds) and each class gets its own client,
built once per thread from that thread's session and kept: a success path that keeps sending
the same kind of payload keeps reusing the same client and its open connections.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from dataclasses import dataclass

from botocore.config import Config

GROWTH = 2.0  # a retry after a timeout waits this many times longer
MIN_TIMEOUT = 0.25  # the shortest class: below it a socket timeout is noise


@dataclass(frozen=True)
class TimeoutRule:
    floor: float
    rate: float  # bytes per second: the slowest transfer still taken for a healthy link
    ceiling: float

    def seconds(self, size: int, timeouts_before: int = 0) -> float:
        """How long a request carrying ``size`` bytes may wait, after that many timeouts."""
        base = self.floor + max(size, 0) / self.rate
        return min(self.ceiling, base * GROWTH ** timeouts_before)

    def allowance(self, size: int | None) -> float:
        """Time the bytes themselves need at the slowest healthy rate (added to a deadline)."""
        return size / self.rate if size else 0.0


@functools.lru_cache(maxsize=1024)  # a pure function of its arguments, asked on every PUT
def timeout_class(seconds: float, *, up: bool = True) -> float:
    """``seconds`` rounded to the ladder ``2**k`` and ``1.5 * 2**k`` (up, or down when capped).

    Rounding up forgives 5 %, so a few bytes over the floor keep the floor's class.
    """
    seconds = max(seconds, MIN_TIMEOUT)
    exponent = math.floor(math.log2(seconds))
    steps = [2.0 ** exponent, 1.5 * 2.0 ** exponent, 2.0 ** (exponent + 1)]
    if up:
        return next(s for s in steps if s >= seconds / 1.05)
    return max(s for s in steps if s <= seconds * 1.000001)


class AttemptTimeouts:
    """The timeout of each try of one request, ending no later than ``ends_at``.

    Passed to ``call_with_retries(timeouts=...)``, which asks ``start(number)`` before each try
    and records the answer in the attempt log; the request reads ``current``.
    """

    def __init__(self, rule: TimeoutRule, size: int, *, ends_at: float | None = None,
                 clock=time.monotonic):
        self.rule, self.size, self.ends_at, self.clock = rule, size, ends_at, clock
        self.timed_out = 0
        self.current = self._first = timeout_class(rule.seconds(size))

    def start(self, number: int) -> float:
        if self.timed_out:
            self.current = timeout_class(self.rule.seconds(self.size, self.timed_out))
        else:  # no timeout yet: the class worked out for the first try
            self.current = self._first
        if self.current > self.rule.ceiling:
            self.current = timeout_class(self.rule.ceiling, up=False)
        if self.ends_at is not None:
            left = self.ends_at - self.clock()
            if left < self.current:
                self.current = timeout_class(left, up=False)
        return self.current

    def failed(self, classification) -> None:
        if classification.category == "timeout":
            self.timed_out += 1


class ClientSet:
    """One botocore client per timeout class and thread, built from the storage's session.

    ``session()`` is the thread's one boto3 session, which the storage's own resource (the
    client reads use) is built from as well, so the service model is loaded once per thread.
    """

    def __init__(self, storage):
        self._storage = storage
        self._local = threading.local()

    def __getstate__(self):
        return {"_storage": self._storage}

    def __setstate__(self, state):
        self._storage = state["_storage"]
        self._local = threading.local()

    def session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._storage._new_session()
        return session

    def client(self, read_timeout: float):
        storage = self._storage
        if read_timeout == storage.read_timeout:
            return storage.client  # the client reads use: one pool for both
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        found = clients.get(read_timeout)
        if found is None:
            found = clients[read_timeout] = self.session().client(
                "s3", region_name=storage.region_name, use_ssl=storage.use_ssl,
                endpoint_url=storage.endpoint_url, verify=storage.verify,
                config=storage.client_config.merge(Config(read_timeout=read_timeout)))
        return found
