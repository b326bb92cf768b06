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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

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


def test_a_queued_records_fields_are_made_by_the_writer_thread(guarded_storage_factory,
                                                               background_writer):
    """The request queues the call that makes the row; the writer makes it, with what
    ``save_with_record`` (made in the request) stores for the same save."""
    background_writer()
    storage = guarded_storage_factory()
    made_in = []
    real = type(storage)._success_fields

    def spy(self, *args):
        made_in.append(threading.current_thread().name)
        return real(self, *args)

    with mock.patch.object(type(storage), "_success_fields", spy):
        name = storage.save("maker/queued.bin", ContentFile(b"same bytes"))
        assert records.flush(timeout=30)
        _now_name, now_record = storage.save_with_record("maker/now.bin",
                                                         ContentFile(b"same bytes"))
    assert made_in[0].startswith("storage_guard-records-")
    assert made_in[1] == threading.current_thread().name
    queued = SaveAttempt.objects.get(key=name)
    columns = ("status", "size", "sha256", "attempts", "content_type", "write_params",
               "storage_alias", "bucket", "attempt_log", "storage_spec")
    assert [getattr(queued, c) for c in columns] == [getattr(now_record, c) for c in columns]
    assert (queued.key_bytes, queued.name) == (len(name), name)
    assert queued.created_at <= now_record.created_at


def test_a_queued_record_whose_fields_cannot_be_made_is_lost_and_reported(background_writer,
                                                                          caplog):
    writer = background_writer()

    def broken():
        raise RuntimeError("no fields")

    writer.submit(success_records.QueuedRecord(broken))
    writer.submit(success_records.QueuedRecord(lambda: fields("maker/fine")))
    assert writer.flush(timeout=30)
    assert (writer.written, writer.lost) == (1, 1)
    assert names("maker/") == ["maker/fine"]
    assert [r.records_lost for r in caplog.records if getattr(r, "event", "") == "record_failed"
            ] == [1]


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


# What COPY's text format reads as escapes, column ends and row ends; what the databases refuse
# (NUL, lone surrogates); a character outside the BMP.
HOSTILE = ("tab\there line\nfeed return\rhere back\\slash \\N \\. nul\x00 lone\ud800 "
           "astral\U0001f600 bell\x07 ")
SAVED_AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


class Shown(str):
    """Text whose ``str()`` is not its characters (a mixin enum's is ``"Kind.PLAIN"``): a
    database stores its characters."""

    def __str__(self) -> str:
        return "shown"


def hostile_rows() -> list[dict]:
    """Success records whose every kind of value the writer converts itself: COPY's special
    characters, text the databases refuse, text over its column's length, bytes, numbers of
    another type, NULLs, floats that print long, big integers, JSON holding all of these."""
    return [
        {**fields(f"hostile/{HOSTILE}"), "bucket": HOSTILE * 20, "content_type": HOSTILE,
         "storage_alias": "\\", "sha256": "\\N", "status": "\t", "error_code": "\r\n",
         "error_message": HOSTILE * 300, "request_id": "\x00" * 100, "host_id": "\ud800" * 100,
         "stash_location": HOSTILE, "created_at": SAVED_AT, "updated_at": SAVED_AT,
         "write_params": {HOSTILE: HOSTILE, "ContentType": "a\tb\\c"},
         "attempt_log": [{"error": HOSTILE, "delay": 0.1}, HOSTILE, None, 2**70, 1e-7, True],
         "storage_spec": {"backend": HOSTILE, "options": {"k\x00": ["\ud800", "\U0001f600"]}},
         "error_response": {"Error": {"Message": HOSTILE, "Code": "\\N"}}},
        {**fields("hostile/nulls"), "size": None, "transient": None, "error_response": None,
         "storage_spec": None, "recovered_at": None, "next_retry_at": None, "write_params": {},
         "created_at": SAVED_AT, "updated_at": SAVED_AT + timedelta(microseconds=1)},
        {**fields("hostile/numbers"), "size": 2**62, "key_bytes": 2**31 - 1, "duration_ms": 0.1,
         "attempts": True, "transient": False, "error_response": [0.1, 1e-7, -(2**62), 2**70],
         "error_category": "plain text too long " * 5},
        # Two rows with the same keys: their columns are converted together.
        {**fields("hostile/floats"), "size": -(2**62), "duration_ms": 1e-7, "transient": True,
         "content_type": "plain text too long " * 20},
        {**fields("hostile/floats-2"), "size": 0, "duration_ms": 1e300, "transient": True,
         "content_type": HOSTILE},
        {**fields("hostile/types"), "content_type": b"\x89PNG secret bytes", "bucket": 12345,
         "error_message": bytearray(b"secret bytes"), "error_code": Shown("plain"),
         "stash_location": Shown("plain"), "duration_ms": 3, "recovered_at": SAVED_AT,
         "next_retry_at": datetime(2026, 1, 2, 3, 4, 5)},  # naive: Django makes it aware
        {key: value for key, value in fields("hostile/defaults").items()
         if key not in ("attempt_log", "duration_ms", "write_params")},
    ]


