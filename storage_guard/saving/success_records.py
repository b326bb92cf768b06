"""Success records: which are written (``RECORD_SUCCESSES``), and off the request path.

A success record used to cost the request its INSERT and commit: about 1.5 ms on PostgreSQL,
an fsync on SQLite, 30 to 40 % of a 2 KB save. With ``RECORD_WRITER = "background"`` (the
default) the save only puts the record on a bounded in-process queue (a ``QueuedRecord``: the
call that makes its fields, which the writer makes); one daemon thread per process takes them
off in batches (whatever arrived within ``RECORD_LINGER`` of a batch's first record; sooner
once ``RECORD_BATCH_SIZE`` have) and writes each batch with one ``COPY`` (PostgreSQL with
psycopg 3) or ``executemany`` and one commit on the record alias.
Failure records, rejections and stashes never go through here: they stay synchronous and
durable (``storage.py``, ``records.insert_failure``).

How a batch is written (``insert_many``), with as little CPU per row as it takes: on a busy
machine the writer's every microsecond is taken from the saves. The rows are converted column
by column, ``YIELD_EVERY`` rows at a time, so most values cost a comprehension step, not a few
calls: text that is printable (for ``COPY``, without a backslash) and fits its column is
checked for a whole column at once and used as it is; numbers of the column's own type and,
for ``COPY``, aware datetimes are not prepared (Django would return them unchanged); a row's
two timestamps (one object) are converted once, and the JSON values that rows repeat (an
empty attempt log, ``{"ContentType": ...}``) once for all rows. Every other value takes the
exact path of ``records.insert_attempt``: ``storable_text`` (cut to the column) or
``storable_json``, then the column's ``get_db_prep_save``. For ``COPY`` the batch becomes one
block of text, one line per row, each value written as psycopg's ``write_row`` would write it
and escaped for ``COPY``'s text format (backslash, tab, newline, carriage return; ``\\N`` for
NULL); a value of a type whose text is not known here sends its batch through
``executemany`` instead.

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
import operator
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from functools import partial
from itertools import groupby, repeat
from typing import NamedTuple

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
# False while a batch is written for a caller who waits for it (flush(), stop(), the exit
# flush): the pauses that leave the GIL to requests would only delay that caller.
_pausing: ContextVar[bool] = ContextVar("storage_guard_record_pausing", default=True)


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


def write_success(make: Callable[..., dict], *args) -> SaveAttempt | None:
    """Write a success record now (returned) or queue it for the writer (None). ``make(*args)``
    gives its fields: when the record is queued, the writer thread calls it."""
    if _written_now.get() or conf.get("RECORD_WRITER") == "inline":
        return records.insert_attempt(**make(*args))
    return writer().submit(QueuedRecord(make, *args))


class QueuedRecord:
    """A success record as a save queues it: the call that makes its fields, and the save's
    time. The writer thread makes the fields, for a whole batch at once, where the request
    would make them between two network waits, on cold caches, at several times the cost."""

    __slots__ = ("args", "created_at", "make")

    def __init__(self, make: Callable[..., dict], *args) -> None:
        self.make, self.args = make, args

    def fields(self) -> dict:
        fields = self.make(*self.args)
        fields["created_at"] = fields["updated_at"] = self.created_at
        return fields


def as_fields(item) -> dict:
    """A queued item's fields: a dict as it is, a ``QueuedRecord``'s made now."""
    return item if type(item) is dict else item.fields()


# ----------------------------------------------------------------- the writer
class RecordQueue(queue.Queue):
    """A bounded FIFO whose ``put_nowait`` (the one call a save makes) runs in one frame.

    ``ready`` (an event) is set by the put that makes the queue hold ``ready_at`` items: the
    writer, gathering a batch, has enough to write it without waiting out its linger.
    """

    def __init__(self, maxsize: int = 0, *, ready: threading.Event | None = None,
                 ready_at: int = 0) -> None:
        super().__init__(maxsize)
        self.ready, self.ready_at = ready, ready_at

    def put_nowait(self, item) -> None:
        """``Queue.put(item, block=False)`` without its layers of Python calls."""
        with self.mutex:  # the lock under not_empty, not_full and all_tasks_done
            if 0 < self.maxsize <= len(self.queue):
                raise queue.Full
            self.queue.append(item)
            self.unfinished_tasks += 1
            # Wake the writer only when it waits in get(). ``_waiters`` is the condition's own
            # list; a Python without it gets a notify on every put, as queue.Queue does.
            if getattr(self.not_empty, "_waiters", True):
                self.not_empty.notify()
            batch_ready = len(self.queue) == self.ready_at
        if batch_ready and self.ready is not None:
            self.ready.set()


class RecordWriter:
    """A bounded queue of success records and the thread that writes them in batches."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """A fresh, empty writer for this process (at creation and after a fork)."""
        self.pid = os.getpid()
        self.batch_size = conf.get("RECORD_BATCH_SIZE")
        self.linger = conf.get("RECORD_LINGER")
        # set by flush() and stop(), and by the put that completes a batch (the writer holds
        # its first record): the writer stops gathering and writes what it has (_gather)
        self.wake = threading.Event()
        self.queue: RecordQueue = RecordQueue(conf.get("RECORD_QUEUE_SIZE"), ready=self.wake,
                                              ready_at=self.batch_size - 1)
        self.thread: threading.Thread | None = None
        self.running = False  # the thread is in _run (cheaper to read than is_alive())
        self.lock = threading.Lock()
        self.flushing = 0  # callers waiting in flush(): no batch waits to gather meanwhile
        self.stopping = False  # stop() has queued the end: no batch waits to gather either
        self.written = self.lost = self.written_inline = self.batches = 0

    # ------------------------------------------------------------- the caller's side
    def submit(self, item: dict | QueuedRecord) -> SaveAttempt | None:
        """Queue one record (its fields, or a ``QueuedRecord``); if the queue is full, write it
        here and return it."""
        if self.pid != os.getpid():
            self._reset()  # a fork that os.register_at_fork did not see
        if not self.running:
            self._ensure_thread()
        now = timezone.now()  # the save's time
        if type(item) is dict:
            item["created_at"] = item["updated_at"] = now
        else:
            item.created_at = now
        try:
            self.queue.put_nowait(item)
            return None
        except queue.Full:
            return self._write_inline(as_fields(item))

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
            self.stopping = True
            try:
                self.queue.put(_STOP, timeout=timeout)
                self.wake.set()  # a batch gathering behind it is written now
            except queue.Full:  # saves keep coming: the daemon thread ends with the process
                return False
            thread.join(timeout)
        return flushed

    def _drain_here(self) -> None:
        """Write what is queued in the calling thread (no writer thread is running)."""
        token = _pausing.set(False)
        try:
            while batch := self._take(self.batch_size):
                self._process(batch)
        finally:
            _pausing.reset(token)

    # ------------------------------------------------------------- the writer thread
    def _run(self) -> None:
        self.running = True
        try:
            stopped = False
            while not stopped:
                first = self.queue.get()
                self._gather(first)
                _pausing.set(not self.flushing)  # this thread's own context
                stopped = self._process([first, *self._take(self.batch_size - 1)])
        finally:
            self.running = False
            connections.close_all()

    def _gather(self, first) -> None:
        """Wait ``RECORD_LINGER`` seconds after a batch's first record for more to come (and
        leave the GIL to the requests): one commit per batch, not per save. The wait ends
        sooner when ``RECORD_BATCH_SIZE`` records are at hand (the queue's ``ready``), and
        ``flush()`` and ``stop()`` cut it short.

        A wake-up from before this batch's first record (the queue passing ``ready_at`` while
        the last batch was written, a flush that found nothing to wait for) would end this
        wait with a batch of a few records: it is forgotten first, and what it stood for is
        read from the state each waker sets before it sets the event.
        """
        if first is not _STOP:
            self.wake.clear()
            if not (self.flushing or self.stopping
                    or self.queue.qsize() >= self.queue.ready_at):
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
        try:
            records = self._fields([item for item in batch if item is not _STOP])
            written = self._insert(records) if records else 0
            self.batches += bool(records)
        finally:
            for _item in batch:
                self.queue.task_done()
        self.written += written
        self.lost += len(records) - written
        return any(item is _STOP for item in batch)

    def _fields(self, items: list) -> list[dict]:
        """The queued items' fields; one whose fields cannot be made is lost and reported."""
        made, error = [], None
        for item in items:
            try:
                made.append(as_fields(item))
            except Exception as exc:  # noqa: BLE001 - counted, logged and reported below
                error = exc
        if len(made) < len(items):
            self.lost += len(items) - len(made)
            report_lost(len(items) - len(made), error)
        return made

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
    """One transaction, one ``COPY`` (PostgreSQL with psycopg 3) or ``executemany``: this is
    ``bulk_create`` without the model instances, and with a short sleep every few rows.

    The writer shares the GIL with the requests: a long stretch of pure Python here would make
    every request that returns from a socket read wait for it. What does not change from row
    to row (the columns, their defaults, a row's keys) is worked out once per process; how the
    values are converted is in the module's docstring.
    """
    if not rows:
        return
    alias = records.record_alias()
    connection = connections[alias]
    data = _copy_data(connection, rows) if copy_supported(connection) else None
    if data is None:
        _execute_many(connection, alias, rows)
    else:
        _write_copy(connection, alias, data)


