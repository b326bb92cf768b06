"""Success records off the request path (storage_guard.saving.success_records) and RECORD_SUCCESSES.

Saves go through the real fault proxy to SeaweedFS; records go to the real database. The writer
is turned on per test (the suite's settings write inline, so other tests read records at once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from storage_guard import checks
from storage_guard.errors import SaveFailed
from storage_guard.models import SaveAttempt, Status
from storage_guard.saving import records, success_records
from tests import db_triggers

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[1]
on_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="runs in the PostgreSQL pass of .ci/run")


@pytest.fixture
def background_writer(settings):
    """Success records through the background writer; the writer is shut down afterwards."""

    def configure(**overrides):
        settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "RECORD_WRITER": "background",
                                  **overrides}
        success_records.shutdown()
        return success_records.writer()

    yield configure
    success_records.shutdown()


def fields(name: str) -> dict:
    """The columns of a first-try success, as the storage queues them."""
    return {"storage_alias": "default", "bucket": "b", "name": name, "key": name,
            "key_bytes": len(name), "size": 2, "sha256": "0" * 64,
            "content_type": "application/octet-stream",
            "write_params": {"ContentType": "application/octet-stream"},
            "status": Status.SUCCEEDED, "attempts": 1, "duration_ms": 1.0, "attempt_log": []}


def names(prefix: str) -> list[str]:
    return sorted(SaveAttempt.objects.filter(name__startswith=prefix)
                  .values_list("name", flat=True))


# ----------------------------------------------------------------------- the request path


def test_a_save_queues_its_record_and_flush_writes_it(guarded_storage_factory, read_object,
                                                      background_writer):
    writer = background_writer()
    storage = guarded_storage_factory()

    name = storage.save("queued/a.bin", ContentFile(b"queued"))

    assert read_object(name) == b"queued"
    assert records.flush(timeout=30)
    record = SaveAttempt.objects.get(key=name)
    assert (record.status, record.size, record.attempts) == (Status.SUCCEEDED, 6, 1)
    assert writer.written == 1 and writer.written_inline == 0


def test_save_with_record_still_returns_the_written_record(guarded_storage_factory,
                                                           background_writer):
    background_writer(RECORD_SUCCESSES="none")
    storage = guarded_storage_factory()

    name, record = storage.save_with_record("now/a.bin", ContentFile(b"now"))

    assert record is not None and record.pk is not None  # written before it returned
    assert SaveAttempt.objects.get(pk=record.pk).key == name
    assert success_records.writer().queue.unfinished_tasks == 0


def test_records_queued_by_many_threads_are_each_written_once(guarded_storage_factory,
                                                              background_writer):
    background_writer()
    storage = guarded_storage_factory()
    wanted = [f"threads/{t}-{n}.bin" for t in range(4) for n in range(10)]

    with ThreadPoolExecutor(4) as pool:
        saved = list(pool.map(lambda name: storage.save(name, ContentFile(b"t")), wanted))

    assert records.flush(timeout=30)
    assert sorted(saved) == sorted(wanted) == names("threads/")


def test_a_save_inside_a_coroutine_gets_its_record(guarded_storage_factory, background_writer):
    """ASGI: the ORM never runs in the event loop, so even a save called from a coroutine (an
    async view that forgot sync_to_async) keeps its record, and so does the proper way."""
    background_writer()
    storage = guarded_storage_factory()

    async def view():
        direct = storage.save("asgi/direct.bin", ContentFile(b"a"))
        wrapped = await sync_to_async(storage.save)("asgi/wrapped.bin", ContentFile(b"b"))
        return [direct, wrapped]

    saved = asyncio.run(view())

    assert records.flush(timeout=30)
    assert sorted(saved) == names("asgi/") == ["asgi/direct.bin", "asgi/wrapped.bin"]


# ----------------------------------------------------------------------- batching


def test_queued_records_are_written_in_batches(background_writer):
    writer = background_writer(RECORD_BATCH_SIZE=10)
    for number in range(25):  # queued directly, before any thread runs: flush drains them here
        writer.queue.put_nowait(fields(f"batch/{number:02d}"))

    written = []
    insert_many = success_records.insert_many

    def counting(rows):
        written.append(len(rows))
        insert_many(rows)

    with CaptureQueriesContext(connection) as queries, \
            mock.patch.object(success_records, "insert_many", counting):
        assert writer.flush()

    assert written == [10, 10, 5]
    if connection.vendor != "postgresql":  # PostgreSQL writes each batch with one COPY
        inserts = [q["sql"] for q in queries.captured_queries if "INSERT INTO" in q["sql"]]
        assert [sql.split(" times:")[0] for sql in inserts] == ["10", "10", "5"]  # executemany
    assert writer.batches == 3
    assert names("batch/") == [f"batch/{n:02d}" for n in range(25)]


def test_a_batch_stores_any_text_as_the_synchronous_insert_would(background_writer):
    """The writer prepares each column once per batch (``_column_plan``): text from outside
    (NUL, lone surrogates, bytes, over-long values) is stored exactly as ``insert_attempt``
    stores it, and defaults and timestamps are filled in."""
    writer = background_writer()
    hostile = {**fields("plan/a\x00b\ud800.txt"), "content_type": b"\x89PNG secret bytes",
               "bucket": "x" * 1000, "write_params": {"Metadata": {"k": "v\x00\ud800"}},
               "error_message": b"secret bytes", "duration_ms": 3, "attempts": True}
    plain = {key: value for key, value in fields("plan/plain.txt").items()
             if key not in ("attempt_log", "duration_ms")}  # left to the model's defaults
    writer.queue.put_nowait(hostile)
    writer.queue.put_nowait(plain)
    assert writer.flush() and writer.lost == 0
    row = SaveAttempt.objects.get(name__startswith="plan/a")
    reference = records.insert_attempt(**{**fields("ref/a\x00b\ud800.txt"), **{
        k: hostile[k] for k in ("content_type", "bucket", "write_params")}})
    for column in ("content_type", "bucket", "write_params"):
        assert getattr(row, column) == getattr(reference, column), column
    assert row.name == "plan/a\\x00b\\ud800.txt" and row.content_type == "<17 bytes>"
    assert row.error_message == "<12 bytes>"  # a text column without a length too
    assert len(row.bucket) == SaveAttempt._meta.get_field("bucket").max_length
    assert (row.duration_ms, row.attempts) == (3.0, 1)
    assert row.key_digest == records.key_digest(hostile["key"])
    default = SaveAttempt.objects.get(name="plan/plain.txt")
    assert (default.attempt_log, default.duration_ms) == ([], 0.0)
    assert default.created_at is not None and default.created_at == default.updated_at


def test_json_values_rows_repeat_are_stored_as_each_row_sent_them(background_writer):
    """The writer prepares and serializes once the JSON values rows repeat (an empty attempt
    log, a dict of text, no storage spec); every row still stores its own values, as the
    synchronous insert stores them."""
    writer = background_writer()
    shared = {"ContentType": "image/png", "CacheControl": "max-age=60"}
    rows = [{**fields(f"memo/{n}"), "write_params": dict(shared), "attempt_log": [],
             "storage_spec": None} for n in range(3)]
    rows.append({**fields("memo/other"), "write_params": {"ContentType": "text/plain"},
                 "attempt_log": [], "storage_spec": {"backend": "x", "options": {"a": 1}}})
    rows.append({**fields("memo/ordered"), "write_params": {"CacheControl": "max-age=60",
                                                            "ContentType": "image/png"}})
    for row in rows:
        writer.queue.put_nowait(row)
    writer.queue.put_nowait({**fields("memo/again"), "write_params": dict(shared)})
    assert writer.flush() and writer.lost == 0

    stored = {r.name: r for r in SaveAttempt.objects.filter(name__startswith="memo/")}
    reference = records.insert_attempt(**{**fields("ref/memo"), "write_params": dict(shared),
                                          "attempt_log": [], "storage_spec": None})
    for n in range(3):
        row = stored[f"memo/{n}"]
        assert (row.write_params, row.attempt_log, row.storage_spec) == (
            reference.write_params, reference.attempt_log, reference.storage_spec) == (
            shared, [], None)
    assert stored["memo/other"].write_params == {"ContentType": "text/plain"}
    assert stored["memo/other"].storage_spec == {"backend": "x", "options": {"a": 1}}
    assert stored["memo/ordered"].write_params == shared
    if connection.vendor != "postgresql":  # text keeps the row's own key order; jsonb sorts
        assert list(stored["memo/ordered"].write_params) == ["CacheControl", "ContentType"]
    assert stored["memo/again"].write_params == shared


@pytest.mark.postgres
@on_postgres
def test_without_psycopg3_a_batch_is_written_by_executemany(background_writer, monkeypatch):
    # psycopg2 cannot be installed beside psycopg here; its cursors lack copy(), so this is the
    # path it takes: the same batch through executemany, on the same PostgreSQL.
    assert success_records.copy_supported(connection)  # psycopg 3 itself takes COPY
    psycopg2_connection = SimpleNamespace(vendor="postgresql", Database=SimpleNamespace(
        __name__="psycopg2"))
    assert not success_records.copy_supported(psycopg2_connection)
    monkeypatch.setattr(success_records, "copy_supported", lambda _: False)
    writer = background_writer(RECORD_BATCH_SIZE=10)
    for number in range(12):
        writer.queue.put_nowait(fields(f"nocopy/{number:02d}"))
    with CaptureQueriesContext(connection) as queries:
        assert writer.flush()
    inserts = [q["sql"] for q in queries.captured_queries if "INSERT INTO" in q["sql"]]
    assert [sql.split(" times:")[0] for sql in inserts] == ["10", "2"]
    assert names("nocopy/") == [f"nocopy/{n:02d}" for n in range(12)]


@pytest.mark.postgres
@on_postgres
def test_records_gather_into_batches_while_the_writer_waits(background_writer, side_connection):
    writer = background_writer(RECORD_BATCH_SIZE=10)
    side_connection.execute("BEGIN")
    side_connection.execute("LOCK TABLE storage_guard_saveattempt IN SHARE MODE")
    writer.submit(fields("gather/first"))
    wait_for_blocked_insert()  # the writer holds one record and waits

    for number in range(25):
        writer.submit(fields(f"gather/{number:02d}"))
    side_connection.execute("ROLLBACK")

    assert writer.flush(timeout=30)
    assert writer.batches == 4  # 1, then 10 + 10 + 5
    assert len(names("gather/")) == 26


def test_records_gather_for_the_linger_and_flush_does_not_wait_it_out(background_writer):
    """RECORD_LINGER: the writer waits that long after a batch's first record, so the records
    that arrive meanwhile share its commit; ``flush()`` cuts the wait short."""
    writer = background_writer(RECORD_LINGER=60)
    for number in range(20):
        writer.submit(fields(f"linger/{number:02d}"))
    assert names("linger/") == []  # the writer is still gathering

    assert writer.flush(timeout=30)  # without the wake-up it would wait out the 60 s
    assert writer.batches == 1
    assert names("linger/") == [f"linger/{n:02d}" for n in range(20)]


def test_stopping_the_writer_does_not_wait_out_the_linger(background_writer):
    writer = background_writer(RECORD_LINGER=60)
    writer.submit(fields("stop/0"))

    assert success_records.shutdown(timeout=30)
    assert not writer.thread.is_alive() and names("stop/") == ["stop/0"]


def test_without_a_linger_each_record_is_written_as_it_comes(background_writer):
    writer = background_writer(RECORD_LINGER=0)
    for number in range(3):
        writer.submit(fields(f"nolinger/{number}"))
        deadline = time.monotonic() + 30
        # written with no flush: nothing holds the record back. (The writer's own count is
        # polled: on SQLite a query while the writer commits finds the table locked.)
        while writer.written <= number and time.monotonic() < deadline:
            time.sleep(0.01)
    assert (writer.written, writer.batches) == (3, 3)
    assert names("nolinger/") == [f"nolinger/{n}" for n in range(3)]


# ----------------------------------------------------------------------- a full queue


@pytest.mark.postgres
@on_postgres
def test_a_full_queue_writes_in_the_request_and_logs(background_writer, side_connection,
                                                     held_records, caplog):
    writer = background_writer(RECORD_QUEUE_SIZE=2)
    side_connection.execute("SELECT pg_advisory_lock(1414)")
    writer.submit(fields("held/first"))  # the writer takes it and waits for the lock
    wait_for_blocked_insert()
    assert writer.submit(fields("full/1")) is None and writer.submit(fields("full/2")) is None

    with caplog.at_level(logging.WARNING, logger="storage_guard"):
        record = writer.submit(fields("full/3"))

    assert record is not None and SaveAttempt.objects.filter(pk=record.pk).exists()
    assert [r.event for r in caplog.records] == ["record_queue_full"]
    assert writer.written_inline == 1
    side_connection.execute("SELECT pg_advisory_unlock(1414)")
    assert writer.flush(timeout=30)
    assert names("full/") == ["full/1", "full/2", "full/3"] and names("held/") == ["held/first"]


# ----------------------------------------------------------------------- database errors


def test_a_database_error_in_the_writer_loses_no_save_and_is_logged(
        guarded_storage_factory, read_object, background_writer, refusing_records, caplog):
    writer = background_writer()
    storage = guarded_storage_factory()

    with caplog.at_level(logging.ERROR, logger="storage_guard"):
        refused = storage.save("unrecorded/a.bin", ContentFile(b"kept in S3"))
        kept = storage.save("recorded/b.bin", ContentFile(b"recorded"))
        assert records.flush(timeout=30)

    assert (read_object(refused), read_object(kept)) == (b"kept in S3", b"recorded")
    assert list(SaveAttempt.objects.values_list("key", flat=True)) == [kept]
    assert (writer.written, writer.lost) == (1, 1)
    lost = [r for r in caplog.records if getattr(r, "event", "") == "record_failed"]
    assert [r.records_lost for r in lost] == [1]


@pytest.mark.postgres
@on_postgres
def test_a_connection_the_server_closed_is_replaced_and_the_batch_retried(background_writer,
                                                                          side_connection):
    writer = background_writer()
    writer.submit(fields("reconnect/0"))
    assert writer.flush(timeout=30)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        mine = cursor.fetchone()[0]
    killed = side_connection.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s)",
        [mine]).fetchone()[0]
    assert killed == 1  # the writer's connection, idle between batches

    writer.submit(fields("reconnect/1"))

    assert writer.flush(timeout=30)
    assert (writer.written, writer.lost) == (2, 0)
    assert names("reconnect/") == ["reconnect/0", "reconnect/1"]


def test_failures_are_written_at_once_whatever_the_writer(guarded_storage_factory,
                                                          fault_proxy, background_writer):
    background_writer(RECORD_SUCCESSES="none")
    storage = guarded_storage_factory(max_attempts=1)
    fault_proxy.configure(methods={"PUT"})
    fault_proxy.script(["internal"])

    with pytest.raises(SaveFailed) as caught:
        storage.save("failed/a.bin", ContentFile(b"stashed"))

    record = SaveAttempt.objects.get(pk=caught.value.record_id)  # no flush needed
    assert record.status == Status.FAILED and record.has_stash


# ----------------------------------------------------------------------- processes


def run_script(tmp_path: Path, body: str) -> tuple[Path, str]:
    """Run ``body`` in a fresh interpreter with Django on a SQLite file; its stdout."""
    database = tmp_path / "records.sqlite3"
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {str(ROOT)!r})
        import django
        from django.conf import settings
        settings.configure(
            INSTALLED_APPS=["django.contrib.contenttypes", "storage_guard"], USE_TZ=True,
            DATABASES={{"default": {{"ENGINE": "django.db.backends.sqlite3",
                                     "NAME": {str(database)!r}}}}},
            STORAGE_GUARD={{"RECORD_WRITER": "background"}})
        django.setup()
        from django.core.management import call_command
        call_command("migrate", "storage_guard", verbosity=0)
        from storage_guard.saving import success_records
        from tests.test_record_writer import fields
    """) + textwrap.dedent(body))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return database, done.stdout