# Every column but the ones a synchronous insert fills itself (auto_now timestamps, the id).
COMPARED = [field.attname for field in SaveAttempt._meta.concrete_fields
            if field.attname not in ("id", "created_at", "updated_at")]


def write_through_the_writer(writer, rows: list[dict], *, inserts: int) -> list[int]:
    """Queue ``rows`` and flush them as one batch written by ``inserts`` INSERT statements
    (0: by COPY); the ids they got, in order."""
    first = SaveAttempt.objects.order_by("-id").values_list("id", flat=True).first() or 0
    for row in rows:
        writer.queue.put_nowait(dict(row))
    with CaptureQueriesContext(connection) as queries:
        assert writer.flush() and writer.lost == 0
    assert inserts == len([q for q in queries.captured_queries if "INSERT INTO" in q["sql"]])
    return list(SaveAttempt.objects.filter(id__gt=first).order_by("id")
                .values_list("id", flat=True))


def stored(ids: list[int]) -> list[dict]:
    """The compared columns of the rows with these ids, in their order."""
    by_id = SaveAttempt.objects.in_bulk(ids)
    return [{column: getattr(by_id[pk], column) for column in COMPARED} for pk in ids]


@pytest.mark.filterwarnings("ignore:DateTimeField .* received a naive datetime")
@pytest.mark.parametrize("copy", [True, False], ids=["copy", "executemany"])
def test_a_batch_stores_any_value_as_the_synchronous_insert_would(background_writer,
                                                                   monkeypatch, copy):
    """The writer converts values itself (``COPY`` text on PostgreSQL with psycopg 3,
    parameters for ``executemany`` elsewhere): every column of every row is stored exactly as
    ``insert_attempt`` stores it, whatever the text (COPY's escapes, NUL, lone surrogates,
    over-long), type, NULL or number."""
    copying = copy and success_records.copy_supported(connection)
    monkeypatch.setattr(success_records, "copy_supported", lambda _: copying)
    writer = background_writer()
    rows = hostile_rows()
    started = timezone.now()

    written = write_through_the_writer(writer, rows, inserts=0 if copying else 1)
    references = [records.insert_attempt(**dict(row)).pk for row in rows]

    assert len(written) == len(rows)
    assert stored(written) == stored(references)
    by_id = SaveAttempt.objects.in_bulk(written)
    hostile, nulls, numbers, floats, _floats_2, types, defaults = (by_id[pk] for pk in written)
    assert hostile.name == "hostile/" + HOSTILE.replace("\x00", "\\x00").replace(
        "\ud800", "\\ud800")  # storable: escaped; COPY's characters kept as they are
    for row, column in ((hostile, "bucket"), (numbers, "error_category"),
                        (floats, "content_type")):  # cut to their columns
        assert len(getattr(row, column)) == SaveAttempt._meta.get_field(column).max_length
    assert (hostile.sha256, hostile.storage_alias, hostile.status) == ("\\N", "\\", "\t")
    assert hostile.created_at == hostile.updated_at == SAVED_AT
    assert (nulls.created_at, nulls.updated_at) == (SAVED_AT, SAVED_AT + timedelta(microseconds=1))
    assert hostile.key_digest == records.key_digest(rows[0]["key"])
    assert (types.content_type, types.error_message, types.bucket) == (
        "<17 bytes>", "<12 bytes>", "12345")
    assert (types.error_code, types.stash_location, types.duration_ms) == ("plain", "plain", 3.0)
    assert (defaults.attempt_log, defaults.duration_ms, defaults.write_params) == ([], 0.0, {})
    assert started <= defaults.created_at == defaults.updated_at <= timezone.now()


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


