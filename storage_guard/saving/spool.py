"""The last-resort spool: a save's bytes on local disk when its record or stash cannot be written.

A failed save keeps its bytes in the stash next to its ``SaveAttempt`` record, both in the
database. When the database itself fails (down, locked, silent, or refusing the row), the save
writes one *entry* here instead: the payload (``<id>.bin``) and a JSON sidecar (``<id>.json``)
holding every column the record would have had, so that ``ingest()`` can write the record and
its stash once the database is back; ``retry_failed_saves`` and the retry task call it before
they deliver anything. The sidecar never holds credentials: the storage is named by its alias,
or by its class and its options without credentials (``storage_spec``).

Writes are atomic: each file is written under a temporary name, flushed to disk, and renamed;
the sidecar is renamed last, so an entry exists exactly when its sidecar does. An entry being
ingested is renamed to ``<id>.ingesting`` first, so two processes never record it twice.

The directory is ``LAST_RESORT_DIR`` (by default ``<temp dir>/storage_guard-spool-<uid>-<db>``,
``<db>`` a short digest of the record database's engine, host, port and name),
created with mode 0700 and refused if another user owns it. In containers it must be a volume
that outlives the container (see ``docs/failure.md``); check ``storage_guard.W006`` warns when
it is not writable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.core.serializers.json import DjangoJSONEncoder
from django.utils.dateparse import parse_datetime

from storage_guard import conf
from storage_guard.log import logger
from storage_guard.models import SaveAttempt, key_digest

VERSION = 1
SIDECAR, PAYLOAD, CLAIMED = ".json", ".bin", ".ingesting"
# A claim older than this belongs to a process that died while ingesting: take it again.
STALE_CLAIM_SECONDS = 600
DIGEST_CHARS = 16


class SpoolUnavailable(OSError):
    """The last-resort spool is turned off, or its directory cannot be used."""


def directory() -> Path | None:
    """The configured spool directory, or None when the spool is turned off."""
    configured = conf.get("LAST_RESORT_DIR")
    if configured is None:
        return Path(tempfile.gettempdir()) / f"storage_guard-spool-{_uid()}-{_database_tag()}"
    return Path(configured) if configured else None


def _uid() -> int | str:
    return os.getuid() if hasattr(os, "getuid") else "user"


def _database_tag() -> str:
    """Entries belong to one record database: two projects on a host never share a default."""
    from django.conf import settings

    database = settings.DATABASES.get(conf.get("DATABASE_ALIAS"), {})
    where = "|".join(str(database.get(k, "")) for k in ("ENGINE", "HOST", "PORT", "NAME"))
    return hashlib.sha256(where.encode()).hexdigest()[:10]


def problem() -> str:
    """Why the spool cannot take an entry now ("" when it can); for the system check."""
    try:
        path = ready_directory()
    except SpoolUnavailable as exc:
        return str(exc)
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable by this process"
    return ""


def ready_directory() -> Path:
    """The spool directory, created if needed (mode 0700) and owned by this user."""
    path = directory()
    if path is None:
        raise SpoolUnavailable("the last-resort spool is turned off (LAST_RESORT_DIR is empty)")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise SpoolUnavailable(f"{path} cannot be created: {exc.strerror or exc}") from exc
    if path.is_symlink() or not path.is_dir():
        raise SpoolUnavailable(f"{path} is not a directory")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise SpoolUnavailable(f"{path} belongs to another user (uid {info.st_uid})")
    return path


# --------------------------------------------------------------------- writing an entry
def write(payload, fields: dict, *, stash_options: dict) -> str:
    """Keep ``payload`` and the record ``fields`` it belongs to; returns the entry id.

    ``stash_options`` (``stash_storage``, ``stash_db_max_bytes``) say where ``ingest`` puts the
    bytes. Raises ``SpoolUnavailable`` (an ``OSError``) when the entry cannot be written.
    """
    path = ready_directory()
    digest = key_digest(fields["key"])[:DIGEST_CHARS]
    entry_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}-{digest}"
    sidecar = {"version": VERSION, "id": entry_id, "created_at": _now_iso(),
               "fields": fields, "stash": stash_options, "size": payload.size,
               "sha256": payload.sha256}
    try:
        _write_atomic(path / (entry_id + PAYLOAD), _chunks(payload))
        _write_atomic(path / (entry_id + SIDECAR),
                      [json.dumps(sidecar, cls=DjangoJSONEncoder).encode()])
    except (OSError, TypeError, ValueError) as exc:
        _remove(path / (entry_id + PAYLOAD))
        raise SpoolUnavailable(f"cannot write to the spool {path}: {exc}") from exc
    return entry_id


def _now_iso() -> str:
    from django.utils import timezone

    return timezone.now().isoformat()


def _chunks(payload):
    stream = payload.stream()
    while chunk := stream.read(1024 * 1024):
        yield chunk


def _write_atomic(target: Path, chunks) -> None:
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        _remove(Path(temporary))
        raise


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# --------------------------------------------------------------------- reading entries
def entries(key: str | None = None) -> list[Path]:
    """Sidecars waiting to be ingested (of ``key`` only, if given), oldest first."""
    path = directory()
    if path is None or not path.is_dir():
        return []
    pattern = f"*-{key_digest(key)[:DIGEST_CHARS]}{SIDECAR}" if key is not None \
        else f"*{SIDECAR}"
    return sorted(path.glob(pattern))


def load(sidecar: Path) -> dict:
    return json.loads(sidecar.read_text())


def payload_path(sidecar: Path) -> Path:
    return sidecar.with_suffix(PAYLOAD)


def read_payload(sidecar: Path, entry: dict) -> bytes:
    """The entry's bytes, checked against the size and SHA-256 recorded with them."""
    data = payload_path(sidecar).read_bytes()
    if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ValueError(f"spool entry {entry['id']} is damaged (size or SHA-256 differ)")
    return data


