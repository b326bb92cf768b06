"""The numbers behind ``manage.py storage_guard_report``, as plain data (``docs/report.md``).

``build_report`` runs the report's queries (``queries``: aggregated in the database, per vendor
where it matters) in one transaction and returns dicts, lists, numbers and ISO strings only,
ready for ``json.dumps``; ``render_text`` (``render``) turns that into aligned tables for people.
The counts and rates come from ``operations.stats``, as on the admin's summary page. The
command's arguments (``--since``) are parsed in ``management.arguments``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import warnings

from django.db import connections, transaction
from django.utils import timezone

from storage_guard import conf
from storage_guard.operations import circuits
from storage_guard.operations.report import queries
from storage_guard.operations.report.queries import (
    ARRIVED_LATER,
    DID_NOT_ARRIVE,
    DURATION_GROUPS,
    FAILURE_STATUSES,
    PERCENTILES,
    describe_code,
)
from storage_guard.operations.report.render import (
    DURATION_LABELS,
    KEY_CHARS,
    SAME_DATA_TITLES,
    render_text,
)
from storage_guard.operations.stats import outcome_counts

# The public names of the module this package was, at their old path.
__all__ = [
    "ARRIVED_LATER", "DEFAULT_TOP", "DID_NOT_ARRIVE", "DURATION_GROUPS", "DURATION_LABELS",
    "FAILURE_STATUSES", "KEY_CHARS", "MAX_TOP", "PERCENTILES", "POSTGRES_SESSION",
    "SAME_DATA_TITLES", "build_report", "check_top", "describe_code", "render_text",
]
# Parsing ``--since`` is the command's now; the old names work until 0.2.0, with a warning.
MOVED_NAMES = {name: "storage_guard.management.arguments"
               for name in ("DEFAULT_SINCE", "MAX_SINCE", "parse_since")}


def __getattr__(name: str):
    if name not in MOVED_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    new = MOVED_NAMES[name]
    warnings.warn(f"{__name__}.{name} moved to {new}.{name}; the old import path stops working "
                  f"in storage_guard 0.2.0", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(new), name)

DEFAULT_TOP = 10
MAX_TOP = 100


def check_top(top: int) -> int:
    if not 1 <= top <= MAX_TOP:
        raise ValueError(f"--top must be between 1 and {MAX_TOP}, not {top}")
    return top


def build_report(*, since: dt.datetime, until: dt.datetime | None = None,
                 storage: str | None = None, top: int = DEFAULT_TOP,
                 using: str | None = None) -> dict:
    """Every section of the report for saves made in ``[since, until)``."""
    until = until or timezone.now()
    using = using or conf.get("DATABASE_ALIAS")
    check_top(top)
    with _report_session(using):
        return _build(since, until, storage, top, using)


# Settings for the report's own transaction on PostgreSQL: JIT compilation costs about 1 s on
# a million rows and gains nothing on single-pass aggregates; sorts for the percentiles and the
# per-key grouping stay in memory instead of spilling to disk.
POSTGRES_SESSION = {"jit": "off", "work_mem": "64MB"}


@contextlib.contextmanager
def _report_session(using: str):
    """The report's queries in one transaction, with ``POSTGRES_SESSION`` on PostgreSQL."""
    connection = connections[using]
    with transaction.atomic(using=using):
        if connection.vendor != "postgresql":
            yield
            return
        previous = {}
        with connection.cursor() as cursor:
            for name, value in POSTGRES_SESSION.items():
                cursor.execute("SELECT current_setting(%s), set_config(%s, %s, true)",
                               [name, name, value])
                previous[name] = cursor.fetchone()[0]
        yield
        with connection.cursor() as cursor:  # matters only inside a caller's transaction
            for name, value in previous.items():
                cursor.execute("SELECT set_config(%s, %s, true)", [name, value])


def _build(since, until, storage, top, using) -> dict:
    rows = queries.window(since, until, storage, using)
    counts = outcome_counts(rows)
    return {
        "window": {"since": since.isoformat(), "until": until.isoformat(), "storage": storage,
                   "database": using},
        "saves": counts.saves,
        "by_status": counts.by_status,
        "rates": {name: share.fraction() for name, share in counts.rates().items()},
        "duration_ms": queries.durations(rows, since, until, storage, using),
        "errors": queries.errors(counts.final_errors, since, until, storage, using),
        "largest_failed_keys": queries.largest_failed_keys(rows, top),
        "largest_failed_payloads": queries.largest_failed_payloads(rows, top),
        "same_data": queries.same_data(rows, top, using),
        "circuits": _circuits(storage),
    }


def _circuits(storage) -> list[dict]:
    """The breakers now (not over the window): state, failures, opened at, next probe."""
    shown = []
    for snap in circuits.snapshots():
        if storage is None or snap.name in _breaker_names(storage):
            shown.append({"name": snap.name, "state": snap.state, "failures": snap.failures,
                          "opened_at": (dt.datetime.fromtimestamp(snap.opened_at, dt.UTC)
                                        .isoformat() if snap.opened_at else None),
                          "next_probe_in": snap.next_probe_in,
                          "text": circuits.describe(snap)})
    return shown


def _breaker_names(alias: str) -> set[str]:
    from django.core.files.storage import storages

    try:
        return {storages[alias].breaker.name}
    except Exception:  # noqa: BLE001 - not a guarded storage (or gone): no circuit to show
        return set()