class Moment(datetime):
    """A datetime of a class of its own (freezegun's, pendulum's): not one COPY's text knows."""


@pytest.mark.postgres
@on_postgres
def test_a_value_copy_does_not_know_sends_its_batch_through_executemany(background_writer):
    """COPY text is written only for the types Django prepares this model's columns into; a
    batch holding anything else is written by executemany, as psycopg adapts it."""
    writer = background_writer()
    saved_at = Moment(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    rows = [{**fields("moment/a"), "created_at": saved_at, "updated_at": saved_at},
            fields("moment/b")]

    written = write_through_the_writer(writer, rows, inserts=1)

    assert [SaveAttempt.objects.get(pk=pk).name for pk in written] == ["moment/a", "moment/b"]
    assert SaveAttempt.objects.get(pk=written[0]).created_at == saved_at
    with pytest.raises(success_records.NotCopyText):
        success_records.copy_value(saved_at)


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


def test_a_full_batch_is_written_without_waiting_out_the_linger(background_writer):
    """RECORD_BATCH_SIZE records at hand end the gathering: a backlog, or a burst, is written
    batch after batch instead of one batch per linger. Only the last, partial batch lingers."""
    writer = background_writer(RECORD_LINGER=60, RECORD_BATCH_SIZE=10)
    for number in range(25):
        writer.submit(fields(f"full/{number:02d}"))

    deadline = time.monotonic() + 30  # far less than the linger: no flush, no stop
    while writer.written < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    # Two full batches of ten, however the puts and the writer interleave; the rest waits
    # for the linger.
    assert writer.written == 20 and writer.batches == 2
    assert len(names("full/")) == writer.written

    assert writer.flush(timeout=30)
    assert writer.batches == 3 and names("full/") == [f"full/{n:02d}" for n in range(25)]


def test_a_wake_up_from_before_a_batch_does_not_cut_its_gathering_short(background_writer):
    """The queue reaching a batch's worth while the last batch was being written sets the
    writer's wake-up; the next batch, begun once the queue has drained, still waits for its
    records (or its linger) instead of being written with one."""
    writer = background_writer(RECORD_LINGER=60, RECORD_BATCH_SIZE=10)
    for number in range(9):  # no thread: as if queued while the writer wrote a batch
        writer.queue.put_nowait(fields(f"stale/{number:02d}"))
    assert writer.wake.is_set()
    leftover = writer._take(9)
    first = fields("stale/first")

    gathering = threading.Thread(target=writer._gather, args=(first,))
    gathering.start()
    waiting = writer.wake._cond._waiters
    deadline = time.monotonic() + 30
    while gathering.is_alive() and not waiting and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gathering.is_alive() and waiting  # it waits, not the stale wake-up

    for number in range(9):  # a batch's worth: the put that completes it ends the wait
        writer.queue.put_nowait(fields(f"stale/{number + 9:02d}"))
    gathering.join(30)
    assert not gathering.is_alive()
    for _item in leftover:
        writer.queue.task_done()
    assert writer.flush(timeout=30)


@pytest.mark.parametrize("state", ["flushing", "stopping"])
def test_a_flush_or_a_stop_under_way_ends_the_gathering(background_writer, state):
    """What flush() and stop() set before they wake the writer is read again once a stale
    wake-up is forgotten: a batch begun while either is under way does not linger."""
    writer = background_writer(RECORD_LINGER=60)
    setattr(writer, state, 1 if state == "flushing" else True)
    gathering = threading.Thread(target=writer._gather, args=(fields("ending/0"),))
    gathering.start()
    gathering.join(30)  # far less than the linger
    assert not gathering.is_alive()


def test_a_batch_written_for_a_waiting_flush_does_not_pause(background_writer, monkeypatch):
    """The writer pauses every YIELD_EVERY rows to leave the GIL to the requests, except for a
    caller who waits for the batch: flush() and the exit flush."""
    pauses = []
    monkeypatch.setattr(success_records, "_pause", lambda: pauses.append(1))
    rows = 3 * success_records.YIELD_EVERY
    writer = background_writer(RECORD_LINGER=60, RECORD_BATCH_SIZE=rows)
    for number in range(rows):  # a full batch: written by the thread, nobody waiting
        writer.submit(fields(f"pause/{number:02d}"))
    deadline = time.monotonic() + 30
    while writer.written < rows and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.batches == 1 and len(pauses) == 2  # between three stretches of rows

    for number in range(rows, 2 * rows - 1):  # one short of a batch: only a flush writes it
        writer.submit(fields(f"pause/{number:02d}"))
    assert writer.flush(timeout=30)
    assert writer.batches == 2 and len(pauses) == 2  # the flush's batch did not pause
    assert len(names("pause/")) == 2 * rows - 1


def test_records_drained_by_flush_in_the_callers_thread_do_not_pause(background_writer,
                                                                      monkeypatch):
    pauses = []
    monkeypatch.setattr(success_records, "_pause", lambda: pauses.append(1))
    writer = background_writer()
    for number in range(3 * success_records.YIELD_EVERY):  # queued before any thread runs
        writer.queue.put_nowait(fields(f"drain/{number:02d}"))

    assert writer.flush() and writer.thread is None
    assert pauses == [] and len(names("drain/")) == 3 * success_records.YIELD_EVERY


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
    deadline = time.monotonic() + 30
    while not records.not_empty._waiters and time.monotonic() < deadline:
        time.sleep(0.01)  # until the waiter is blocked in get(), so the put must wake it
    assert records.not_empty._waiters
    records.put_nowait("woken")
    waiter.join(30)
    assert got == ["woken"]
    for _done in range(3):
        records.task_done()
    assert records.unfinished_tasks == 0


def test_the_record_queue_wakes_a_waiter_only_when_there_is_one():
    """The condition's ``_waiters`` list says whether ``get()`` waits; a Python whose condition
    has no such list gets a notify on every put, as ``queue.Queue`` gives."""
    records = success_records.RecordQueue(10)
    notified = []
    records.not_empty = SimpleNamespace(notify=lambda: notified.append("with"), _waiters=[])
    records.put_nowait("nobody waits")
    records.not_empty = SimpleNamespace(notify=lambda: notified.append("unknown"))
    records.put_nowait("no _waiters list")
    assert notified == ["unknown"]
    assert records.qsize() == 2


def test_a_datetime_conversion_is_reused_only_for_the_same_connection():
    """A row's two timestamps (one object) are converted once; the same objects written through
    another alias are converted again, by that connection (its time zone may differ)."""
    saved_at = (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),)
    calls = []

    def prepare(value, connection):
        calls.append(connection.alias)
        return f"{connection.alias}:{value.isoformat()}"

    first = SimpleNamespace(alias="default", vendor="sqlite")
    other = SimpleNamespace(alias="records", vendor="sqlite")
    convert = success_records._datetime_values
    assert convert(prepare, False, saved_at, first) == ["default:2026-01-02T03:04:05+00:00"]
    assert convert(prepare, False, saved_at, first) == ["default:2026-01-02T03:04:05+00:00"]
    assert convert(prepare, False, saved_at, other) == ["records:2026-01-02T03:04:05+00:00"]
    assert calls == ["default", "records"]