def _copy_data(connection, rows: list[dict]) -> str | None:
    """The batch as ``COPY`` text; None when a value's text is not known here (the batch then
    takes ``executemany``, where psycopg adapts it as usual)."""
    try:
        return copy_text(connection, rows)
    except NotCopyText:
        return None


def _execute_many(connection, alias: str, rows: list[dict]) -> None:
    _fields, sql = _insert_statement(connection)
    params = _converted(connection, rows, copy=False)
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        cursor.executemany(sql, params)


def copy_text(connection, rows: list[dict]) -> str:
    """``rows`` as ``COPY ... FROM STDIN`` reads them: one line per row, the table's columns
    (``_insert_statement``'s) separated by tabs, each value as psycopg's ``write_row`` would
    write it."""
    return "\n".join(map("\t".join, _converted(connection, rows, copy=True))) + "\n"


def _converted(connection, rows: list[dict], *, copy: bool) -> list[tuple]:
    """Each row's values in the table's column order, as ``COPY`` text or as query parameters,
    ``YIELD_EVERY`` rows at a time with a short sleep between (the GIL goes to the requests),
    unless someone waits for the batch (``_pausing``). Rows with the same keys (every queued
    success record has the same) share a ``_Layout``."""
    now = timezone.now()
    pausing = _pausing.get()
    converted = []
    for start in range(0, len(rows), YIELD_EVERY):
        if start and pausing:
            _pause()
        some = [_with_times(row, now) for row in rows[start:start + YIELD_EVERY]]
        for keys, same_keys in groupby(some, key=tuple):
            layout = _layout(connection, copy, keys)
            converted.extend(layout.convert(list(same_keys), connection))
    return converted


