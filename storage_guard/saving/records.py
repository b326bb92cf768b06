"""Writing ``SaveAttempt`` rows on a connection of their own, bounded in time.

A failure record and its stash must outlive the caller's transaction: a view under
``ATOMIC_REQUESTS`` that re-raises ``SaveFailed`` rolls back everything written on its
connection. So records are written through a second connection to the same database, in
autocommit mode, registered on the fly as ``"<alias>__storage_guard"``. SQLite cannot take a
second writer while the first holds a transaction, so there the caller's connection is used
(documented, and reported by the ``storage_guard.W003`` check when ``ATOMIC_REQUESTS`` is on).

Every record write is bounded (``bounded``): the record connection is opened with a connect
timeout (``RECORD_CONNECT_TIMEOUT``); on PostgreSQL a failure record's transaction sets its own
``statement_timeout`` and ``lock_timeout`` (``RECORD_STATEMENT_TIMEOUT``), and a watchdog
thread cuts the connection's socket when the server has not answered one second after that,
which is the only thing that ends a write to a database that accepts connections and never
answers. On SQLite the busy timeout is lowered to ``RECORD_STATEMENT_TIMEOUT`` for the write.
A write that runs out of time raises a database error, which the storage turns into a
last-resort spool entry (``storage_guard.saving.spool``) instead of losing the bytes.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Callable

from django.db import Error, connections, transaction

from storage_guard import conf
from storage_guard.log import logger
from storage_guard.models import SaveAttempt, StashedPayload, key_digest
from storage_guard.saving.safetext import storable_fields

SUFFIX = "__storage_guard"
# How long after the server's own statement timeout the client gives up on a silent server.
WATCHDOG_GRACE = 1.0


def record_alias() -> str:
    """The database alias records are written through."""
    base = conf.get("DATABASE_ALIAS")
    if not conf.get("INDEPENDENT_CONNECTION") or connections[base].vendor == "sqlite":
        return base
    return register_alias(base)


def register_alias(base: str) -> str:
    """Register ``<base>__storage_guard``: the same database, autocommit, never request-atomic."""
    alias = base + SUFFIX
    if alias not in connections.settings:
        settings_dict = connections[base].settings_dict
        connections.settings[alias] = {
            **settings_dict, "ATOMIC_REQUESTS": False, "AUTOCOMMIT": True,
            "OPTIONS": record_options(settings_dict),
        }
    return alias


def record_options(settings_dict: dict) -> dict:
    """The record connection's driver options: fast commits and a connect timeout.

    On PostgreSQL, success records commit without waiting for the WAL flush. A crash of the
    database server may lose the last fraction of a second of *success* records (their objects
    are safely in S3); failure records and stashes switch durability back on in their own
    transaction (``insert_failure``), so they are never lost. libpq counts the connect timeout
    in whole seconds (and treats anything under 2 as 2).
    """
    options = dict(settings_dict.get("OPTIONS") or {})
    engine = settings_dict.get("ENGINE", "")
    connect = max(1, math.ceil(conf.get("RECORD_CONNECT_TIMEOUT")))
    if "postgresql" in engine:
        options["options"] = f"{options.get('options', '')} -c synchronous_commit=off".strip()
        options["connect_timeout"] = connect
    elif "mysql" in engine:
        statement = max(1, math.ceil(conf.get("RECORD_STATEMENT_TIMEOUT")))
        options.update(connect_timeout=connect, read_timeout=statement, write_timeout=statement)
    return options


def close_independent_connections() -> None:
    for alias in list(connections.settings):
        if alias.endswith(SUFFIX):
            connections[alias].close()


def insert_attempt(**fields) -> SaveAttempt:
    """One INSERT: the success path's only database write.

    Every value is made storable first (``safetext.storable_fields``): no name, key, content
    type or error text can make the insert fail.
    """
    alias = record_alias()
    with bounded(alias):
        return _insert(alias, fields)


def _insert(alias: str, fields: dict) -> SaveAttempt:
    fields["key_digest"] = key_digest(fields["key"])
    record = SaveAttempt(**storable_fields(SaveAttempt, fields))
    SaveAttempt.objects.using(alias).bulk_create([record])
    return record


def insert_failure(fields: dict, stash_bytes: bytes | None) -> SaveAttempt:
    """The record and (for database stashes) its bytes, committed together."""
    alias = record_alias()
    with bounded(alias):
        outermost = not connections[alias].in_atomic_block
        with transaction.atomic(using=alias):
            if connections[alias].vendor == "postgresql":
                _durable_and_bounded(alias, outermost)
            record = _insert(alias, fields)
            if stash_bytes is not None:
                StashedPayload.objects.using(alias).create(attempt=record, data=stash_bytes)
    return record


def _durable_and_bounded(alias: str, outermost: bool) -> None:
    """Durable commit; and, in a transaction of our own, the server's own statement bound.

    Inside a caller's transaction (records on the caller's connection) a ``SET LOCAL`` would
    outlive this write, so the statement bound is left to the watchdog there.
    """
    with connections[alias].cursor() as cursor:
        if not outermost:
            cursor.execute("SET LOCAL synchronous_commit TO on")
            return
        ms = str(int(conf.get("RECORD_STATEMENT_TIMEOUT") * 1000))
        cursor.execute("SELECT set_config('synchronous_commit', 'on', true), "
                       "set_config('statement_timeout', %s, true), "
                       "set_config('lock_timeout', %s, true)", [ms, ms])


def update_attempt(record: SaveAttempt, **fields) -> None:
    fields = storable_fields(SaveAttempt, fields)
    for name, value in fields.items():
        setattr(record, name, value)
    alias = record_alias()
    with bounded(alias):
        SaveAttempt.objects.using(alias).filter(pk=record.pk).update(**fields)


def backdate(record: SaveAttempt, created_at) -> None:
    """Give a record written late (from the spool) the time of the save it describes."""
    if created_at is not None:
        update_attempt(record, created_at=created_at)


# --------------------------------------------------------------------- bounds in time
@contextlib.contextmanager
def bounded(alias: str):
    """Run a record write on ``alias`` within ``RECORD_STATEMENT_TIMEOUT``, or fail it.

    The connection is made first (bounded by its connect timeout). On SQLite the busy timeout
    is lowered for the write and put back; elsewhere the watchdog cuts the connection's socket
    if the write has not finished ``WATCHDOG_GRACE`` seconds after the statement timeout, and
    the cut connection is closed so that the next write connects afresh.
    """
    wrapper = connections[alias]
    wrapper.ensure_connection()
    seconds = float(conf.get("RECORD_STATEMENT_TIMEOUT"))
    if wrapper.vendor == "sqlite":
        with _sqlite_busy_timeout(wrapper.connection, seconds):
            yield
        return
    token = WATCHDOG.arm(seconds + WATCHDOG_GRACE, lambda: _cut(wrapper))
    try:
        yield
    except Error:
        if alias.endswith(SUFFIX):  # our own connection: reconnect next time, not reuse a dead one
            wrapper.close()
        raise
    finally:
        if not WATCHDOG.disarm(token):
            logger.error("record_write_cut on %s: the database did not answer within %.1f s; "
                         "connection closed", alias, seconds + WATCHDOG_GRACE,
                         extra={"event": "record_write_cut", "database": alias})
            wrapper.close()


@contextlib.contextmanager
def _sqlite_busy_timeout(raw, seconds: float):
    """Wait at most ``seconds`` for another writer's lock (never longer than configured)."""
    previous = raw.execute("PRAGMA busy_timeout").fetchone()[0]
    wanted = min(previous, int(seconds * 1000)) if previous else 0
    raw.execute(f"PRAGMA busy_timeout = {wanted:d}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout = {previous:d}")


