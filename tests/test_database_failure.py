"""The record database fails, S3 fails too: no save loses its bytes, none hangs.

Records go through a real database that a TCP gate (``tests/testbed/tcpgate.py``) takes down or
blackholes (PostgreSQL), or that another writer holds locked (an SQLite file). Saves run in a
thread of their own: a save that never returned would leave it alive, which the tests check
instead of timing anything (the times are in ``benchmarks/database_failure_benchmark.py``).
Then the database comes back and ``retry_failed_saves`` records and delivers every spooled save,
byte for byte, as SeaweedFS shows.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import uuid

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.management import call_command
from django.db import connection, connections

from storage_guard.errors import SaveFailed
from storage_guard.models import SaveAttempt, StashedPayload, Status
from storage_guard.saving import records, spool
from storage_guard.storage import GuardedS3Storage
from tests.test_pending_saves import assert_nothing_comes_back
from tests.testbed.tcpgate import TcpGate

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

ON_PG = pytest.mark.skipif(
    "connection.vendor != 'postgresql'",
    reason="runs in the PostgreSQL pass of .ci/run (--ds=tests.settings_postgres)")
HANG = 60  # seconds: far above any bound; a thread still alive after it is stuck


# --------------------------------------------------------------------- helpers
def storage_in(mode: str) -> GuardedS3Storage:
    """The test settings' default storage (alias "default", so replay rebuilds it) in ``mode``."""
    options = {**settings.STORAGES["default"]["OPTIONS"], "on_failure": mode,
               "max_attempts": 2, "breaker_threshold": 0}
    return GuardedS3Storage(**options)


def in_thread(fn):
    """Run ``fn`` in a fresh thread (its own connections); its value, or the exception it raised.

    A database added during the test is connected first with ``connect()``: Django's test case
    only lets the databases it knew at set-up open connections through ``ensure_connection``.
    """
    box: dict = {}

    def run():
        try:
            if "records_file" in connections.settings:
                connections["records_file"].connect()
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["value"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, name="save-under-test", daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), "the save hung"
    return box["value"]


def attempt_save(storage, name: str, body: bytes):
    """``storage.save``, returning the exception instead of raising it."""
    try:
        return storage.save(name, ContentFile(body))
    except Exception as exc:  # noqa: BLE001 - the test looks at what the caller got
        return exc


def save_in_thread(storage, name: str, body: bytes):
    return in_thread(lambda: attempt_save(storage, name, body))


def save_through_outage(fault_proxy, storage, mode: str, name: str, body: bytes):
    """A save while S3 fails and the database is out: the caller sees the guard's answer only."""
    with fault_proxy.outage_window("internal"):
        result = save_in_thread(storage, name, body)
    assert_answer(result, mode, name)
    return result


def assert_answer(result, mode: str, name: str) -> None:
    """What the caller of a failed save must get with the database out: never a DB error."""
    if mode == "defer":
        assert result == name
    else:
        assert isinstance(result, SaveFailed), repr(result)
        assert result.record_id is None and result.kept and result.spool_entry
        assert "last-resort spool" in str(result)
    return result


def spool_two_saves(fault_proxy, mode: str, tag: str, *, database_out, database_back) -> dict:
    """Two saves through an S3 outage while the database is out; they end in the spool."""
    storage = storage_in(mode)
    prefix = f"{tag}-{mode}-{uuid.uuid4().hex[:8]}"
    saved = {f"{prefix}/{n}.bin": payload(f"{mode}{n}") for n in range(2)}
    database_out()
    for name, body in saved.items():
        save_through_outage(fault_proxy, storage, mode, name, body)
    assert_spooled(list(saved))
    database_back()
    return saved


def retry_and_check(s3, saved: dict[str, bytes], *, using: str) -> None:
    output = retry_failed_saves()
    assert f"{len(saved)} spooled save(s) recorded, 0 left in the spool" in output
    assert f"{len(saved)} delivered, 0 failed again" in output
    assert_recorded_and_delivered(s3, saved, using=using)


