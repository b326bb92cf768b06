"""The circuit breakers an operator should know about, in words (admin banner, doctor, report).

One breaker per endpoint and bucket, shared by the guarded storages in ``settings.STORAGES``
that write there. The state comes from ``CircuitBreaker.snapshot()``, which reads the shared
cache and never raises; building a storage that cannot be built is reported, not raised.
"""

from __future__ import annotations

import math

from django.core.files.storage import storages
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from storage_guard import clock
from storage_guard.log import logger
from storage_guard.saving.breaker import BreakerSnapshot


def snapshots() -> list[BreakerSnapshot]:
    """One snapshot per distinct breaker of the guarded storages, in settings order."""
    from storage_guard.storage import guarded_aliases

    seen: dict[str, BreakerSnapshot] = {}
    for alias in guarded_aliases():
        try:
            breaker = storages[alias].breaker
        except Exception as exc:  # noqa: BLE001 - a storage that cannot be built has no circuit
            logger.info("breaker of storage %s not shown: %s", alias, exc,
                        extra={"event": "breaker_unknown", "storage": alias})
            continue
        if breaker.enabled and breaker.name not in seen:
            seen[breaker.name] = breaker.snapshot()
    return list(seen.values())


def troubled() -> list[BreakerSnapshot]:
    """The snapshots an operator must see first: circuits not known to be closed."""
    return [snap for snap in snapshots() if snap.state != "closed"]


def describe(snap: BreakerSnapshot) -> str:
    """One sentence, e.g. "circuit for http://s3|photos OPEN since 03:24:31 UTC after 20
    failures; next probe in 3 s"."""
    if snap.state == "unknown":
        return _("circuit for %(name)s: state unknown (its cache cannot be read)") % {
            "name": snap.name}
    if snap.state == "closed":
        return ngettext("circuit for %(name)s closed (%(failures)d failure in a row)",
                        "circuit for %(name)s closed (%(failures)d failures in a row)",
                        snap.failures) % {"name": snap.name, "failures": snap.failures}
    since = clock.when(snap.opened_at, clock.TIME_FORMAT)
    failures = ngettext("after %(failures)d failure", "after %(failures)d failures",
                        snap.failures) % {"failures": snap.failures}
    if snap.state == "half-open":
        return _("circuit for %(name)s HALF-OPEN since %(since)s %(failures)s; the next save "
                 "is sent as a probe") % {"name": snap.name, "since": since,
                                          "failures": failures}
    wait = math.ceil(snap.next_probe_in or 0)
    return _("circuit for %(name)s OPEN since %(since)s %(failures)s; next probe in "
             "%(wait)d s") % {"name": snap.name, "since": since, "failures": failures,
                              "wait": wait}