def _pause() -> None:
    """The short sleep between two stretches of rows: the GIL goes to the requests."""
    time.sleep(YIELD_SECONDS)


def _with_times(row: dict, now: datetime) -> dict:
    """``row`` with the batch's time for a timestamp it lacks (a queued row has its save's)."""
    if "created_at" in row and "updated_at" in row:
        return row
    return {"created_at": now, "updated_at": now, **row}


_MISSING = object()
LAYOUT_MEMO_SIZE = 64
_layouts: dict[tuple, _Layout] = {}  # (vendor, copy, a row's keys) -> its layout
_plans: dict[tuple, list] = {}  # (vendor, copy) -> the table's columns (_Column)


class _Column(NamedTuple):
    """A column of the table: how its values are converted, and its default, converted."""

    name: str
    convert: Callable[[tuple, object], Sequence]
    default: object


class _Layout:
    """Rows with one set of keys, converted column by column.

    ``take`` picks a row's values for the table's columns it has, in one call (a row always
    has its two timestamps, so that is a tuple); each column of the table is then its values
    converted together, the digest of the row's key (as ``insert_attempt`` computes it), or
    the column's default.
    """

    def __init__(self, plan: list[_Column], keys: tuple) -> None:
        names = [column.name for column in plan
                 if column.name in keys and column.name != "key_digest"]
        self.take = operator.itemgetter(*names)
        # per column: (which of the taken values, how they are converted, else the default)
        self.slots = [(names.index("key"), _key_digests, None) if column.name == "key_digest"
                      else (names.index(column.name), column.convert, None)
                      if column.name in names else (None, None, column.default)
                      for column in plan]

    def convert(self, rows: list[dict], connection) -> Iterator[tuple]:
        taken = list(zip(*map(self.take, rows), strict=True))
        count = len(rows)
        return zip(*[repeat(default, count) if index is None
                     else convert(taken[index], connection)
                     for index, convert, default in self.slots], strict=True)


def _layout(connection, copy: bool, keys: tuple) -> _Layout:
    found = _layouts.get((connection.vendor, copy, keys))
    if found is None:
        if len(_layouts) >= LAYOUT_MEMO_SIZE:
            _layouts.clear()
        found = _layouts[(connection.vendor, copy, keys)] = _Layout(
            _column_plan(connection, copy), keys)
    return found


def _key_digests(keys: tuple, connection) -> list[str]:
    return [key_digest(key) for key in keys]


