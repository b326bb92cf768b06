"""Records at fleet scale on PostgreSQL: bytes per million rows, insert cost, purge.

Usage (from the repository root, PostgreSQL on 127.0.0.1:5432 with trust auth)::

    .venv/bin/python benchmarks/records_scale_benchmark.py measure --rows 0
    .venv/bin/python benchmarks/records_scale_benchmark.py measure --rows 1000000
    .venv/bin/python benchmarks/records_scale_benchmark.py measure --rows 10000000
    .venv/bin/python benchmarks/records_scale_benchmark.py purge [--batch-size 1000] [--rows N]

It uses its own database (``$STORAGE_GUARD_BENCH_DB``, default ``sg_perf``, created if missing;
never the shared test database) and migrates ``storage_guard`` into it.

``measure`` tops the table up to ``--rows`` rows of first-try successes (one
``INSERT … SELECT … FROM generate_series`` per million, timed), prints the table and index
bytes, then times inserts into the filled table against an empty copy of it (``CREATE TABLE …
(LIKE … INCLUDING ALL)``: the same columns and indexes), interleaved rep by rep with the order
alternating: ``--inserts`` records one per commit through the synchronous path
(``records.insert_attempt`` on the record alias: autocommit, ``synchronous_commit=off``) and
four times as many through the background writer's path (``success_records.insert_many``,
``--batch`` per commit). The inserted rows are deleted again, so the table stays at ``--rows``.

``purge`` runs an inserter thread (the real record path, one row at a time, as a web process
would) for a baseline period, then again while ``operations.purge.purge`` deletes every filled
row (31 to 32 days old, in insertion order as in production), and prints the purge's duration
and the inserter's latency percentiles in both periods: if purge blocked inserts, the maximum
would show it. ``--rows N`` purges only the oldest N rows (a cut-off just after the N-th), for
a measured purge shorter than the whole table; Ctrl-C during the purge stops it and still prints
the rows deleted so far, the rate and the latencies.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

CHUNK = 1_000_000
EMPTY_TABLE = "sg_bench_empty"

# The SELECT lists the model's columns in field order (created_at, updated_at, … next_retry_at,
# storage_spec): a field added to the model needs its value here (``top_up`` checks the count).
FILL_SQL = """
INSERT INTO storage_guard_saveattempt ({columns})
SELECT created, created, 'default', 'media', 'save', name, 'media/' || name,
       encode(sha256(convert_to('media/' || name, 'UTF8')), 'hex'),
       octet_length(name) + 6, size, 'image/jpeg',
       encode(sha256(convert_to(name || 'v', 'UTF8')), 'hex'), 'succeeded', 1, '', '', NULL,
       '', NULL, '[]'::jsonb, '', '', duration,
       '{"ContentType": "image/jpeg"}'::jsonb, '', '', NULL, NULL, NULL
FROM (
    SELECT now() - interval '32 days' + i * interval '1 day' / 10000000 AS created,
           'uploads/2026/10/' || (i %% 31 + 1) || '/' || md5(i::text) || '.jpg' AS name,
           (20000 + random() * 2000000)::bigint AS size, 20 + random() * 200 AS duration
    FROM generate_series(%s, %s) AS i
) AS rows
"""


def setup_django(database: str) -> None:
    """``report_benchmark``'s set-up (its own database, created if missing), then migrate."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import report_benchmark
    from django.conf import settings

    report_benchmark.setup_django(database)
    # The production defaults: records on their own autocommit connection.
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "INDEPENDENT_CONNECTION": True}
    from django.core.management import call_command

    call_command("migrate", "storage_guard", verbosity=0)


def sql(query: str, params=None):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else None


def row_count() -> int:
    return sql("SELECT count(*) FROM storage_guard_saveattempt")[0][0]


def top_up(rows: int, fast: bool = False) -> None:
    """Fill the table to ``rows`` rows, a million per INSERT.

    ``fast`` drops the secondary indexes first and builds them again at the end (a sort per
    index instead of a random B-tree insert per row and index): the only way to reach 10M rows
    in reasonable time on a loaded machine. The indexes come out the same, only more compact
    than ones grown row by row, which the printed sizes say.
    """
    present = row_count()
    if present > rows:
        sql("TRUNCATE storage_guard_saveattempt CASCADE")
        present = 0
    if present == rows:
        return
    query = FILL_SQL.replace("{columns}", model_columns())
    sql(f"EXPLAIN {query}", [1, 1])  # a column count that no longer matches fails here, early
    indexes = sql("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = "
                  "'storage_guard_saveattempt' AND indexname NOT LIKE '%%_pkey'") if fast else []
    for name, _definition in indexes:
        sql(f'DROP INDEX "{name}"')
    try:
        while present < rows:
            chunk = min(CHUNK, rows - present)
            started = time.perf_counter()
            sql(query, [present + 1, present + chunk])
            present += chunk
            print(f"filled {present:,} rows (+{chunk:,} in {time.perf_counter() - started:.1f} s)",
                  flush=True)
    finally:  # the indexes come back even if a fill fails: the schema stays the migrated one
        started = time.perf_counter()
        for _name, definition in indexes:
            sql(definition)
    if indexes:
        print(f"rebuilt {len(indexes)} indexes in {time.perf_counter() - started:.1f} s "
              "(built by sort: more compact than grown row by row)", flush=True)
    sql("VACUUM ANALYZE storage_guard_saveattempt")


