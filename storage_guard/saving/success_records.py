"""Success records: which are written (``RECORD_SUCCESSES``), and off the request path.

A success record used to cost the request its INSERT and commit: about 1.5 ms on PostgreSQL,
an fsync on SQLite, 30 to 40 % of a 2 KB save. With ``RECORD_WRITER = "background"`` (the
default) the save only puts the record's fields on a bounded in-process queue; one daemon thread
per process takes them off in batches (whatever arrived within ``RECORD_LINGER`` of a batch's
first record, up to ``RECORD_BATCH_SIZE``) and writes each batch with one ``COPY``
(PostgreSQL) or ``executemany`` and one commit on the record alias. The few JSON values that
rows repeat (an empty attempt log, ``{"ContentType": ...}``) are prepared and serialized once.
Failure records, rejections and stashes never go through here: they stay synchronous and
durable (``storage.py``, ``records.insert_failure``).

What a crash can lose: only success records (their objects are in S3), at most
``RECORD_QUEUE_SIZE`` queued plus one batch being written, and only on a hard kill
(SIGKILL, OOM, ``os._exit``): the queue is flushed at interpreter exit (``atexit``) and on
demand (``records.flush()``). A queue that is full never drops a record: the save writes it
itself, as it did before this writer existed. A batch that cannot be written is retried once on a
fresh connection, then row by row; what still fails is logged (``record_failed``, with the
count) and sent to Sentry, and the saves themselves are unaffected.

Processes: the writer thread starts on the first queued record, in the process that queues it.
After ``os.fork`` (gunicorn's pre-fork workers, multiprocessing) the child gets a new, empty
queue and starts its own thread: what the parent had queued is the parent's to write. Threads
share the process's queue; under ASGI the save only touches the queue, so it is also safe from a
coroutine (the ORM runs in the writer thread, never in the event loop).

``save_with_record()`` writes its success record synchronously (``written_now``), so the record
it returns always has its primary key.
"""

from __future__ import annotations

import atexit
import os
import queue
import random
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime

from django.db import connections, models, transaction
from django.utils import timezone

try:  # the JSON wrappers Django's PostgreSQL backend prepares with psycopg 3
    from psycopg.types.json import Json, Jsonb
    JSON_WRAPPERS: tuple[type, ...] = (Json, Jsonb)
except ImportError:  # without psycopg 3, prepared JSON is text
    JSON_WRAPPERS = ()

from storage_guard import conf
from storage_guard.integrations import sentry
from storage_guard.log import logger
from storage_guard.models import SaveAttempt, key_digest
from storage_guard.saving import records
from storage_guard.saving.safetext import storable_json, storable_text

EXIT_FLUSH_TIMEOUT = 10.0
YIELD_EVERY = 8  # rows prepared between two short sleeps that hand the GIL back to requests
YIELD_SECONDS = 0.0001
FULL_LOG_EVERY = 1000  # a full queue logs its first inline write, then one in this many
_STOP = object()

# True inside save_with_record(): the caller wants the record now, so it is written inline.
_written_now: ContextVar[bool] = ContextVar("storage_guard_record_written_now", default=False)


# ----------------------------------------------------------------- which successes are recorded
def wants_success_record(attempts: int) -> bool:
    """Whether this success gets a ``SaveAttempt`` row under ``RECORD_SUCCESSES``.

    Successes that needed a retry are always recorded, and so is every save whose caller asked
    for its record (``save_with_record``); only first-try successes are sampled or skipped.
    """
    mode = conf.get("RECORD_SUCCESSES")
    if mode == "all" or attempts > 1 or _written_now.get():
        return True
    if mode == "sample":
        return random.random() < conf.get("RECORD_SAMPLE_RATE")
    return False


@contextmanager
def written_now():
    """Within this block, success records are written synchronously and always."""
    token = _written_now.set(True)
    try:
        yield
    finally:
        _written_now.reset(token)


def write_success(fields: dict) -> SaveAttempt | None:
    """Write a success record now (returned) or queue it for the writer (None)."""
    if _written_now.get() or conf.get("RECORD_WRITER") == "inline":
        return records.insert_attempt(**fields)
    return writer().submit(fields)