def assert_spooled(names: list[str]) -> None:
    kept = [spool.load(path)["fields"]["name"] for path in spool.entries()]
    assert sorted(kept) == sorted(names)
    assert records.WATCHDOG.armed == 0  # every write finished or was cut


def assert_recorded_and_delivered(s3, saved: dict[str, bytes], *, using: str) -> None:
    """After ``retry_failed_saves``: one recovered record per save, the bytes in S3."""
    assert spool.entries() == []
    for name, body in saved.items():
        record = SaveAttempt.objects.using(using).get(name=name)
        assert record.status == Status.RECOVERED, (name, record.status)
        assert record.error_code == "InternalError"  # the save's own failure, from the sidecar
        assert [e["code"] for e in record.attempt_log] == ["InternalError"] * 2 + ["OK"]
        assert s3.get_object(Bucket=settings.TEST_BUCKET, Key=record.key)["Body"].read() == body
    assert not StashedPayload.objects.using(using).exists()


@pytest.fixture
def spool_dir(tmp_path, settings):
    path = tmp_path / "spool"
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "LAST_RESORT_DIR": str(path),
                              "RECORD_STATEMENT_TIMEOUT": 1.0, "RECORD_CONNECT_TIMEOUT": 1.0}
    return path


RECORDS = "default" + records.SUFFIX  # the record connection conftest registered


@pytest.fixture
def pg_gate(settings, spool_dir):
    """Records go through a gate to the test database: ``gate.down()``, ``gate.blackhole()``.

    The record connection's own alias is pointed at the gate (in place: every thread's
    connection shares this settings dict) and put back afterwards.
    """
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "INDEPENDENT_CONNECTION": True}
    records = connections.settings[RECORDS]
    original = (records["HOST"], records["PORT"])
    gate = TcpGate(original[0] or "127.0.0.1", int(original[1] or 5432)).start()
    connections[RECORDS].close()
    records.update(HOST="127.0.0.1", PORT=str(gate.port))
    yield gate
    connections[RECORDS].close()
    records.update(HOST=original[0], PORT=original[1])
    gate.stop()


@pytest.fixture
def sqlite_file(settings, spool_dir, tmp_path):
    """Records in an SQLite file; the fixture yields a second connection to lock it with."""
    path = tmp_path / "records.sqlite3"
    connections.settings["records_file"] = {
        **connection.settings_dict, "ENGINE": "django.db.backends.sqlite3", "NAME": str(path),
        "HOST": "", "PORT": "", "OPTIONS": {}, "TEST": {}}
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "DATABASE_ALIAS": "records_file"}
    connections["records_file"].connect()
    with connections["records_file"].schema_editor() as editor:
        editor.create_model(SaveAttempt)
        editor.create_model(StashedPayload)
    other = sqlite3.connect(path, isolation_level=None)
    yield other
    other.close()
    connections["records_file"].close()
    del connections["records_file"]
    del connections.settings["records_file"]


def retry_failed_saves() -> str:
    from io import StringIO

    out = StringIO()
    call_command("retry_failed_saves", stdout=out)
    return out.getvalue()


def events(caplog, event: str) -> int:
    return sum(1 for record in caplog.records if getattr(record, "event", "") == event)


def payload(tag: str) -> bytes:
    return f"{tag}:{uuid.uuid4().hex}:".encode() + os.urandom(2048)


# --------------------------------------------------------------------- SQLite locked
@pytest.mark.parametrize("mode", ["raise", "defer"])
def test_sqlite_locked_by_another_writer_spools_then_delivers(sqlite_file, fault_proxy, s3,
                                                             mode):
    saved = spool_two_saves(fault_proxy, mode, "sqlite-locked",
                            database_out=lambda: sqlite_file.execute("BEGIN IMMEDIATE"),
                            database_back=lambda: sqlite_file.execute("ROLLBACK"))
    assert SaveAttempt.objects.using("records_file").count() == 0
    retry_and_check(s3, saved, using="records_file")