def model_columns() -> str:
    from storage_guard.models import SaveAttempt

    return ", ".join(field.column for field in SaveAttempt._meta.concrete_fields
                     if not field.primary_key)


def sizes() -> dict:
    table, indexes, total = sql(
        "SELECT pg_table_size('storage_guard_saveattempt'), "
        "pg_indexes_size('storage_guard_saveattempt'), "
        "pg_total_relation_size('storage_guard_saveattempt')")[0]
    per_index = sql("SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) "
                    "FROM pg_index WHERE indrelid = 'storage_guard_saveattempt'::regclass "
                    "ORDER BY 2 DESC")
    return {"table": table, "indexes": indexes, "total": total, "per_index": per_index}


def success_fields(number: int) -> dict:
    name = f"uploads/2026/11/27/bench-{os.getpid()}-{number:08d}-{time.time_ns()}.jpg"
    return {"storage_alias": "default", "bucket": "media", "name": name, "key": "media/" + name,
            "key_bytes": len(name) + 6, "size": 123456, "sha256": "0" * 64,
            "content_type": "image/jpeg", "write_params": {"ContentType": "image/jpeg"},
            "status": "succeeded", "attempts": 1, "duration_ms": 42.0, "attempt_log": []}


@contextmanager
def table(name: str):
    """Point the SaveAttempt model at another table with the same columns and indexes.

    The background writer builds its INSERT/COPY statement once per process, with the table's
    name in it: forget it on the way in and out, or both arms would write to the same table.
    """
    from storage_guard.models import SaveAttempt
    from storage_guard.saving import success_records

    meta = SaveAttempt._meta
    original, meta.db_table = meta.db_table, name
    success_records._statements.clear()
    try:
        yield
    finally:
        meta.db_table = original
        success_records._statements.clear()


def time_single_inserts(n: int) -> float:
    """Median seconds of one record written by itself (the synchronous path): autocommit."""
    from storage_guard.saving import records

    timings = []
    for number in range(n):
        started = time.perf_counter()
        records.insert_attempt(**success_fields(number))
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def time_batched_inserts(n: int, batch: int) -> float:
    """Seconds per record written by the background writer's path, ``batch`` per commit."""
    from storage_guard.saving.success_records import insert_many

    started = time.perf_counter()
    for first in range(0, n, batch):
        insert_many([success_fields(number) for number in range(first, min(first + batch, n))])
    return (time.perf_counter() - started) / n


def remove_bench_inserts() -> None:
    for name in ("storage_guard_saveattempt", EMPTY_TABLE):
        if sql("SELECT to_regclass(%s)", [name])[0][0]:
            sql(f"DELETE FROM {name} WHERE name LIKE 'uploads/2026/11/27/bench-%%'")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def measure(rows: int, inserts: int, batch: int, reps: int, fast: bool) -> None:
    top_up(rows, fast)
    found = sizes()
    million = max(rows, 1) / 1_000_000
    print(f"rows: {rows:,}")
    print(f"table bytes: {found['table']:,}  indexes: {found['indexes']:,}  "
          f"total: {found['total']:,}")
    if rows:
        print(f"per million rows: table {found['table'] / million / 2**20:.1f} MiB, indexes "
              f"{found['indexes'] / million / 2**20:.1f} MiB, total "
              f"{found['total'] / million / 2**20:.1f} MiB")
        for name, size in found["per_index"]:
            print(f"  {name}: {size / million / 2**20:.1f} MiB per million rows")
    compare_inserts(rows, inserts, batch, reps)


def compare_inserts(rows: int, inserts: int, batch: int, reps: int) -> None:
    """Insert cost into the filled table against an empty copy, interleaved rep by rep."""
    sql(f"DROP TABLE IF EXISTS {EMPTY_TABLE}")
    sql(f"CREATE TABLE {EMPTY_TABLE} (LIKE storage_guard_saveattempt INCLUDING ALL)")
    arms = {"empty": EMPTY_TABLE, "filled": "storage_guard_saveattempt"}
    results = {(arm, kind): [] for arm in arms for kind in ("single", "batched")}
    for rep in range(reps):
        for arm in (list(arms) if rep % 2 == 0 else list(arms)[::-1]):
            with table(arms[arm]):
                results[arm, "single"].append(time_single_inserts(inserts))
                results[arm, "batched"].append(time_batched_inserts(inserts * 4, batch))
    remove_bench_inserts()
    sql(f"DROP TABLE {EMPTY_TABLE}")
    for kind, label in (("single", "one record per commit (insert_attempt)"),
                        ("batched", f"background writer's batches of {batch} (insert_many)")):
        empty = statistics.median(results["empty", kind])
        filled = statistics.median(results["filled", kind])
        ratios = sorted(filled_rep / empty_rep for empty_rep, filled_rep
                        in zip(results["empty", kind], results["filled", kind], strict=True))
        print(f"{label}: empty table {ms(empty)}, {rows:,} rows {ms(filled)} per record, "
              f"ratio {filled / empty:.2f} (per rep {ratios[0]:.2f} to {ratios[-1]:.2f})")