def _column_plan(connection, copy: bool) -> list[_Column]:
    """The table's columns, in ``_insert_statement``'s order, each with its converter and its
    default (the model's defaults are constants: none is a fresh object per row)."""
    found = _plans.get((connection.vendor, copy))
    if found is None:
        fields, _sql = _insert_statement(connection)
        finish = _finisher(copy)
        found = _plans[(connection.vendor, copy)] = [
            _Column(field.attname, _converter(field, connection, copy),
                    finish(field.get_db_prep_save(field.get_default(), connection)))
            for field in fields]
    return found


def _finisher(copy: bool) -> Callable:
    """What a prepared value becomes: ``COPY`` text, or a parameter (JSON serialized once)."""
    return copy_value if copy else _serialized


# Columns whose values of exactly this Python type every backend takes as they are (Django's
# preparation would return them unchanged): the value is passed without preparing it.
_NATIVE = ((models.BooleanField, bool), (models.IntegerField, int), (models.FloatField, float))


def _converter(field, connection, copy: bool) -> Callable[[tuple, object], Sequence]:
    """The function that converts a column's values, ``(values, connection) -> values``.

    Each takes the common case (text that needs nothing but its cut, a number of the column's
    own type, an aware datetime) inline and sends every other value through the exact path:
    made storable as ``insert_attempt`` does, then Django's preparation, then (for ``COPY``)
    psycopg's text form.
    """
    prepare = field.get_db_prep_save
    if isinstance(field, models.JSONField):
        return partial(_json_values, {}, prepare, _finisher(copy))
    if isinstance(field, models.CharField | models.TextField):
        return partial(_copy_texts if copy else _text_params, field.max_length, prepare)
    if isinstance(field, models.DateTimeField):
        return partial(_datetime_values, prepare, copy)
    native = next((native for cls, native in _NATIVE if isinstance(field, cls)), None)
    if copy and native in (int, float):
        return partial(_copy_numbers, native, prepare)
    if native is not None and not copy:
        return partial(_native_params, native, prepare)
    return partial(_prepared_values, prepare, _finisher(copy))


def _copy_texts(limit, prepare, values: tuple, connection) -> Sequence[str]:
    """Text for ``COPY``: printable text without a backslash (nearly all of it) needs neither
    ``storable`` nor escaping, only the cut to its column."""
    if _unchanged(values, limit, copy=True):
        return values
    return [value[:limit] if isinstance(value, str) and value.isprintable() and "\\" not in value
            else copy_value(_storable_text(value, limit, prepare, connection))
            for value in values]


def _text_params(limit, prepare, values: tuple, connection) -> Sequence:
    if _unchanged(values, limit, copy=False):
        return values
    return [value[:limit] if isinstance(value, str) and value.isprintable()
            else _storable_text(value, limit, prepare, connection) for value in values]


def _unchanged(values: tuple, limit: int | None, *, copy: bool) -> bool:
    """Whether each value is printable text (so ``storable`` leaves it as it is) within its
    column's length and, for ``COPY``, without a backslash: checked on all of them at once."""
    try:
        joined = "".join(values)
    except TypeError:  # not all of them text
        return False
    return joined.isprintable() and not (copy and "\\" in joined) and (
        limit is None or max(map(len, values)) <= limit)


def _storable_text(value, limit, prepare, connection):
    """A text column's value as ``insert_attempt`` stores it: made storable and cut to its
    column (``storable_text``), and prepared by the column unless it is now plain text."""
    value = storable_text(value, limit)
    if value is not None and type(value) is not str:
        value = prepare(value, connection)
    return value


# The last datetime column converted: (its values, for what (COPY or not, and the connection's
# alias and vendor: preparing a datetime reads the connection's time zone), the converted values)
_last_datetimes: tuple[tuple, tuple, list] = ((), (), [])


def _datetime_values(prepare, copy: bool, values: tuple, connection) -> list:
    """Datetimes prepared by their column; for ``COPY`` as text, where an aware one (what
    ``timezone.now()`` gives) is what Django hands psycopg unchanged.

    A queued row's two timestamps are one object (``submit`` sets both to the save's time):
    the second column reuses what was made for the first, the costliest value of a row.
    """
    global _last_datetimes
    last, made_for, converted = _last_datetimes
    wanted_for = (copy, connection.alias, connection.vendor)
    if made_for == wanted_for and len(last) == len(values) \
            and all(map(operator.is_, values, last)):
        return converted
    if copy:
        converted = [str(value) if type(value) is datetime and value.utcoffset() is not None
                     else copy_value(prepare(value, connection)) for value in values]
    else:
        converted = [prepare(value, connection) for value in values]
    _last_datetimes = (values, wanted_for, converted)
    return converted