def rows_in(database: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(database) as db:
        return sorted(n for (n,) in db.execute("SELECT name FROM storage_guard_saveattempt"))


def test_records_still_queued_at_exit_are_written(tmp_path):
    database, _ = run_script(tmp_path, """
        for number in range(200):
            success_records.writer().submit(fields(f"exit/{number:03d}"))
        # no flush: the interpreter exits with records queued
    """)
    assert rows_in(database) == [f"exit/{n:03d}" for n in range(200)]


def test_a_forked_child_starts_its_own_writer_with_an_empty_queue(tmp_path):
    database, out = run_script(tmp_path, """
        writer = success_records.writer()
        for number in range(5):  # queued in the parent, no thread yet
            writer.queue.put_nowait(fields(f"parent/{number}"))
        child = os.fork()
        if child == 0:
            inherited = writer.queue.qsize()
            for number in range(3):
                writer.submit(fields(f"child/{number}"))
            print(json.dumps({"inherited": inherited, "pid_ok": writer.pid == os.getpid(),
                              "thread_pid": writer.thread.name.rsplit("-", 1)[1]}))
            sys.exit(0)  # atexit flushes the child's queue
        os.waitpid(child, 0)
        print(json.dumps({"parent": os.getpid(), "thread": writer.thread}))
    """)
    child, parent = (json.loads(line) for line in out.splitlines())
    assert child["inherited"] == 0 and child["pid_ok"] is True
    assert child["thread_pid"] != str(parent["parent"]) and parent["thread"] is None
    assert rows_in(database) == [*(f"child/{n}" for n in range(3)),
                                 *(f"parent/{n}" for n in range(5))]


def test_a_fork_the_hook_did_not_see_is_caught_by_the_pid(background_writer):
    writer = background_writer()
    writer.queue.put_nowait(fields("not-mine/0"))
    writer.pid = -1  # as if this process were a child whose at-fork hook never ran

    assert writer.submit(fields("mine/0")) is None
    assert writer.flush(timeout=30)
    assert names("not-mine/") == [] and names("mine/") == ["mine/0"]


# ----------------------------------------------------------------------- RECORD_SUCCESSES


def save_many(storage, prefix: str, n: int) -> None:
    for number in range(n):
        storage.save(f"{prefix}/{number}.bin", ContentFile(b"x"))


@pytest.mark.parametrize(("mode", "rate", "expected"), [
    ("all", 0.0, 6), ("none", 1.0, 0), ("sample", 0.0, 0), ("sample", 1.0, 6)])
def test_which_first_try_successes_are_recorded(guarded_storage_factory, settings, mode, rate,
                                                expected):
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "RECORD_SUCCESSES": mode,
                              "RECORD_SAMPLE_RATE": rate}
    save_many(guarded_storage_factory(), "mode", 6)
    assert len(names("mode/")) == expected


