"""Prometheus metrics, when prometheus-client is installed (``django-storage-guard[metrics]``).

Without the package nothing here imports it: ``AppConfig.ready`` installs the metrics only when
``prometheus_client`` can be imported, and ``metrics_view`` then answers 501.

Counted in the process that saves (``telemetry`` calls ``count_save``, which queues the save; a
thread applies the queue every ``APPLY_INTERVAL`` seconds, a scrape and the exit apply it at
once), so under gunicorn each worker counts its own; set ``PROMETHEUS_MULTIPROC_DIR`` and the
view adds up every process's files:

* ``storage_guard_saves_total{storage, operation, status, error_code}``
* ``storage_guard_save_duration_seconds{storage, operation, status}`` (histogram)
* ``storage_guard_save_attempts{storage, operation}`` (histogram)

Computed when scraped (``StorageGuardCollector``), from state every process shares:

* ``storage_guard_breaker_state{storage, breaker, state}``: 1 for the circuit's current state
  (``closed``, ``open``, ``half-open``, ``unknown``), from ``CircuitBreaker.snapshot()``, and
  ``storage_guard_breaker_failures``.
* ``storage_guard_unresolved_saves{status}``, ``storage_guard_stashed_saves``,
  ``storage_guard_stashed_bytes`` and ``storage_guard_unresolved_oldest_age_seconds``: a few
  queries on the ``(status, created_at)`` index, each counting at most ``METRICS_COUNT_LIMIT``
  rows, so a scrape stays cheap on a table of millions. ``storage_guard_records_up`` is 0 when
  the record database could not be read (the scrape still answers).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections import deque

from django.http import HttpResponse
from django.utils import timezone

from storage_guard import conf
from storage_guard.log import logger

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
    from prometheus_client.core import GaugeMetricFamily
except ImportError:  # the optional extra is not installed
    prometheus_client = None


BREAKER_STATES = ("closed", "open", "half-open", "unknown")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15)

_installed = False


def available() -> bool:
    return prometheus_client is not None


if prometheus_client is not None:
    SAVES = Counter("storage_guard_saves", "Saves and redeliveries that ended, by outcome.",
                    ["storage", "operation", "status", "error_code"])
    DURATION = Histogram("storage_guard_save_duration_seconds",
                         "Time a save took, all attempts and pauses included.",
                         ["storage", "operation", "status"], buckets=DURATION_BUCKETS)
    ATTEMPTS = Histogram("storage_guard_save_attempts", "Attempts a save took.",
                         ["storage", "operation"], buckets=ATTEMPT_BUCKETS)


def install() -> bool:
    """Listen to saves and register the scrape-time collector (once; ``AppConfig.ready``)."""
    global _installed
    if prometheus_client is None or _installed:
        return _installed
    from storage_guard.saving import telemetry

    telemetry.count_saves(count_save)
    os.register_at_fork(after_in_child=_after_fork)
    atexit.register(apply_pending)  # a worker's last saves reach its multi-process files
    prometheus_client.REGISTRY.register(COLLECTOR)
    _installed = True
    return True


# ----------------------------------------------------------------------------- counting saves
# A save's end is queued here and applied to the metrics later, in one warm loop: by the
# applier thread every APPLY_INTERVAL seconds, by a scrape of this process before it reads them,
# and at exit. Queuing costs the save one append; three metric updates under their locks, run
# cold between two network waits, cost it tens of microseconds.
APPLY_INTERVAL = 1.0
_pending: deque = deque()  # (storage, operation, status, error_code, attempts, duration_ms)
_applier: threading.Thread | None = None
_applier_lock = threading.Lock()


def count_save(trace, status: str, error_code: str, attempts: int, duration_ms: float) -> None:
    """Count the end of a save or redelivery (``telemetry`` calls it for every one)."""
    _pending.append((trace.storage_alias or "-", trace.operation, status, error_code, attempts,
                     duration_ms))
    if _applier is None:
        _start_applier()


def apply_pending() -> int:
    """Apply every queued save to the metrics; how many there were."""
    applied = 0
    while True:
        try:
            storage, operation, status, code, attempts, duration_ms = _pending.popleft()
        except IndexError:
            return applied
        saves, duration, attempts_seen = _children(storage, operation, status, code)
        saves.inc()
        if duration is not None:  # a rejection was refused before any request
            duration.observe(duration_ms / 1000)
            attempts_seen.observe(attempts)
        applied += 1


def _start_applier() -> None:
    global _applier
    with _applier_lock:
        if _applier is None:
            _applier = threading.Thread(target=_apply_every_interval, daemon=True,
                                        name="storage_guard-metrics")
            _applier.start()


def _apply_every_interval() -> None:
    while True:
        time.sleep(APPLY_INTERVAL)
        try:
            apply_pending()
        except Exception:  # the thread must outlive a bad update
            logger.warning("metrics: queued saves could not be counted", exc_info=True,
                           extra={"event": "metrics_failed"})


def _after_fork() -> None:
    """The child counts its own saves: the parent's queue and thread stay the parent's."""
    global _applier, _applier_lock
    _pending.clear()
    _applier, _applier_lock = None, threading.Lock()


_CHILDREN: dict[tuple, tuple] = {}


def _children(storage: str, operation: str, status: str, error_code: str) -> tuple:
    """The metrics' children for one label set (``labels()`` validates and locks each time)."""
    key = (storage, operation, status, error_code)
    found = _CHILDREN.get(key)
    if found is None:
        rejected = status == "rejected"
        found = _CHILDREN[key] = (
            SAVES.labels(storage, operation, status, error_code),
            None if rejected else DURATION.labels(storage, operation, status),
            None if rejected else ATTEMPTS.labels(storage, operation))
    return found