@dataclass(frozen=True)
class SpooledSave:
    """A deferred save known only to the spool (not recorded yet), as deferred reads see it."""

    name: str
    size: int
    data: bytes


def find(key: str) -> SpooledSave | None:
    """The newest spooled save of ``key`` with its bytes (deferred reads before ingestion)."""
    for sidecar in reversed(entries(key)):
        with contextlib.suppress(OSError, ValueError, KeyError):
            entry = load(sidecar)
            if entry["fields"]["key"] == key:
                data = read_payload(sidecar, entry)
                return SpooledSave(entry["fields"]["name"], len(data), data)
    return None


def cancel(key: str) -> int:
    """Drop the spooled saves of ``key`` (the name was deleted); returns how many."""
    dropped = 0
    for sidecar in entries(key):
        with contextlib.suppress(OSError, ValueError):
            entry = load(sidecar)
            if entry["fields"]["key"] != key:
                continue
            _remove(sidecar)
            _remove(payload_path(sidecar))
            dropped += 1
            logger.warning("spool_cancelled %s: spool entry %s dropped, the name was deleted",
                           entry["id"], entry["id"], extra={
                               "event": "spool_cancelled", "spool_entry": entry["id"]})
    return dropped


# --------------------------------------------------------------------- ingestion
@dataclass
class IngestResult:
    recorded: int = 0
    failed: int = 0
    record_ids: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.recorded} spooled save(s) recorded, {self.failed} left in the spool"


def ingest() -> IngestResult:
    """Turn every spooled entry into a record and stash; stops at the first database failure.

    Safe to run in several processes at once (each entry is claimed by a rename) and again
    after a crash (an entry whose record already exists is only removed).
    """
    result = IngestResult()
    path = directory()
    if path is None or not path.is_dir():
        return result
    _release_stale_claims(path)
    for sidecar in entries():
        claimed = sidecar.with_suffix(CLAIMED)
        try:
            os.rename(sidecar, claimed)
        except FileNotFoundError:
            continue  # another process took it
        try:
            record = _ingest_one(claimed)
        except Exception as exc:  # noqa: BLE001 - the entry stays for the next run
            os.rename(claimed, sidecar)
            result.failed += 1
            logger.error("spool_ingest_failed %s: %s: %s", sidecar.stem, type(exc).__name__, exc,
                         extra={"event": "spool_ingest_failed", "spool_entry": sidecar.stem,
                                "error_code": type(exc).__name__})
            if _is_database_error(exc):  # the database is still out: the rest can wait too
                result.failed = len(entries())
                break
            continue
        result.recorded += 1
        result.record_ids.append(record.pk)
    return result


def _release_stale_claims(path: Path) -> None:
    cutoff = time.time() - STALE_CLAIM_SECONDS
    for claimed in path.glob(f"*{CLAIMED}"):
        with contextlib.suppress(OSError):
            if claimed.stat().st_mtime < cutoff:
                os.rename(claimed, claimed.with_suffix(SIDECAR))


def _is_database_error(exc: BaseException) -> bool:
    from django.db import Error

    return isinstance(exc, Error)


def _ingest_one(claimed: Path) -> SaveAttempt:
    from storage_guard.saving import records
    from storage_guard.saving.payload import Payload

    entry = load(claimed)
    fields = dict(entry["fields"])
    created_at = parse_datetime(entry["created_at"])
    record = _already_recorded(fields, entry, created_at)
    if record is None:
        payload = Payload.from_bytes(read_payload(claimed, entry))
        plan = _stash(payload, fields, entry["stash"])
        record = records.insert_failure(
            {**fields, "stash_backend": plan.backend, "stash_location": plan.location},
            plan.db_bytes)
        records.backdate(record, created_at)
        _schedule_retry(record)
        logger.warning("spool_recorded %s as record %s (%s)", entry["id"], record.pk,
                       record.status, extra={"event": "spool_recorded", "record_id": record.pk,
                                             "spool_entry": entry["id"]})
    _remove(payload_path(claimed))
    _remove(claimed)
    return record


def _stash(payload, fields: dict, options: dict):
    """Where the ingested bytes go: a stash file the save already wrote, or a new stash."""
    from storage_guard.saving import stash

    location = fields.pop("stash_location", "")
    fields.pop("stash_backend", None)
    if location and stash.location_exists(location):
        return stash.StashPlan(stash.StashBackend.STORAGE, location)
    return stash.stash(payload, stash_storage=options.get("stash_storage"),
                       db_max_bytes=options.get("stash_db_max_bytes", 0))


def _already_recorded(fields: dict, entry: dict, created_at: datetime | None):
    """The record an interrupted earlier ingestion already wrote for this entry, if any."""
    from storage_guard.saving.records import record_alias

    return (SaveAttempt.objects.using(record_alias()).for_key(fields["key"])
            .filter(sha256=entry["sha256"], created_at=created_at).first())


def _schedule_retry(record: SaveAttempt) -> None:
    if conf.get("RETRY_WITH_TASKS"):
        from storage_guard.tasks import schedule_retry

        schedule_retry(record)