# ----------------------------------------------------------------- the writer
class RecordQueue(queue.Queue):
    """A bounded FIFO whose ``put_nowait`` (the one call a save makes) runs in one frame."""

    def put_nowait(self, item) -> None:
        """``Queue.put(item, block=False)`` without its layers of Python calls."""
        with self.mutex:  # the lock under not_empty, not_full and all_tasks_done
            if 0 < self.maxsize <= len(self.queue):
                raise queue.Full
            self.queue.append(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()


class RecordWriter:
    """A bounded queue of success records and the thread that writes them in batches."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """A fresh, empty writer for this process (at creation and after a fork)."""
        self.pid = os.getpid()
        self.queue: RecordQueue = RecordQueue(conf.get("RECORD_QUEUE_SIZE"))
        self.batch_size = conf.get("RECORD_BATCH_SIZE")
        self.linger = conf.get("RECORD_LINGER")
        self.thread: threading.Thread | None = None
        self.running = False  # the thread is in _run (cheaper to read than is_alive())
        self.lock = threading.Lock()
        # set by flush() and stop(): the writer stops gathering and writes what it has
        self.wake = threading.Event()
        self.flushing = 0  # callers waiting in flush(): no batch waits to gather meanwhile
        self.written = self.lost = self.written_inline = self.batches = 0

    # ------------------------------------------------------------- the caller's side
    def submit(self, fields: dict) -> SaveAttempt | None:
        """Queue one record; if the queue is full, write it here and return it."""
        if self.pid != os.getpid():
            self._reset()  # a fork that os.register_at_fork did not see
        if not self.running:
            self._ensure_thread()
        fields["created_at"] = fields["updated_at"] = timezone.now()  # the save's time
        try:
            self.queue.put_nowait(fields)
            return None
        except queue.Full:
            return self._write_inline(fields)

    def _write_inline(self, fields: dict) -> SaveAttempt:
        self.written_inline += 1
        if self.written_inline % FULL_LOG_EVERY == 1:
            logger.warning("record_queue_full: %s success record(s) queued, writing this one in "
                           "the request (%s so far)", self.queue.qsize(), self.written_inline,
                           extra={"event": "record_queue_full", "queued": self.queue.qsize(),
                                  "written_inline": self.written_inline})
        return records.insert_attempt(**fields)

    def _ensure_thread(self) -> None:
        thread = self.thread
        if thread is not None and thread.is_alive():
            return
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, daemon=True,
                                               name=f"storage_guard-records-{self.pid}")
                self.thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued record is written (or lost and logged); False on timeout."""
        if self.pid != os.getpid():
            self._reset()
            return True
        if self.thread is None or not self.thread.is_alive():
            self._drain_here()
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            self.flushing += 1
        self.wake.set()
        try:
            with self.queue.all_tasks_done:
                while self.queue.unfinished_tasks:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self.queue.all_tasks_done.wait(remaining)
            return True
        finally:
            with self.lock:
                self.flushing -= 1

    def stop(self, timeout: float | None = EXIT_FLUSH_TIMEOUT) -> bool:
        """Flush, then end the thread (it closes its database connections)."""
        flushed = self.flush(timeout)
        thread = self.thread
        if thread is not None and thread.is_alive() and self.pid == os.getpid():
            try:
                self.queue.put(_STOP, timeout=timeout)
                self.wake.set()  # a batch gathering behind it is written now
            except queue.Full:  # saves keep coming: the daemon thread ends with the process
                return False
            thread.join(timeout)
        return flushed

    def _drain_here(self) -> None:
        """Write what is queued in the calling thread (no writer thread is running)."""
        while batch := self._take(self.batch_size):
            self._process(batch)

    # ------------------------------------------------------------- the writer thread
    def _run(self) -> None:
        self.running = True
        try:
            stopped = False
            while not stopped:
                first = self.queue.get()
                self._gather(first)
                stopped = self._process([first, *self._take(self.batch_size - 1)])
        finally:
            self.running = False
            connections.close_all()

    def _gather(self, first) -> None:
        """Wait ``RECORD_LINGER`` seconds after a batch's first record for more to come (and
        leave the GIL to the requests): one commit per batch, not per save. ``flush()`` and
        ``stop()`` cut the wait short."""
        if first is not _STOP and not self.flushing:
            self.wake.wait(self.linger)
        self.wake.clear()

    def _take(self, most: int) -> list:
        """Up to ``most`` queued items, without waiting."""
        taken = []
        while len(taken) < most:
            try:
                taken.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return taken

    def _process(self, batch: list) -> bool:
        """Write the records in ``batch``; True if it held the stop marker."""
        records = [item for item in batch if item is not _STOP]
        try:
            written = self._insert(records) if records else 0
            self.batches += bool(records)
        finally:
            for _item in batch:
                self.queue.task_done()
        self.written += written
        self.lost += len(records) - written
        return len(records) < len(batch)

    def _insert(self, batch: list[dict]) -> int:
        """Insert ``batch``: all at once (twice), then one by one; the number written."""
        error = None
        for _try in range(2):
            try:
                insert_many(batch)
                return len(batch)
            except Exception as exc:  # noqa: BLE001 - a broken connection gets a fresh one
                error = exc
                close_record_connection()
        written = 0
        for fields in batch:
            try:
                insert_many([fields])
                written += 1
            except Exception as exc:  # noqa: BLE001 - counted, logged and reported below
                error = exc
                close_record_connection()
        if written < len(batch):
            report_lost(len(batch) - written, error)
        return written


def insert_many(rows: list[dict]) -> None:
    """One transaction, one ``COPY`` (PostgreSQL) or ``executemany``: the rows' values prepared
    column by column.

    This is ``bulk_create`` without the model instances, and with a short sleep every few rows:
    the writer shares the GIL with the requests, and a long stretch of pure Python here would
    make every request that returns from a socket read wait for it. What does not change from
    row to row (the columns, their defaults, the timestamps' preparation) is worked out once.
    """
    alias = records.record_alias()
    connection = connections[alias]
    fields, sql = _insert_statement(connection)
    plan = _column_plan(connection, fields)
    now = timezone.now()
    params = []
    for number, row in enumerate(rows, 1):
        values = []
        for name, kind, limit, prepare, default in plan:
            value = row.get(name, _MISSING)
            if value is _MISSING:
                if name == "key_digest":
                    value = key_digest(row["key"])
                elif default is _TIMESTAMP:
                    value = prepare(now, connection)
                else:
                    value = default
            elif kind is _TEXT:  # text from outside: made storable, cut to its column
                value = storable_text(value, limit)
                if value is not None and type(value) is not str:
                    value = prepare(value, connection)
            elif kind is _JSON:
                value = _json_value(name, value, prepare, connection)
            elif value is not None and type(value) is not kind:  # not the column's own type
                value = prepare(value, connection)
            values.append(value)
        params.append(values)
        if number % YIELD_EVERY == 0:
            time.sleep(YIELD_SECONDS)
    if not copy_supported(connection):
        with transaction.atomic(using=alias), connection.cursor() as cursor:
            cursor.executemany(sql, params)
        return
    # PostgreSQL with psycopg 3: one COPY, which costs the writer (and the GIL the requests
    # wait for) about half of what executemany does per row. In autocommit mode (the record
    # connection's) a COPY is a transaction of its own: no BEGIN and COMMIT round trips.
    if connection.get_autocommit():
        with connection.cursor() as cursor:
            _copy(connection, cursor, fields, params)
        return
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        _copy(connection, cursor, fields, params)


_MISSING = object()
_TIMESTAMP = object()  # the default of created_at and updated_at: the batch's time
_TEXT, _JSON = str, object()
# Columns whose values of exactly this Python type every backend takes as they are (Django's
# preparation would return them unchanged): the value is passed without preparing it.
_NATIVE = ((models.BooleanField, bool), (models.IntegerField, int), (models.FloatField, float))
_plans: dict[str, list] = {}  # vendor -> column plan


def _column_plan(connection, fields: list) -> list[tuple]:
    """Per column: (attname, kind, max_length, prepare, default) for ``insert_many``.

    ``kind`` is ``str`` (text, made storable and cut to ``max_length``), ``_JSON`` (made
    storable inside), the Python type a value may have to pass unprepared, or None (always
    prepared). Defaults are prepared once; none of the model's is a fresh object per row.
    """
    found = _plans.get(connection.vendor)
    if found is None:
        found = []
        for field in fields:
            if isinstance(field, models.JSONField):
                kind = _JSON
            elif isinstance(field, models.CharField | models.TextField):
                kind = _TEXT
            elif isinstance(field, models.DateTimeField) and connection.vendor == "postgresql":
                kind = datetime  # aware, from timezone.now(): psycopg sends it as it is
            else:
                kind = next((native for cls, native in _NATIVE if isinstance(field, cls)), None)
            if field.attname in ("created_at", "updated_at"):
                default = _TIMESTAMP
            else:
                default = field.get_db_prep_save(field.get_default(), connection)
            found.append((field.attname, kind, field.max_length if kind is _TEXT else None,
                          field.get_db_prep_save, default))
        _plans[connection.vendor] = found
    return found


_json_prepared: dict[tuple, object] = {}  # (vendor, column, shape) -> the prepared value
JSON_MEMO_SIZE = 256


def _json_value(column: str, value, prepare, connection):
    """A JSON column's value, prepared; the few values that rows repeat (an empty list, a dict
    of text such as ``{"ContentType": ...}``) are prepared, and serialized, once."""
    shape = _json_shape(value)
    if shape is None:
        return prepare(storable_json(value), connection)
    key = (connection.vendor, column, shape)
    found = _json_prepared.get(key, _MISSING)
    if found is _MISSING:
        if len(_json_prepared) >= JSON_MEMO_SIZE:
            _json_prepared.clear()
        found = _json_prepared[key] = _serialized(prepare(storable_json(value), connection))
    return found


def _json_shape(value) -> tuple | None:
    """A hashable stand-in for None, an empty list or a dict whose keys and values are all
    text; None for anything else (prepared row by row)."""
    if value is None:
        return ("none",)
    kind = type(value)
    if kind is list and not value:
        return ("list",)
    if kind is dict and all(type(k) is str and type(v) is str for k, v in value.items()):
        return ("dict", *value.items())
    return None


def _serialized(prepared):
    """psycopg's JSON wrapper (what Django prepares for PostgreSQL) with its text already made,
    so a row reusing it is not serialized again; anything else (SQLite's text) as it is."""
    dumps = getattr(prepared, "dumps", None) if isinstance(prepared, JSON_WRAPPERS) else None
    if dumps is None or not hasattr(prepared, "obj"):  # not a wrapper this code knows: as it is
        return prepared
    return type(prepared)(dumps(prepared.obj).encode(), dumps=_as_is)


def _as_is(data: bytes) -> bytes:
    return data


def copy_supported(connection) -> bool:
    """PostgreSQL through psycopg 3, whose cursors have ``copy()``; psycopg2 (which Django
    also supports) and every other database write the batch with ``executemany``."""
    return connection.vendor == "postgresql" and \
        getattr(connection.Database, "__name__", "") == "psycopg"


def _copy(connection, cursor, fields: list, params: list) -> None:
    with connection.wrap_database_errors, \
            cursor.cursor.copy(_copy_statement(connection, fields)) as copy:
        for values in params:
            copy.write_row(values)


_statements: dict[tuple, tuple] = {}  # (vendor, what) -> statement, built once


def _insert_statement(connection) -> tuple[list, str]:
    found = _statements.get((connection.vendor, "insert"))
    if found is None:
        meta = SaveAttempt._meta
        fields = [field for field in meta.concrete_fields if not field.primary_key]
        quote = connection.ops.quote_name
        sql = (f"INSERT INTO {quote(meta.db_table)} "
               f"({', '.join(quote(field.column) for field in fields)}) "
               f"VALUES ({', '.join(['%s'] * len(fields))})")
        found = _statements[(connection.vendor, "insert")] = (fields, sql)
    return found


def _copy_statement(connection, fields: list) -> str:
    found = _statements.get((connection.vendor, "copy"))
    if found is None:
        quote = connection.ops.quote_name
        found = _statements[(connection.vendor, "copy")] = (
            f"COPY {quote(SaveAttempt._meta.db_table)} "
            f"({', '.join(quote(field.column) for field in fields)}) FROM STDIN")
    return found


def close_record_connection() -> None:
    try:
        connections[records.record_alias()].close()
    except Exception:  # noqa: BLE001 - closing a broken connection may fail too
        pass


def report_lost(count: int, error: BaseException | None) -> None:
    """Success records that could not be written: their saves worked, the rows are gone."""
    code = type(error).__name__ if error else "Unknown"
    message = f"storage_guard could not write {count} success record(s): {code}"
    logger.error("record_failed: %s", message, extra={
        "event": "record_failed", "error_code": code, "records_lost": count,
        "operation": "save", "status": "succeeded"})
    sentry.capture_message_throttled(
        f"record_failed:{code}", message,
        tags={"storage_guard.error_code": code, "storage_guard.category": "record"},
        context={"records_lost": count, "message": str(error)[:500] if error else ""},
        fingerprint=["storage_guard", "record_failed", code])


# ----------------------------------------------------------------- one writer per process
_writer: RecordWriter | None = None
_writer_lock = threading.Lock()
_hooks_installed = False


def writer() -> RecordWriter:
    global _writer, _hooks_installed
    if _writer is None:
        with _writer_lock:
            if _writer is None:
                _writer = RecordWriter()
            if not _hooks_installed:
                os.register_at_fork(after_in_child=_after_fork)
                atexit.register(_flush_at_exit)
                _hooks_installed = True
    return _writer


def _after_fork() -> None:
    global _writer_lock
    _writer_lock = threading.Lock()
    if _writer is not None:
        _writer._reset()


def flush(timeout: float | None = None) -> bool:
    """Write every success record queued in this process; False if ``timeout`` ran out."""
    return True if _writer is None else _writer.flush(timeout)


def shutdown(timeout: float | None = EXIT_FLUSH_TIMEOUT) -> bool:
    """Flush, end the writer thread and forget the writer (the next record starts a new one).

    For a server's worker-exit hook (gunicorn's ``worker_exit``), and for tests that change
    the writer's settings.
    """
    global _writer
    if _writer is None:
        return True
    flushed = _writer.stop(timeout)
    _writer = None
    return flushed


def _flush_at_exit() -> None:
    if _writer is None or _writer.pid != os.getpid():
        return
    if not _writer.stop(EXIT_FLUSH_TIMEOUT):
        left = _writer.queue.unfinished_tasks
        logger.error("record_failed: %s success record(s) still queued at exit after %s s",
                     left, EXIT_FLUSH_TIMEOUT,
                     extra={"event": "record_failed", "records_lost": left})