# ----------------------------------------------------------------------------- at scrape time
class StorageGuardCollector:
    """Breaker states and record counts, read when Prometheus scrapes."""

    def describe(self):
        return []  # nothing is read when the collector is registered

    def collect(self):
        apply_pending()  # whatever the exposition, queued saves are counted by its next read
        yield from breaker_metrics()
        yield from record_metrics()


def breaker_metrics():
    from django.core.files.storage import storages

    from storage_guard.storage import guarded_aliases

    state = GaugeMetricFamily("storage_guard_breaker_state",
                              "1 for the circuit's current state (closed, open, half-open, "
                              "unknown: the breaker cache could not be read).",
                              labels=["storage", "breaker", "state"])
    failures = GaugeMetricFamily("storage_guard_breaker_failures",
                                 "Consecutive transient failures the breaker has counted.",
                                 labels=["storage", "breaker"])
    for alias in guarded_aliases():
        try:
            snapshot = storages[alias].breaker.snapshot()
        except Exception:  # a storage that cannot be built has no breaker to show
            logger.warning("metrics: storage %r cannot be built", alias, exc_info=True,
                           extra={"event": "metrics_failed", "storage": alias})
            continue
        for name in BREAKER_STATES:
            state.add_metric([alias, snapshot.name, name], 1 if snapshot.state == name else 0)
        failures.add_metric([alias, snapshot.name], snapshot.failures)
    yield state
    yield failures


def record_metrics():
    up = GaugeMetricFamily("storage_guard_records_up",
                           "1 when the SaveAttempt records could be read for this scrape.")
    try:
        families = list(_record_families(conf.get("METRICS_COUNT_LIMIT")))
    except Exception:  # a scrape must answer even when the database does not
        logger.warning("metrics: the SaveAttempt records could not be read", exc_info=True,
                       extra={"event": "metrics_failed"})
        up.add_metric([], 0)
        yield up
        return
    up.add_metric([], 1)
    yield up
    yield from families


def _record_families(limit: int):
    from django.db.models import Count, Sum

    from storage_guard.models import UNRESOLVED, SaveAttempt, StashBackend
    from storage_guard.saving.records import record_alias

    records = SaveAttempt.objects.using(record_alias()).order_by()
    unresolved = GaugeMetricFamily(
        "storage_guard_unresolved_saves",
        f"Saves failed or deferred and not delivered yet (counted up to {limit}).",
        labels=["status"])
    oldest = GaugeMetricFamily("storage_guard_unresolved_oldest_age_seconds",
                               "Age of the oldest unresolved save (0 when there is none).")
    now, oldest_at = timezone.now(), None
    for status in UNRESOLVED:
        by_status = records.filter(status=status)
        unresolved.add_metric([str(status)], by_status[:limit].count())
        first = by_status.order_by("created_at").values_list("created_at", flat=True).first()
        oldest_at = min(filter(None, (oldest_at, first)), default=None)
    oldest.add_metric([], (now - oldest_at).total_seconds() if oldest_at else 0.0)
    first_stashed = (records.filter(status__in=UNRESOLVED)
                     .exclude(stash_backend=StashBackend.NONE).values("pk")[:limit])
    stashed = records.filter(pk__in=first_stashed).aggregate(saves=Count("pk"), size=Sum("size"))
    yield unresolved
    yield oldest
    yield GaugeMetricFamily("storage_guard_stashed_saves",
                            f"Unresolved saves whose bytes are stashed (up to {limit}).",
                            value=stashed["saves"])
    yield GaugeMetricFamily("storage_guard_stashed_bytes",
                            f"Bytes of those stashed saves (of at most {limit} saves).",
                            value=stashed["size"] or 0)


COLLECTOR = StorageGuardCollector()


# ----------------------------------------------------------------------------- the view
def scrape_registry():
    """What ``/metrics`` shows: this process's registry, or every process's with
    ``PROMETHEUS_MULTIPROC_DIR`` (gunicorn), plus the scrape-time collector either way."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return prometheus_client.REGISTRY  # COLLECTOR registered there by install()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(COLLECTOR)
    return registry


def metrics_view(request):
    """``/metrics`` in Prometheus' text format (add it to your urls; restrict who reaches it)."""
    if prometheus_client is None:
        return HttpResponse("prometheus-client is not installed: pip install "
                            "'django-storage-guard[metrics]'\n", status=501,
                            content_type="text/plain; charset=utf-8")
    apply_pending()  # this process's queued saves, before the metrics are read
    return HttpResponse(prometheus_client.generate_latest(scrape_registry()),
                        content_type=prometheus_client.CONTENT_TYPE_LATEST)
