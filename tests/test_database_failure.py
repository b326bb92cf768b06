"""The record database fails, S3 fails too: no save loses its bytes, none hangs.

Records go through a real database that a TCP gate (``tests/testbed/tcpgate.py``) takes down or
blackholes (PostgreSQL), or that another writer holds locked (an SQLite file). Saves run in a
thread of their own: a save that never returned would leave it alive, which the tests check
instead of timing anything (the times are in ``benchmarks/database_failure_benchmark.py``).
Then the database comes back and ``retry_failed_saves`` records and delivers every spooled save,
byte for byte, as SeaweedFS shows.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.management import call_command
from django.db import connection, connections

from storage_guard import recording, spool
from storage_guard.errors import SaveFailed
from storage_guard.models import SaveAttempt, StashedPayload, Status
from storage_guard.storage import GuardedS3Storage
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


def assert_spooled(names: list[str]) -> None:
    kept = [spool.load(path)["fields"]["name"] for path in spool.entries()]
    assert sorted(kept) == sorted(names)
    assert recording.WATCHDOG.armed == 0  # every write finished or was cut


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


RECORDS = "default" + recording.SUFFIX  # the record connection conftest registered


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
    storage = storage_in(mode)
    prefix = f"sqlite-locked-{mode}-{uuid.uuid4().hex[:8]}"
    saved = {f"{prefix}/{n}.bin": payload(f"{mode}{n}") for n in range(2)}

    sqlite_file.execute("BEGIN IMMEDIATE")  # another writer holds the database
    for name, body in saved.items():
        save_through_outage(fault_proxy, storage, mode, name, body)
    assert_spooled(list(saved))
    sqlite_file.execute("ROLLBACK")
    assert SaveAttempt.objects.using("records_file").count() == 0

    output = retry_failed_saves()

    assert "2 spooled save(s) recorded, 0 left in the spool" in output
    assert "2 delivered, 0 failed again" in output
    assert_recorded_and_delivered(s3, saved, using="records_file")


# --------------------------------------------------------------------- PostgreSQL down
@ON_PG
@pytest.mark.parametrize("mode", ["raise", "defer"])
def test_postgres_down_spools_then_delivers(pg_gate, fault_proxy, s3, mode):
    storage = storage_in(mode)
    prefix = f"pg-down-{mode}-{uuid.uuid4().hex[:8]}"
    saved = {f"{prefix}/{n}.bin": payload(f"{mode}{n}") for n in range(2)}

    pg_gate.down()
    for name, body in saved.items():
        save_through_outage(fault_proxy, storage, mode, name, body)
    assert_spooled(list(saved))
    assert not SaveAttempt.objects.filter(name__startswith=prefix).exists()
    pg_gate.open()

    output = retry_failed_saves()

    assert "2 spooled save(s) recorded, 0 left in the spool" in output
    assert "2 delivered, 0 failed again" in output
    assert_recorded_and_delivered(s3, saved, using="default")


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

    output = retry_failed_saves()

    assert "2 spooled save(s) recorded, 0 left in the spool" in output
    assert_recorded_and_delivered(s3, saved, using="default")


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
    assert recording.WATCHDOG.armed == 0
    assert events(caplog, "record_write_cut") == 1
    assert events(caplog, "record_failed") == 1  # logged at ERROR, the caller got the name
    pg_gate.open()
    assert not SaveAttempt.objects.filter(name=name).exists()