def test_a_sample_records_some_successes(guarded_storage_factory, settings):
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "RECORD_SUCCESSES": "sample",
                              "RECORD_SAMPLE_RATE": 0.5}
    save_many(guarded_storage_factory(), "sampled", 60)
    assert 0 < len(names("sampled/")) < 60  # each of both ends has odds of 2**-60


def test_failures_only_still_records_retried_successes_and_failures(
        guarded_storage_factory, fault_proxy, settings):
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "RECORD_SUCCESSES": "none"}
    storage = guarded_storage_factory(max_attempts=2)
    fault_proxy.configure(methods={"PUT"})
    storage.save("quiet/first-try.bin", ContentFile(b"1"))
    fault_proxy.script(["internal"])
    storage.save("quiet/retried.bin", ContentFile(b"2"))
    fault_proxy.script(["internal", "internal"])
    with pytest.raises(SaveFailed):
        storage.save("quiet/failed.bin", ContentFile(b"3"))

    recorded = dict(SaveAttempt.objects.values_list("name", "status"))
    assert recorded == {"quiet/retried.bin": Status.SUCCEEDED, "quiet/failed.bin": Status.FAILED}


@pytest.mark.parametrize(("setting", "value", "expected"), [
    ("RECORD_SUCCESSES", "failures", (
        "storage_guard.E006", "STORAGE_GUARD['RECORD_SUCCESSES'] is 'failures'; it must be one "
        "of ['all', 'sample', 'none'].", "Use one of ['all', 'sample', 'none'].")),
    ("RECORD_WRITER", "thread", (
        "storage_guard.E006", "STORAGE_GUARD['RECORD_WRITER'] is 'thread'; it must be one of "
        "['background', 'inline'].", "Use one of ['background', 'inline'].")),
    ("RECORD_SAMPLE_RATE", 5, (
        "storage_guard.E002", "STORAGE_GUARD['RECORD_SAMPLE_RATE'] is 5; it must be a number "
        "between 0 and 1.", "Set it to a number in settings.STORAGE_GUARD or the storage's "
        "OPTIONS.")),
    ("RECORD_QUEUE_SIZE", 0, (
        "storage_guard.E003", "STORAGE_GUARD['RECORD_QUEUE_SIZE'] is 0; it must be at least 1.",
        "Raise it to 1 or more.")),
    ("RECORD_LINGER", -1, (
        "storage_guard.E003", "STORAGE_GUARD['RECORD_LINGER'] is -1; it must be at least 0.",
        "Raise it to 0 or more.")),
    ("RECORD_LINGER", "0.2", (
        "storage_guard.E002", "STORAGE_GUARD['RECORD_LINGER'] is '0.2'; it must be a number of "
        "seconds.", "Set it to a number in settings.STORAGE_GUARD or the storage's OPTIONS.")),
    ("RECORD_BATCH_SIZE", "500", (
        "storage_guard.E002", "STORAGE_GUARD['RECORD_BATCH_SIZE'] is '500'; it must be a whole "
        "number.", "Set it to a number in settings.STORAGE_GUARD or the storage's OPTIONS.")),
])
def test_record_settings_are_checked(settings, setting, value, expected):
    assert checks.check_record_settings() == []
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, setting: value}
    assert [(m.id, m.msg, m.hint) for m in checks.check_record_settings()] == [expected]