def _copy_numbers(native: type, prepare, values: tuple, connection) -> list[str]:
    return [str(value) if type(value) is native else copy_value(prepare(value, connection))
            for value in values]


def _native_params(native: type, prepare, values: tuple, connection) -> list:
    return [value if value is None or type(value) is native else prepare(value, connection)
            for value in values]


def _prepared_values(prepare, finish, values: tuple, connection) -> list:
    return [finish(prepare(value, connection)) for value in values]


JSON_MEMO_SIZE = 256


def _json_values(memo: dict, prepare, finish, values: tuple, connection) -> list:
    """A JSON column's values, made storable, prepared and finished. None is SQL NULL, as
    Django stores it; the values that rows repeat (an empty list, a dict of text such as
    ``{"ContentType": ...}``) are made once and kept in the column's ``memo``."""
    null = finish(None)
    return [null if value is None else _json_value(memo, value, prepare, finish, connection)
            for value in values]


def _json_value(memo: dict, value, prepare, finish, connection):
    shape = _json_shape(value)
    if shape is None:
        return finish(prepare(storable_json(value), connection))
    found = memo.get(shape, _MISSING)
    if found is _MISSING:
        if len(memo) >= JSON_MEMO_SIZE:
            memo.clear()
        found = memo[shape] = finish(prepare(storable_json(value), connection))
    return found


def _json_shape(value) -> tuple | None:
    """A hashable stand-in for an empty list or a dict whose keys and values are all text;
    None for anything else (prepared row by row)."""
    kind = type(value)
    if kind is list and not value:
        return (list,)
    if kind is dict and all(type(k) is str and type(v) is str for k, v in value.items()):
        return (dict, *value.items())
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


# ----------------------------------------------------------------- COPY's text format
class NotCopyText(TypeError):
    """A prepared value of a type ``copy_value`` does not know: the batch is written with
    ``executemany``, as psycopg2 and SQLite write theirs."""


COPY_NULL = "\\N"
# COPY's text format reads a backslash as an escape, a tab as the next column and a newline
# or carriage return as the next row: a value that holds one has it written as an escape.
_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def copy_value(value) -> str:
    """A prepared value as ``COPY``'s text format takes it: the text psycopg's text dumper
    makes of it (what ``write_row`` sends), escaped; ``\\N`` for NULL.

    Only the types Django prepares this model's columns into are known here; anything else
    raises ``NotCopyText`` rather than guess at another dumper's text.
    """
    kind = type(value)
    if value is None:
        return COPY_NULL
    if kind is str:
        return copy_escaped(value)
    if kind is bool:
        return "t" if value else "f"
    if kind is int or kind is float or kind is datetime:
        return str(value)
    if isinstance(value, str):  # a str subclass (a choices enum): its characters, as psycopg
        return copy_escaped(str.__str__(value))
    if isinstance(value, int):  # psycopg's Int4 and Int8, which Django prepares integers into
        return int.__repr__(value)
    return _copy_json(value)


def _copy_json(value) -> str:
    """psycopg's JSON wrapper as its dumper writes it: its own ``dumps`` of its object."""
    dumps = getattr(value, "dumps", None) if isinstance(value, JSON_WRAPPERS) else None
    text = dumps(value.obj) if dumps is not None and hasattr(value, "obj") else None
    if type(text) is not str:
        raise NotCopyText(f"no COPY text for {type(value).__name__}")
    return copy_escaped(text)


def copy_escaped(text: str) -> str:
    """``text`` as a ``COPY`` text-format value (``_COPY_ESCAPES``)."""
    for char, escape in _COPY_ESCAPES:
        if char in text:
            text = text.replace(char, escape)
    return text


def copy_supported(connection) -> bool:
    """PostgreSQL through psycopg 3, whose cursors have ``copy()``; psycopg2 (which Django
    also supports) and every other database write the batch with ``executemany``."""
    return connection.vendor == "postgresql" and \
        getattr(connection.Database, "__name__", "") == "psycopg"


def _write_copy(connection, alias: str, data: str) -> None:
    """One ``COPY`` of the batch's text. In autocommit mode (the record connection's) a
    ``COPY`` is a transaction of its own: no BEGIN and COMMIT round trips."""
    if connection.get_autocommit():
        with connection.cursor() as cursor:
            _copy(connection, cursor, data)
        return
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        _copy(connection, cursor, data)


def _copy(connection, cursor, data: str) -> None:
    fields, _sql = _insert_statement(connection)
    with connection.wrap_database_errors, \
            cursor.cursor.copy(_copy_statement(connection, fields)) as copy:
        copy.write(data)


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
