"""Writing ``SaveAttempt`` rows on a connection of their own.

A failure record and its stash must outlive the caller's transaction: a view under
``ATOMIC_REQUESTS`` that re-raises ``SaveFailed`` rolls back everything written on its
connection. So records are written through a second connection to the same database, in
autocommit mode, registered on the fly as ``"<alias>__storage_guard"``. SQLite cannot take a
second writer while the first holds a transaction, so there the caller's connection is used
(documented, and reported by the ``storage_guard.W003`` check when ``ATOMIC_REQUESTS`` is on).
"""

from __future__ import annotations

import logging

from django.db import connections, transaction

from storage_guard import conf
from storage_guard.models import SaveAttempt, StashedPayload, key_digest

logger = logging.getLogger("storage_guard")

SUFFIX = "__storage_guard"


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
            "OPTIONS": _fast_commit_options(settings_dict),
        }
    return alias


def _fast_commit_options(settings_dict: dict) -> dict:
    """On PostgreSQL, success records commit without waiting for the WAL flush.

    A crash of the database server may lose the last fraction of a second of *success* records
    (their objects are safely in S3); failure records and stashes switch durability back on in
    their own transaction (``insert_failure``), so they are never lost.
    """
    options = dict(settings_dict.get("OPTIONS") or {})
    if "postgresql" in settings_dict.get("ENGINE", ""):
        options["options"] = f"{options.get('options', '')} -c synchronous_commit=off".strip()
    return options


def close_independent_connections() -> None:
    for alias in list(connections.settings):
        if alias.endswith(SUFFIX):
            connections[alias].close()


def insert_attempt(**fields) -> SaveAttempt:
    """One INSERT: the success path's only database write."""
    fields["key_digest"] = key_digest(fields["key"])
    record = SaveAttempt(**fields)
    SaveAttempt.objects.using(record_alias()).bulk_create([record])
    return record


def insert_failure(fields: dict, stash_bytes: bytes | None) -> SaveAttempt:
    """The record and (for database stashes) its bytes, committed together."""
    alias = record_alias()
    with transaction.atomic(using=alias):
        if connections[alias].vendor == "postgresql":
            with connections[alias].cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO on")
        record = insert_attempt(**fields)
        if stash_bytes is not None:
            StashedPayload.objects.using(alias).create(attempt=record, data=stash_bytes)
    return record


def update_attempt(record: SaveAttempt, **fields) -> None:
    for name, value in fields.items():
        setattr(record, name, value)
    SaveAttempt.objects.using(record_alias()).filter(pk=record.pk).update(**fields)


def flush(timeout: float | None = None) -> bool:
    """Write the success records this process has queued (``record_writer``); False on timeout.

    For tests, and for code that reads records it has just caused in the same process.
    """
    from storage_guard import record_writer

    return record_writer.flush(timeout)