# --------------------------------------------------------------------- PostgreSQL down
@ON_PG
@pytest.mark.parametrize("mode", ["raise", "defer"])
def test_postgres_down_spools_then_delivers(pg_gate, fault_proxy, s3, mode):
    saved = spool_two_saves(fault_proxy, mode, "pg-down", database_out=pg_gate.down,
                            database_back=pg_gate.open)
    assert not SaveAttempt.objects.filter(name__in=list(saved)).exists()
    retry_and_check(s3, saved, using="default")


# --------------------------------------------------------------------- PostgreSQL blackholed
@ON_PG
@pytest.mark.parametrize("mode", ["raise", "defer"])
def test_postgres_blackholed_spools_then_delivers(pg_gate, fault_proxy, s3, mode, caplog):
    """Both ways a silent database bites: an open record connection (cut by the watchdog) and
    a new one (the connect timeout)."""
    storage = storage_in(mode)
    prefix = f"pg-blackhole-{mode}-{uuid.uuid4().hex[:8]}"
    saved = {f"{prefix}/open-connection.bin": payload("open"),
             f"{prefix}/new-connection.bin": payload("new")}
    (on_open, body_open), (on_new, body_new) = saved.items()

    def scenario():
        storage.save(f"{prefix}/warm.bin", ContentFile(b"opens the record connection"))
        pg_gate.blackhole()
        with fault_proxy.outage_window("internal"):
            first = attempt_save(storage, on_open, body_open)
            connections[RECORDS].close()
            second = attempt_save(storage, on_new, body_new)
        return first, second

    first, second = in_thread(scenario)
    assert events(caplog, "record_write_cut") == 1  # the open connection: cut by the watchdog
    assert_answer(first, mode, on_open)
    assert_answer(second, mode, on_new)
    assert_spooled(list(saved))
    pg_gate.open()
    retry_and_check(s3, saved, using="default")


@ON_PG
@pytest.mark.parametrize("mode", ["raise", "defer"])
def test_success_with_the_database_blackholed_returns_and_logs(pg_gate, fault_proxy, s3, mode,
                                                               caplog):
    storage = storage_in(mode)
    name = f"pg-blackhole-ok-{mode}-{uuid.uuid4().hex[:8]}.bin"
    body = payload("ok")

    def scenario():
        storage.save(f"warm-{name}", ContentFile(b"opens the record connection"))
        pg_gate.blackhole()
        return attempt_save(storage, name, body)

    assert in_thread(scenario) == name
    assert s3.get_object(Bucket=settings.TEST_BUCKET, Key=name)["Body"].read() == body
    assert fault_proxy.counts["PUT"] == 2  # the warm-up and this save: one request each
    assert spool.entries() == []  # the object is in S3: nothing to keep
    assert records.WATCHDOG.armed == 0
    assert events(caplog, "record_write_cut") == 1
    assert events(caplog, "record_failed") == 1  # logged at ERROR, the caller got the name
    pg_gate.open()
    assert not SaveAttempt.objects.filter(name=name).exists()


# --------------------------------------------------------------------- what an entry holds
def test_a_stash_file_written_before_the_record_failed_is_referenced_not_orphaned(
        sqlite_file, fault_proxy, s3):
    storage = storage_in("raise")
    storage.stash_storage, storage.stash_db_max_bytes = "stash", 1024
    name, body = f"orphan-{uuid.uuid4().hex[:8]}/big.bin", os.urandom(8000)
    sqlite_file.execute("BEGIN IMMEDIATE")
    save_through_outage(fault_proxy, storage, "raise", name, body)
    [sidecar] = spool.entries()
    location = spool.load(sidecar)["fields"]["stash_location"]
    alias, stash_name = location.split(":", 1)
    assert storages[alias].exists(stash_name)  # written before the record failed ...
    sqlite_file.execute("ROLLBACK")

    retry_failed_saves()

    record = SaveAttempt.objects.using("records_file").get(name=name)
    assert record.status == Status.RECOVERED
    assert record.attempt_log[0]["code"] == "InternalError"
    assert not storages[alias].exists(stash_name)  # ... and freed once delivered: no orphan
    assert s3.get_object(Bucket=settings.TEST_BUCKET, Key=record.key)["Body"].read() == body