# ----------------------------------------------------------------------- helpers


@pytest.fixture
def side_connection():
    """A connection of its own to the test database, outside Django."""
    with psycopg.connect(**side_params(), autocommit=True) as side:
        yield side


def side_params() -> dict:
    params = connection.get_connection_params()
    return {k: v for k, v in params.items() if k != "cursor_factory"}


def wait_for_blocked_insert(timeout: float = 60.0) -> None:
    """Wait until some INSERT or COPY into the records table waits for a lock (the writer's).

    Polled on a connection of its own: within a transaction pg_stat_activity is a snapshot.
    """
    deadline = time.monotonic() + timeout
    with psycopg.connect(**side_params(), autocommit=True) as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
                "(query LIKE 'INSERT INTO \"storage_guard_saveattempt\"%%' OR "
                "query LIKE 'COPY \"storage_guard_saveattempt\"%%')").fetchone()[0]
            if waiting:
                return
            time.sleep(0.05)
    raise AssertionError("the writer never reached its INSERT")


@pytest.fixture
def held_records():
    """A trigger that makes inserts of held/ keys wait for advisory lock 1414 (a real wait)."""
    with connection.cursor() as cursor:
        cursor.execute("""
            CREATE OR REPLACE FUNCTION sg_hold_record() RETURNS trigger AS $$
            BEGIN
                IF NEW.key LIKE 'held/%' THEN PERFORM pg_advisory_xact_lock_shared(1414); END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql""")
        cursor.execute("CREATE TRIGGER sg_hold BEFORE INSERT ON storage_guard_saveattempt "
                       "FOR EACH ROW EXECUTE FUNCTION sg_hold_record()")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER sg_hold ON storage_guard_saveattempt")
        cursor.execute("DROP FUNCTION sg_hold_record()")