class Inserter(threading.Thread):
    """Inserts success records one by one, as a web process would, timing each."""

    def __init__(self):
        super().__init__(daemon=True)
        self.timings: list[float] = []
        self.running = threading.Event()
        self.stopped = threading.Event()

    def run(self) -> None:
        from django.db import connections

        from storage_guard.saving import records

        number = 0
        while not self.stopped.is_set():
            if not self.running.wait(0.05):
                continue
            started = time.perf_counter()
            records.insert_attempt(**success_fields(number))
            self.timings.append(time.perf_counter() - started)
            number += 1
            time.sleep(0.002)  # about 300 inserts/s at most: a steady load, not a flood
        connections.close_all()

    def period(self, seconds: float | None = None, during=None) -> tuple[list[float], object]:
        self.timings = []
        self.running.set()
        result = during() if during else time.sleep(seconds)
        self.running.clear()
        return list(self.timings), result


def summary(timings: list[float]) -> str:
    ordered = sorted(timings)
    p99 = ordered[int(len(ordered) * 0.99)]
    return (f"{len(ordered):,} inserts, median {ms(statistics.median(ordered))}, "
            f"p99 {ms(p99)}, max {ms(ordered[-1])}")


def measure_purge(batch_size: int, baseline: float, purge_rows: int | None) -> None:
    """Purge the oldest ``purge_rows`` rows (all filled rows by default) under an inserter."""
    from storage_guard.operations import purge

    rows = row_count()
    nth = None
    if purge_rows is not None and purge_rows < rows:  # a cut-off just after the N-th oldest row
        nth = sql("SELECT created_at FROM storage_guard_saveattempt ORDER BY created_at "
                  "OFFSET %s LIMIT 1", [purge_rows])[0][0]

    def run_purge():
        from django.utils import timezone

        # The age of the N-th row taken as the purge starts, not before the baseline period.
        older_than = timezone.now() - nth if nth else timedelta(days=30)
        try:
            return purge.purge(older_than, batch_size=batch_size)
        except KeyboardInterrupt:  # Ctrl-C: the batches committed so far stay deleted
            return None

    inserter = Inserter()
    inserter.start()
    before, _ = inserter.period(baseline)
    started = time.perf_counter()
    during, result = inserter.period(during=run_purge)
    elapsed = time.perf_counter() - started
    inserter.stopped.set()
    inserter.join()
    if result is None:
        remove_bench_inserts()
        deleted = rows - row_count()
        print(f"purge INTERRUPTED after {deleted:,} of {rows:,} rows in batches of "
              f"{batch_size}: {elapsed:.1f} s ({deleted / elapsed:,.0f} rows/s)")
    else:
        print(f"purge of {result.deleted:,} of {rows:,} rows in {result.batches:,} batches of "
              f"{batch_size}: {elapsed:.1f} s ({result.deleted / elapsed:,.0f} rows/s)")
    print(f"inserts before purge: {summary(before)}")
    print(f"inserts during purge: {summary(during)}", flush=True)
    remove_bench_inserts()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    measure_parser = sub.add_parser("measure")
    measure_parser.add_argument("--rows", type=int, required=True)
    measure_parser.add_argument("--inserts", type=int, default=200)
    measure_parser.add_argument("--batch", type=int, default=100)
    measure_parser.add_argument("--reps", type=int, default=5)
    measure_parser.add_argument("--fast-fill", action="store_true",
                                help="drop the secondary indexes while filling, then rebuild")
    purge_parser = sub.add_parser("purge")
    purge_parser.add_argument("--batch-size", type=int, default=1000)
    purge_parser.add_argument("--baseline", type=float, default=15.0)
    purge_parser.add_argument("--rows", type=int, default=None,
                              help="purge only the oldest ROWS rows (default: every filled row)")
    args = parser.parse_args()
    setup_django(os.environ.get("STORAGE_GUARD_BENCH_DB", "sg_perf"))
    if args.command == "measure":
        measure(args.rows, args.inserts, args.batch, args.reps, args.fast_fill)
    else:
        measure_purge(args.batch_size, args.baseline, args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