def _cut(wrapper) -> None:
    """Shut the socket of ``wrapper``'s connection down: the blocked read returns at once."""
    raw = wrapper.connection
    if raw is None:
        return
    with contextlib.suppress(OSError, ValueError), \
            socket.socket(fileno=os.dup(raw.fileno())) as sock:
        sock.shutdown(socket.SHUT_RDWR)


class Watchdog:
    """One daemon thread running each armed action that was not disarmed in time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, Callable[[], None]]] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, action: Callable[[], None]) -> int:
        with self._cond:
            token = next(self._tokens)
            self._armed[token] = (time.monotonic() + seconds, action)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="storage_guard-watchdog",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return token

    def disarm(self, token: int) -> bool:
        """False when the action already ran (the write was cut)."""
        with self._cond:
            return self._armed.pop(token, None) is not None

    @property
    def armed(self) -> int:
        return len(self._armed)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [token for token, (at, _) in self._armed.items() if at <= now]
                actions = [self._armed.pop(token)[1] for token in due]
                if not actions:
                    soonest = min((at for at, _ in self._armed.values()), default=None)
                    self._cond.wait(None if soonest is None else soonest - now)
                    continue
            for action in actions:
                try:
                    action()
                except Exception:  # the watchdog must outlive any one action
                    logger.exception("record watchdog action failed")


WATCHDOG = Watchdog()


def flush(timeout: float | None = None) -> bool:
    """Write the success records this process has queued (``success_records``); False on timeout.

    For tests, and for code that reads records it has just caused in the same process.
    """
    from storage_guard.saving import success_records

    return success_records.flush(timeout)