def test_a_spool_entry_holds_no_credentials_and_only_its_owner_reads_it(
        sqlite_file, fault_proxy, bucket, spool_dir):
    from tests.conftest import TEST_KEY

    storage = GuardedS3Storage(bucket_name=bucket, endpoint_url=fault_proxy.endpoint_url,
                               access_key=TEST_KEY, secret_key=TEST_KEY, region_name="us-east-1",
                               on_failure="defer", max_attempts=1, breaker_threshold=0)
    sqlite_file.execute("BEGIN IMMEDIATE")
    save_through_outage(fault_proxy, storage, "defer", "private/one.bin", b"secret payload")
    sqlite_file.execute("ROLLBACK")
    [sidecar] = spool.entries()
    text = sidecar.read_text()
    entry = json.loads(text)
    assert TEST_KEY not in text and "secret payload" not in text
    assert entry["fields"]["storage_spec"]["options"]["bucket_name"] == bucket
    assert spool.payload_path(sidecar).read_bytes() == b"secret payload"
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600
    assert [p.name for p in spool_dir.iterdir() if p.name.startswith(".tmp-")] == []


def test_delete_drops_a_spooled_save_so_no_retry_brings_it_back(sqlite_file, fault_proxy, s3):
    storage = storage_in("defer")
    name = f"spooled-delete-{uuid.uuid4().hex[:8]}.bin"
    sqlite_file.execute("BEGIN IMMEDIATE")
    body = b"deleted before it arrived"
    save_through_outage(fault_proxy, storage, "defer", name, body)
    assert len(spool.entries()) == 1
    # Not recorded yet: this machine's reads are served from the spool, as from a stash.
    assert storage.exists(name) and storage.size(name) == len(body)
    with storage.open(name) as handle:
        assert handle.read() == body
    sqlite_file.execute("ROLLBACK")

    storage.delete(name)

    assert spool.entries() == []
    assert_nothing_comes_back(storage, name, fault_proxy, s3)


def test_when_even_the_spool_fails_the_caller_is_told_the_bytes_are_not_kept(
        sqlite_file, fault_proxy, settings, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("the spool directory cannot be created under a file")
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD,
                              "LAST_RESORT_DIR": str(blocker / "spool")}
    sqlite_file.execute("BEGIN IMMEDIATE")
    for mode in ("raise", "defer"):
        with fault_proxy.outage_window("internal"):
            result = save_in_thread(storage_in(mode), f"lost-{mode}.bin", b"x")
        assert isinstance(result, SaveFailed), (mode, result)  # defer cannot pretend
        assert result.kept is False and "could NOT be kept" in str(result)
    sqlite_file.execute("ROLLBACK")
    assert events(caplog, "save_lost") == 2


def test_the_retry_task_records_spooled_saves_first(sqlite_file, fault_proxy, s3):
    from storage_guard import tasks

    saved = spool_two_saves(fault_proxy, "defer", "task",
                            database_out=lambda: sqlite_file.execute("BEGIN IMMEDIATE"),
                            database_back=lambda: sqlite_file.execute("ROLLBACK"))

    outcome = tasks.retry_save.call(987654321)  # any retry task, even of a record now gone

    assert outcome == {"delivered": 0, "failed": 0, "skipped": 1}
    assert spool.entries() == []
    records = SaveAttempt.objects.using("records_file").filter(name__in=list(saved))
    assert sorted(r.status for r in records) == [Status.DEFERRED, Status.DEFERRED]
    assert all(r.has_stash for r in records)
    output = retry_failed_saves()
    assert "spooled" not in output and "2 delivered, 0 failed again" in output
    assert_recorded_and_delivered(s3, saved, using="records_file")
