"""Deleting old ``SaveAttempt`` rows in batches, never an unresolved failure unless asked.

Resolved records (succeeded, recovered, rejected, abandoned) older than the cut-off go first;
unresolved ones (failed, deferred: their bytes are still only in the stash) are kept unless
``include_unresolved`` is given. A record's stash goes with it: database stashes by cascade,
stash-storage files explicitly. Each batch is its own short transaction on the record alias,
so a purge of millions of rows never holds long locks and can be interrupted at any time.

Inserts are never blocked: a DELETE and an INSERT take table locks that do not conflict, and
the only row locks a batch takes are on the rows it deletes (``FOR UPDATE SKIP LOCKED``, so it
also never waits for a record that a replay worker is delivering; that one is left for the next
purge). Batches walk the ``created_at`` index forward from where the last one stopped (keyset),
so the thousandth batch does not rescan the index entries of the rows the first 999 deleted,
and only primary keys are fetched to delete. ``pause`` sleeps between batches, for replicas or
a busy disk. Measured in ``docs/scaling.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from storage_guard.log import logger
from storage_guard.models import UNRESOLVED, SaveAttempt, StashBackend, Status
from storage_guard.saving import stash
from storage_guard.saving.records import record_alias

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
          batch_size: int = BATCH_SIZE, dry_run: bool = False,
          pause: float = 0.0) -> PurgeResult:
    """Delete matching records ``batch_size`` at a time, oldest first."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    qs = candidates(older_than, include_unresolved=include_unresolved)
    if dry_run:
        return PurgeResult(deleted=qs.count(),
                           unresolved_deleted=qs.filter(status__in=UNRESOLVED).count(),
                           dry_run=True)
    result = PurgeResult()
    after = _purge_batch(qs, batch_size, result)
    while after is not None:
        if pause:
            time.sleep(pause)
        after = _purge_batch(qs.filter(created_at__gte=after), batch_size, result)
    logger.info("purge deleted %s record(s) older than %s in %s batch(es)", result.deleted,
                older_than, result.batches, extra={"event": "purge", **result.as_dict()})
    return result


def _purge_batch(qs, batch_size: int, result: PurgeResult):
    """Delete one batch; the ``created_at`` to continue from, or None when done."""
    alias = record_alias()
    with transaction.atomic(using=alias):
        batch = list(qs.order_by("created_at", "pk").select_for_update(skip_locked=True)
                     .values_list("pk", "created_at", "status", "stash_backend")[:batch_size])
        if not batch:
            return None
        ids = [row[0] for row in batch]
        if any(row[3] == StashBackend.STORAGE for row in batch):
            for record in qs.filter(pk__in=ids, stash_backend=StashBackend.STORAGE):
                stash.free(record)  # files in the stash storage do not cascade
        SaveAttempt.objects.using(alias).filter(pk__in=ids).only("pk").delete()
    result.deleted += len(batch)
    result.stashes_freed += sum(1 for row in batch if row[3])
    result.unresolved_deleted += sum(1 for row in batch if row[2] in UNRESOLVED)
    result.batches += 1
    return batch[-1][1] if len(batch) == batch_size else None
