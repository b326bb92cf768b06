"""Checks of the deployment: settings that work but defeat a promise (W002-W008, E012, E013).

The retry deadline against the read timeout and a request's time budget, the record database
(SQLite with ATOMIC_REQUESTS), the stash's storage, the breaker's cache (``--deploy``) and how
long a process trusts a clean read of it against the breaker's window, the task framework and
backend that retries run on, and the last-resort spool directory.
"""

from __future__ import annotations

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from storage_guard import conf
from storage_guard.checks.codes import Codes, Hints, Messages, error, warning, where
from storage_guard.checks.options import guarded_storage_options, unknown_presets
from storage_guard.options import is_number


def check_deployment(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Settings that work but defeat a promise: deadline, rollback survival, stash location,
    breaker refresh."""
    try:
        defaults = conf.storage_defaults()
        database_alias = conf.get("DATABASE_ALIAS")
    except ImproperlyConfigured:
        return []  # reported by check_options
    if unknown_presets():
        return []  # reported by check_options
    found = _sqlite_atomic_requests(database_alias) + _task_backend() + _last_resort_dir()
    found += _deadline_warnings(defaults, alias=None)
    refresh = conf.get("BREAKER_REFRESH")
    found += _refresh_warnings(refresh, defaults, alias=None)
    for alias, options in guarded_storage_options():
        if {"retry_deadline", "read_timeout", "preset"} & set(options):
            found += _deadline_warnings(conf.storage_options(options), alias=alias)
        if "breaker_window" in options:
            found += _refresh_warnings(refresh, conf.storage_options(options), alias=alias)
        found += _stash_problems(alias, {**defaults, **options})
    return found


# A gunicorn worker's default timeout, and the time a request keeps for its own work.
WORKER_TIMEOUT = 30.0
REQUEST_MARGIN = 5.0
# Presets meant for saves inside a request (see docs/configuration.md, "Fitting in a request").
REQUEST_PRESETS = ("interactive", "standard")


def _deadline_warnings(values: dict, *, alias: str | None) -> list[checks.CheckMessage]:
    deadline, read_timeout = values.get("retry_deadline"), values.get("read_timeout")
    if not (is_number(deadline) and is_number(read_timeout)):
        return []
    if deadline < read_timeout:
        return [warning("DEADLINE_BELOW_READ_TIMEOUT", where=where("retry_deadline", alias),
                         deadline=deadline, read_timeout=read_timeout)]
    connect, database = values.get("connect_timeout"), record_database_budget()
    if values.get("preset") not in REQUEST_PRESETS or not is_number(connect):
        return []
    total = round(deadline + connect + database, 3)
    if total <= WORKER_TIMEOUT - REQUEST_MARGIN:
        return []
    return [warning("DEADLINE_OVER_REQUEST_BUDGET", where=where("retry_deadline", alias),
                     deadline=deadline, preset=values["preset"], connect=connect,
                     database=database, total=total, worker=WORKER_TIMEOUT,
                     suggested=round(WORKER_TIMEOUT - REQUEST_MARGIN - connect - database, 3))]


def _refresh_warnings(refresh, values: dict, *, alias: str | None) -> list[checks.CheckMessage]:
    """W008: a clean read trusted for half the breaker's window or more (``saving/breaker.py``:
    a run started elsewhere is ended by this process's success only ``refresh`` later)."""
    window, threshold = values.get("breaker_window"), values.get("breaker_threshold")
    if not (is_number(refresh) and is_number(window)) or refresh <= 0 or window <= 0 \
            or threshold == 0:
        return []  # a wrong type is E002's; refresh 0 reads every time; window 0 opens on the
        # count alone (no window to survive); threshold 0 turns the breaker off
    if refresh < window / 2:
        return []
    return [warning("BREAKER_REFRESH_OVER_WINDOW", refresh=refresh,
                    where=where("breaker_window", alias), window=window)]


def record_database_budget() -> float:
    """The longest the record and stash writes of a failed save can take: one connect and
    two statements (stash, then record), bounded by the record connection's timeouts."""
    config = conf.get_config()
    connect = config.get("RECORD_CONNECT_TIMEOUT", conf.ASSUMED_RECORD_TIMEOUTS[0])
    statement = config.get("RECORD_STATEMENT_TIMEOUT", conf.ASSUMED_RECORD_TIMEOUTS[1])
    return float(connect + 2 * statement)


def _sqlite_atomic_requests(alias: str) -> list[checks.CheckMessage]:
    database = settings.DATABASES.get(alias, {})
    if "sqlite" in database.get("ENGINE", "") and database.get("ATOMIC_REQUESTS"):
        return [warning("SQLITE_ATOMIC_REQUESTS", alias=alias)]
    return []


def _stash_problems(alias: str, values: dict) -> list[checks.CheckMessage]:
    stash_alias = values.get("stash_storage")
    if not stash_alias:
        return []
    at = where("stash_storage", alias)
    stash_spec = settings.STORAGES.get(stash_alias)
    if stash_spec is None:
        return [error("STASH_STORAGE_UNKNOWN", where=at, value=stash_alias)]
    own = settings.STORAGES[alias].get("OPTIONS") or {}
    other = stash_spec.get("OPTIONS") or {}
    same = [own.get(k) for k in ("endpoint_url", "bucket_name")] == \
        [other.get(k) for k in ("endpoint_url", "bucket_name")]
    if same and stash_spec.get("BACKEND", "").endswith("S3Storage"):
        return [warning("STASH_STORAGE_SAME_BUCKET", where=at, value=stash_alias)]
    return []


def check_breaker_cache(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """``manage.py check --deploy``: a per-process breaker is fine in development only."""
    try:
        alias = conf.get("BREAKER_CACHE")
    except ImproperlyConfigured:
        return []
    backend = settings.CACHES.get(alias, {}).get("BACKEND", "")
    if backend.endswith("DummyCache"):
        kind, effect = "dummy", "it keeps nothing, so the circuit breaker can never open"
    elif backend.endswith("LocMemCache"):
        kind, effect = "local-memory", "every process has its own circuit breaker"
    else:
        return []
    return [warning("BREAKER_CACHE_PER_PROCESS", alias=alias, kind=kind, effect=effect)]


def _task_backend() -> list[checks.CheckMessage]:
    if not conf.get("RETRY_WITH_TASKS"):
        return []
    from storage_guard.integrations import task_framework

    alias = conf.get("TASK_BACKEND")
    if task_framework.module_name() is None:  # E013 too: no framework, so nothing can defer
        return [checks.Error(Messages.TASK_FRAMEWORK_MISSING, hint=Hints.TASK_FRAMEWORK_MISSING,
                             id=Codes.TASK_BACKEND_CANNOT_DEFER)]
    try:
        can_defer = task_framework.load().task_backends[alias].supports_defer
    except Exception:  # noqa: BLE001 - an unknown alias is also a backend that cannot defer
        can_defer = False
    if can_defer:
        return []
    return [error("TASK_BACKEND_CANNOT_DEFER", alias=alias)]


def _last_resort_dir() -> list[checks.CheckMessage]:
    from storage_guard.saving import spool

    if spool.directory() is None:
        return []  # turned off on purpose (documented)
    reason = spool.problem()
    return [warning("LAST_RESORT_DIR_UNUSABLE", reason=reason)] if reason else []