@pytest.fixture
def refusing_records():
    with db_triggers.refusing_records():
        yield


def test_a_json_wrapper_is_serialized_once_only_when_it_can_be():
    """What Django prepares for PostgreSQL (psycopg's ``Jsonb`` with its ``dumps``) is
    serialized once; a wrapper without a ``dumps`` of its own, or anything else, is left as it
    is for psycopg to serialize as usual."""
    from psycopg.types.json import Jsonb

    made = success_records._serialized(Jsonb({"ContentType": "a/b"}, dumps=json.dumps))
    assert isinstance(made, Jsonb) and made.obj == b'{"ContentType": "a/b"}'
    assert made.dumps(made.obj) is made.obj
    plain = Jsonb({"a": 1})
    assert success_records._serialized(plain) is plain
    assert success_records._serialized('{"a": 1}') == '{"a": 1}'


def test_the_record_queue_keeps_queue_semantics():
    """``put_nowait`` in one frame: FIFO, ``Full`` at the bound, counted for ``join``, and a
    ``get()`` blocked in another thread is woken."""
    import queue
    import threading

    records = success_records.RecordQueue(2)
    records.put_nowait("a")
    records.put_nowait("b")
    with pytest.raises(queue.Full):
        records.put_nowait("c")
    assert (records.qsize(), records.unfinished_tasks) == (2, 2)
    assert [records.get_nowait(), records.get_nowait()] == ["a", "b"]

    got = []
    waiter = threading.Thread(target=lambda: got.append(records.get(timeout=30)))
    waiter.start()
    time.sleep(0.05)  # the waiter is blocked in get()
    records.put_nowait("woken")
    waiter.join(30)
    assert got == ["woken"]
    for _done in range(3):
        records.task_done()
    assert records.unfinished_tasks == 0
