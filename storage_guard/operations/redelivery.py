"""Delivering stashed saves again: the one piece of logic behind the command, the admin and tasks.

A replay takes an unresolved save (``failed`` or ``deferred``, bytes stashed), re-sends the
stashed bytes to the record's key through the storage that first tried (``storages[alias]``),
checks with a HEAD that S3 has an object of the right size, and then marks the record
``recovered`` and frees the stash. When delivery fails again the record stays unresolved, its
attempt count raised, its error fields describing the newest failure and the attempts appended
to its ``attempt_log``.

Many workers may replay at once. Each record is claimed in its own transaction on the record
alias with ``SELECT ... FOR UPDATE SKIP LOCKED``: a worker never waits for, and never delivers,
a record another worker holds, and the lock is released by the same commit that writes the
outcome (or by the database if the worker dies), so nothing is delivered twice and nothing is
left behind. The transaction lasts one delivery, bounded by the storage's retry deadline.
SQLite has no row locks; there one process replays at a time (see ``docs/scaling.md``).

The circuit breaker: a refusal by an open circuit sends nothing, so it is not an attempt; the
record is left as it was and reported as skipped ("circuit open (next probe in N s)"). An
operator's run (the command, the admin action) is the probe: its first delivery for each storage
is sent even when the circuit is open; success closes the circuit for every process, failure
stops the run for that storage ("circuit open: S3 still failing, N left untouched").
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.core.files.storage import InvalidStorageError
from django.db import transaction
from django.utils import timezone

from storage_guard.log import logger
from storage_guard.models import UNRESOLVED, SaveAttempt, StashBackend, Status
from storage_guard.operations.rebuild import storage_for
from storage_guard.saving import stash
from storage_guard.saving.classification import Classification, classify
from storage_guard.saving.records import record_alias
from storage_guard.saving.retry_loop import AttemptInfo

DELIVERED, FAILED, SKIPPED = "delivered", "failed", "skipped"
OPERATOR_VIAS = frozenset({"command", "admin"})  # runs an operator started: they may probe


@dataclass(frozen=True)
class Selection:
    """Which unresolved saves to replay; every filter is optional."""

    limit: int | None = None
    error_code: str | None = None
    older_than: timedelta | None = None
    storage_alias: str | None = None
    ids: tuple[int, ...] | None = None

    def queryset(self):
        """Unresolved saves with stashed bytes, oldest first (not locked: for counts and lists)."""
        qs = (SaveAttempt.objects.using(record_alias()).unresolved()
              .exclude(stash_backend=StashBackend.NONE).order_by("created_at", "pk"))
        if self.ids is not None:
            qs = qs.filter(pk__in=self.ids)
        if self.error_code:
            qs = qs.filter(error_code=self.error_code)
        if self.older_than is not None:
            qs = qs.filter(created_at__lte=timezone.now() - self.older_than)
        if self.storage_alias is not None:
            qs = qs.filter(storage_alias=self.storage_alias)
        return qs


@dataclass
class ItemResult:
    record_id: int
    key: str
    outcome: str
    code: str = ""
    reason: str = ""
    attempts: int = 0
    next_probe_in: float | None = None  # set when an open circuit cut this delivery short
    undeliverable: bool = False  # skipped because no storage can ever deliver it


@dataclass
class ReplayResult:
    delivered: int = 0
    failed: int = 0
    skipped: int = 0
    items: list[ItemResult] = field(default_factory=list)
    circuit_open: bool = False  # the run stopped early: the circuit is (still) open
    untouched: int = 0  # records left as they were because the circuit stopped the run

    @property
    def total(self) -> int:
        return self.delivered + self.failed + self.skipped

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.circuit_open

    def add(self, item: ItemResult) -> None:
        self.items.append(item)
        setattr(self, item.outcome, getattr(self, item.outcome) + 1)

    def as_dict(self) -> dict:
        return {"delivered": self.delivered, "failed": self.failed, "skipped": self.skipped,
                "circuit_open": self.circuit_open, "untouched": self.untouched,
                "items": [asdict(item) for item in self.items]}

    def summary(self) -> str:
        text = f"{self.delivered} delivered, {self.failed} failed again, {self.skipped} skipped"
        return f"{text}; {self.circuit_line()}" if self.circuit_open else text

    def circuit_line(self) -> str:
        return f"circuit open: S3 still failing, {self.untouched} left untouched"


def pending(selection: Selection) -> list[SaveAttempt]:
    """What a replay with ``selection`` would take, without claiming anything (``--dry-run``)."""
    qs = selection.queryset()
    return list(qs[: selection.limit] if selection.limit is not None else qs)


def count(selection: Selection) -> int:
    """How many saves a replay with ``selection`` would take now (for a progress bar)."""
    total = selection.queryset().count()
    return min(total, selection.limit) if selection.limit is not None else total


def replay(selection: Selection, *, via: str = "command",
           on_item: Callable[[ItemResult], None] | None = None,
           probe: bool | None = None) -> ReplayResult:
    """Claim and replay matching saves one at a time, oldest first, until none is left.

    Records this call already tried are not tried twice; records other workers hold are left
    to them. ``on_item`` is called after each record (progress bars). With ``probe`` (the
    default for an operator's run, ``via`` "command" or "admin") the first delivery of each
    storage is sent even if its circuit is open. A storage whose circuit cuts a delivery short
    gets no further deliveries in this run.
    """
    run = _Run(selection, via, via in OPERATOR_VIAS if probe is None else probe)
    while selection.limit is None or run.result.total < selection.limit:
        item = run.next()
        if item is None:
            break
        if on_item is not None:
            on_item(item)
    run.finish()
    return run.result


class _Run:
    """The bookkeeping of one replay run: what was tried, which storages the circuit stopped."""

    def __init__(self, selection: Selection, via: str, probe: bool):
        self.selection, self.via, self.probe = selection, via, probe
        self.result = ReplayResult()
        self.still_unresolved: list[int] = []  # tried here, not delivered: not to be tried again
        self.probed: set[str] = set()  # storage aliases whose first delivery was sent
        self.stopped: dict[str, float] = {}  # alias -> seconds to the next probe

    def next(self) -> ItemResult | None:
        with transaction.atomic(using=record_alias()):
            record = (self.selection.queryset().exclude(pk__in=self.still_unresolved)
                      .exclude(storage_alias__in=list(self.stopped))
                      .select_for_update(skip_locked=True).first())
            if record is None:
                return None
            forced = self.probe and record.storage_alias not in self.probed
            item = replay_record(record, via=self.via, probe=forced)
        if item.outcome != SKIPPED or item.next_probe_in is not None:  # something was asked
            self.probed.add(record.storage_alias)
        if item.outcome != DELIVERED:
            self.still_unresolved.append(item.record_id)
        if item.next_probe_in is not None:
            self.stopped[record.storage_alias] = item.next_probe_in
        self.result.add(item)
        return item

    def finish(self) -> None:
        _count_held_by_others(self.selection, self.result, self.stopped)
        if not self.stopped:
            return
        changed = [i.record_id for i in self.result.items if i.outcome != SKIPPED]
        untouched = (self.selection.queryset().filter(storage_alias__in=list(self.stopped))
                     .exclude(pk__in=changed).count())
        if self.selection.limit is not None:
            untouched = min(untouched, self.selection.limit - len(changed))
        self.result.circuit_open, self.result.untouched = True, untouched
        logger.warning("replay_stopped: %s; storage(s) %s", self.result.circuit_line(),
                       ", ".join(sorted(self.stopped)), extra={
                           "event": "replay_stopped", "untouched": untouched,
                           "storages": sorted(self.stopped)})


def replay_ids(ids: Iterable[int], *, via: str) -> ReplayResult:
    """Replay exactly these records (the admin action, the task): others' claims are skipped."""
    ids = tuple(ids)
    return replay(Selection(ids=ids, limit=len(ids)), via=via)


def _count_held_by_others(selection: Selection, result: ReplayResult,
                          stopped: dict[str, float]) -> None:
    """For explicit ids: a record we could not claim is reported as skipped, with the reason."""
    if selection.ids is None:
        return
    tried = {item.record_id for item in result.items}
    for record_id in dict.fromkeys(selection.ids):
        if record_id in tried:
            continue
        record = SaveAttempt.objects.using(record_alias()).filter(pk=record_id).first()
        reason = ("no such record" if record is None
                  else f"status is {record.status}" if record.status not in UNRESOLVED
                  else "no stashed bytes" if not record.has_stash
                  else circuit_reason(stopped[record.storage_alias])
                  if record.storage_alias in stopped
                  else "another worker holds it")
        result.add(ItemResult(record_id, record.key if record else "", SKIPPED, reason=reason))


def circuit_reason(next_probe_in: float) -> str:
    return f"circuit open (next probe in {math.ceil(next_probe_in)} s)"


def replay_record(record: SaveAttempt, *, via: str, probe: bool = False) -> ItemResult:
    """Deliver one (claimed) record and write the outcome onto it.

    With ``probe`` the delivery is sent even if the storage's circuit is open (an operator's
    first delivery). A delivery the open circuit refused outright leaves the record untouched.
    """
    undeliverable = _storage_problem(record)
    reason = undeliverable or _why_skip(record)
    if reason:
        item = _skipped(record, reason)
        item.undeliverable = bool(undeliverable)
        return item
    storage = storage_for(record)
    with storage.breaker.operator_probe() if probe else contextlib.nullcontext():
        outcome = storage.redeliver(record)
    next_probe_in = outcome.refused.retry_after if outcome.refused is not None else None
    if next_probe_in is not None and not outcome.attempts:
        item = _skipped(record, circuit_reason(next_probe_in))
        item.code, item.next_probe_in = "CircuitOpen", next_probe_in
        return item
    item = _deliver_outcome(storage, record, outcome, via)
    item.next_probe_in = next_probe_in
    return item


def _skipped(record: SaveAttempt, reason: str) -> ItemResult:
    logger.warning("replay_skipped %s: %s", record.key, reason, extra={
        "event": "replay_skipped", "record_id": record.pk, "reason": reason})
    return ItemResult(record.pk, record.key, SKIPPED, reason=reason, attempts=record.attempts)


def _deliver_outcome(storage, record: SaveAttempt, outcome, via: str) -> ItemResult:
    if outcome.ok:
        outcome = _verify(storage, record, outcome)
    log = _extend_log(record, outcome, via)
    if outcome.ok:
        return _mark_recovered(record, outcome, log)
    return _mark_failed(record, outcome, log)


def _storage_problem(record: SaveAttempt) -> str:
    """Why no storage can deliver ``record`` ("" when one can)."""
    try:
        storage = storage_for(record)
    except InvalidStorageError as exc:
        if record.storage_alias:
            return f"storage alias {record.storage_alias!r} is not in settings.STORAGES"
        return f"undeliverable: {exc}"
    if not hasattr(storage, "redeliver"):
        return f"storage {record.storage_alias!r} is not a GuardedS3Storage"
    return ""


def _why_skip(record: SaveAttempt) -> str:
    newer = (SaveAttempt.objects.using(record_alias()).for_key(record.key)
             .filter(created_at__gt=record.created_at,
                     status__in=(Status.SUCCEEDED, Status.RECOVERED))
             .order_by("created_at").first())
    if newer is not None:
        return (f"superseded: record {newer.pk} saved this key later; replaying would overwrite "
                f"newer content (mark this one abandoned)")
    return ""


def _verify(storage, record: SaveAttempt, outcome):
    """HEAD the key: the stash is freed only when S3 has an object of the stashed size."""
    try:
        same_size = storage.verify(record.key, record.size)
    except Exception as exc:  # noqa: BLE001 - classified and recorded like any failure
        outcome.error, outcome.classification = exc, classify(exc)
    else:
        if not same_size:
            outcome.error = OSError(f"object at {record.key!r} is not {record.size} bytes")
            outcome.classification = Classification("VerifyMismatch", True, "server",
                                                    message=str(outcome.error))
    if outcome.error is not None:
        outcome.attempts.append(AttemptInfo(len(outcome.attempts) + 1,
                                            outcome.classification.code, 0.0))
    return outcome


def _extend_log(record: SaveAttempt, outcome, via: str) -> list[dict]:
    log = list(record.attempt_log or [])
    replay_round = max((entry.get("round", 0) for entry in log), default=0) + 1
    at = timezone.now().isoformat()
    for offset, info in enumerate(outcome.attempts, start=1):
        entry = info.as_dict()
        entry.update(n=record.attempts + offset, round=replay_round, via=via, at=at)
        log.append(entry)
    return log


def _mark_recovered(record: SaveAttempt, outcome, log: list[dict]) -> ItemResult:
    attempts = record.attempts + outcome.attempt_count
    stash.free(record)
    SaveAttempt.objects.using(record_alias()).filter(pk=record.pk).update(
        status=Status.RECOVERED, recovered_at=timezone.now(), attempts=attempts,
        attempt_log=log, next_retry_at=None, updated_at=timezone.now())
    logger.info("save_recovered %s after %s attempt(s), record %s", record.key, attempts,
                record.pk, extra={"event": "save_recovered", "record_id": record.pk,
                                  "attempts": attempts, "storage": record.storage_alias})
    return ItemResult(record.pk, record.key, DELIVERED, attempts=attempts)


def _mark_failed(record: SaveAttempt, outcome, log: list[dict]) -> ItemResult:
    result = outcome.classification
    attempts = record.attempts + outcome.attempt_count
    SaveAttempt.objects.using(record_alias()).filter(pk=record.pk).update(
        attempts=attempts, attempt_log=log, error_code=result.code,
        error_category=result.category, transient=result.transient,
        error_message=(result.message or str(outcome.error))[:4000],
        error_response=result.response, request_id=result.request_id[:128],
        host_id=result.host_id[:256], updated_at=timezone.now())
    logger.warning("replay_failed %s: %s after %s attempt(s), record %s", record.key, result.code,
                   attempts, record.pk, extra={"event": "replay_failed", "record_id": record.pk,
                                               "error_code": result.code, "attempts": attempts})
    return ItemResult(record.pk, record.key, FAILED, code=result.code, attempts=attempts)


# --------------------------------------------------------------------- abandoning
@dataclass
class AbandonResult:
    abandoned: int = 0
    stashes_freed: int = 0
    skipped: int = 0


def abandon(ids: Iterable[int], *, free_stash: bool = False) -> AbandonResult:
    """Give up on unresolved saves: the records stay as evidence; bytes go only if asked."""
    result = AbandonResult()
    alias = record_alias()
    for record_id in ids:
        with transaction.atomic(using=alias):
            record = (SaveAttempt.objects.using(alias).filter(pk=record_id, status__in=UNRESOLVED)
                      .select_for_update(skip_locked=True).first())
            if record is None:
                result.skipped += 1
                continue
            if free_stash and record.has_stash:
                stash.free(record)
                result.stashes_freed += 1
            SaveAttempt.objects.using(alias).filter(pk=record.pk).update(
                status=Status.ABANDONED, next_retry_at=None, updated_at=timezone.now())
            result.abandoned += 1
            logger.warning("save_abandoned %s, record %s (stash %s)", record.key, record.pk,
                           "freed" if free_stash else "kept", extra={
                               "event": "save_abandoned", "record_id": record.pk,
                               "stash_freed": free_stash})
    return result
