"""Where the bytes of a save that did not reach S3 are kept until a retry delivers them.

Small payloads (up to ``stash_db_max_bytes``) go into the database, next to their record: every
web process and worker container already reaches it, it survives restarts, and the record and
its bytes commit together. Larger payloads go to ``stash_storage``, a Django storage alias that
every process can reach (a shared volume, or a bucket on another endpoint); with none configured
they go to the database too, because losing bytes is worse than a large row.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from storage_guard.models import SaveAttempt, StashBackend, StashedPayload, Status
from storage_guard.saving.payload import Payload
from storage_guard.saving.records import bounded, record_alias
from storage_guard.saving.spool import SpooledSave


@dataclass(frozen=True)
class StashPlan:
    backend: str
    location: str = ""
    db_bytes: bytes | None = None


def stash(payload: Payload, *, stash_storage: str | None, db_max_bytes: int) -> StashPlan:
    """Put large payloads in the stash storage now; small ones ride along with the record."""
    if stash_storage and payload.size > db_max_bytes:
        name = f"storage_guard/stash/{uuid.uuid4().hex}/{payload.sha256}"
        saved = storages[stash_storage].save(name, File(payload.stream(), name=name))
        return StashPlan(StashBackend.STORAGE, f"{stash_storage}:{saved}")
    return StashPlan(StashBackend.DATABASE, "", payload.read_all())


def read(record: SaveAttempt) -> bytes:
    if record.stash_backend == StashBackend.DATABASE:
        row = StashedPayload.objects.using(record_alias()).get(attempt_id=record.pk)
        return bytes(row.data)
    if record.stash_backend == StashBackend.STORAGE:
        alias, name = record.stash_location.split(":", 1)
        with storages[alias].open(name, "rb") as handle:
            return handle.read()
    raise FileNotFoundError(f"save attempt {record.pk} has no stashed bytes")


def open_file(record) -> File:
    """The stashed bytes of a record, or of a save still in the last-resort spool."""
    data = record.data if isinstance(record, SpooledSave) else read(record)
    return ContentFile(data, name=record.name)


def free(record: SaveAttempt) -> None:
    """Drop the stashed bytes (after delivery was verified, or on explicit abandonment)."""
    if record.stash_backend == StashBackend.DATABASE:
        StashedPayload.objects.using(record_alias()).filter(attempt_id=record.pk).delete()
    elif record.stash_backend == StashBackend.STORAGE:
        alias, name = record.stash_location.split(":", 1)
        storages[alias].delete(name)
    SaveAttempt.objects.using(record_alias()).filter(pk=record.pk).update(
        stash_backend=StashBackend.NONE, stash_location="")
    record.stash_backend, record.stash_location = StashBackend.NONE, ""


def location_exists(location: str) -> bool:
    """Whether a stash-storage file (``"<alias>:<name>"``) is still there."""
    alias, name = location.split(":", 1)
    return storages[alias].exists(name)


def find_pending(key: str) -> SaveAttempt | None:
    """The newest unresolved, stashed save of ``key`` (what a deferred read serves)."""
    alias = record_alias()
    with bounded(alias):
        return (SaveAttempt.objects.using(alias).unresolved().for_key(key)
                .exclude(stash_backend=StashBackend.NONE).order_by("-created_at").first())


def cancel_pending(key: str) -> list[int]:
    """Resolve every unresolved save of ``key`` as ``cancelled`` and free its stash.

    Called when the name is deleted: a deferred or failed save delivered after the delete
    would bring the deleted file back. Returns the ids of the cancelled records.
    """
    from django.db import transaction
    from django.utils import timezone

    alias = record_alias()
    with bounded(alias), transaction.atomic(using=alias):
        records = list(SaveAttempt.objects.using(alias).unresolved().for_key(key)
                       .select_for_update())
        for record in records:
            if record.has_stash:
                free(record)
        SaveAttempt.objects.using(alias).filter(pk__in=[r.pk for r in records]).update(
            status=Status.CANCELLED, next_retry_at=None, updated_at=timezone.now())
    return [record.pk for record in records]
