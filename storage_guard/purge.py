"""Deleting old ``SaveAttempt`` rows in batches, never an unresolved failure unless asked.

Resolved records (succeeded, recovered, rejected, abandoned) older than the cut-off go first;
unresolved ones (failed, deferred: their bytes are still only in the stash) are kept unless
``include_unresolved`` is given. A record's stash goes with it: database stashes by cascade,
stash-storage files explicitly. Each batch is its own short transaction on the record alias,
so a purge of millions of rows never holds long locks and can be interrupted at any time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from storage_guard import stash
from storage_guard.models import UNRESOLVED, SaveAttempt, StashBackend, Status
from storage_guard.recording import record_alias

logger = logging.getLogger("storage_guard")

RESOLVED = (Status.SUCCEEDED, Status.RECOVERED, Status.REJECTED, Status.ABANDONED,
            Status.CANCELLED)
BATCH_SIZE = 1000


@dataclass
class PurgeResult:
    deleted: int = 0
    unresolved_deleted: int = 0
    stashes_freed: int = 0
    batches: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict:
        return {"deleted": self.deleted, "unresolved_deleted": self.unresolved_deleted,
                "stashes_freed": self.stashes_freed, "batches": self.batches,
                "dry_run": self.dry_run}


def candidates(older_than: timedelta, *, include_unresolved: bool = False):
    statuses = RESOLVED + (UNRESOLVED if include_unresolved else ())
    cutoff = timezone.now() - older_than
    return SaveAttempt.objects.using(record_alias()).filter(
        created_at__lt=cutoff, status__in=statuses)


def purge(older_than: timedelta, *, include_unresolved: bool = False,
          batch_size: int = BATCH_SIZE, dry_run: bool = False) -> PurgeResult:
    """Delete matching records ``batch_size`` at a time, oldest first."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    qs = candidates(older_than, include_unresolved=include_unresolved)
    if dry_run:
        return PurgeResult(deleted=qs.count(),
                           unresolved_deleted=qs.filter(status__in=UNRESOLVED).count(),
                           dry_run=True)
    result = PurgeResult()
    while _purge_batch(qs, batch_size, result):
        pass
    logger.info("purge deleted %s record(s) older than %s in %s batch(es)", result.deleted,
                older_than, result.batches, extra={"event": "purge", **result.as_dict()})
    return result


def _purge_batch(qs, batch_size: int, result: PurgeResult) -> bool:
    alias = record_alias()
    with transaction.atomic(using=alias):
        batch = list(qs.order_by("created_at", "pk")
                     .values_list("pk", "status", "stash_backend")[:batch_size])
        if not batch:
            return False
        ids = [pk for pk, _status, _backend in batch]
        for record in qs.filter(pk__in=ids, stash_backend=StashBackend.STORAGE):
            stash.free(record)  # files in the stash storage do not cascade
        result.stashes_freed += sum(1 for _pk, _s, backend in batch if backend)
        SaveAttempt.objects.using(alias).filter(pk__in=ids).delete()
    result.deleted += len(batch)
    result.unresolved_deleted += sum(1 for _pk, status, _b in batch if status in UNRESOLVED)
    result.batches += 1
    return len(batch) == batch_size
