"""Records at fleet scale on PostgreSQL: bytes per million rows, insert cost, purge.

Usage (from the repository root, PostgreSQL on 127.0.0.1:5432 with trust auth)::

    .venv/bin/python benchmarks/records_scale_benchmark.py measure --rows 0
    .venv/bin/python benchmarks/records_scale_benchmark.py measure --rows 1000000
    .venv/bin/python benchmarks/records_scale_benchmark.py measure --rows 10000000
    .venv/bin/python benchmarks/records_scale_benchmark.py purge [--batch-size 1000]

It uses its own database (``$STORAGE_GUARD_BENCH_DB``, default ``sg_perf``, created if missing;
never the shared test database) and migrates ``storage_guard`` into it.

``measure`` tops the table up to ``--rows`` rows of first-try successes (one
``INSERT … SELECT … FROM generate_series`` per million, timed), prints the table and index
bytes, then times ``--inserts`` single-row inserts through the real record path
(``recording.insert_attempt`` on the record alias: autocommit, ``synchronous_commit=off``) and
the same number through the background writer's path (``bulk_create`` in batches), and
deletes those rows again so that the table stays at ``--rows``.

``purge`` runs an inserter thread (the real record path, one row at a time, as a web process
would) for a baseline period, then again while ``storage_guard.purge.purge`` deletes every filled
row (they are 31 to 32 days old), and prints the purge's duration and the inserter's latency
percentiles in both periods: if purge blocked inserts, the maximum would show it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1_000_000

FILL_SQL = """
INSERT INTO storage_guard_saveattempt (
    created_at, updated_at, storage_alias, bucket, operation, name, key, key_digest, key_bytes,
    size, content_type, sha256, status, attempts, error_code, error_category, transient,
    error_message, error_response, attempt_log, request_id, host_id, duration_ms,
    write_params, stash_backend, stash_location, recovered_at, next_retry_at)
SELECT created, created, 'default', 'media', 'save', name, 'media/' || name,
       encode(sha256(convert_to('media/' || name, 'UTF8')), 'hex'),
       octet_length(name) + 6, size, 'image/jpeg',
       encode(sha256(convert_to(name || 'v', 'UTF8')), 'hex'), 'succeeded', 1, '', '', NULL,
       '', NULL, '[]'::jsonb, '', '', duration,
       '{"ContentType": "image/jpeg"}'::jsonb, '', '', NULL, NULL
FROM (
    SELECT now() - interval '31 days' - random() * interval '1 day' AS created,
           'uploads/2026/10/' || (i %% 31 + 1) || '/' || md5(i::text) || '.jpg' AS name,
           (20000 + random() * 2000000)::bigint AS size, 20 + random() * 200 AS duration
    FROM generate_series(%s, %s) AS i
) AS rows
"""


def setup_django(database: str) -> None:
    os.environ["PGDATABASE"] = database
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings_postgres")
    sys.path.insert(0, str(ROOT))
    _create_database(database)
    import django
    from django.conf import settings

    django.setup()
    # The production defaults: records on their own autocommit connection.
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "INDEPENDENT_CONNECTION": True}
    from django.core.management import call_command

    call_command("migrate", "storage_guard", verbosity=0)


def _create_database(name: str) -> None:
    import psycopg
    from psycopg import sql

    params = {"host": os.environ.get("PGHOST", "127.0.0.1"),
              "port": os.environ.get("PGPORT", "5432"),
              "user": os.environ.get("PGUSER", "postgres"), "dbname": "postgres"}
    with psycopg.connect(**params, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def sql(query: str, params=None):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else None


def row_count() -> int:
    return sql("SELECT count(*) FROM storage_guard_saveattempt")[0][0]


def top_up(rows: int) -> None:
    present = row_count()
    if present > rows:
        sql("TRUNCATE storage_guard_saveattempt CASCADE")
        present = 0
    while present < rows:
        chunk = min(CHUNK, rows - present)
        started = time.perf_counter()
        sql(FILL_SQL, [present + 1, present + chunk])
        present += chunk
        print(f"filled {present:,} rows (+{chunk:,} in {time.perf_counter() - started:.1f} s)",
              flush=True)
    sql("VACUUM ANALYZE storage_guard_saveattempt")


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


def time_single_inserts(n: int) -> list[float]:
    from storage_guard import recording

    timings = []
    for number in range(n):
        started = time.perf_counter()
        recording.insert_attempt(**success_fields(number))
        timings.append(time.perf_counter() - started)
    return timings


def time_batched_inserts(n: int, batch: int) -> float:
    from storage_guard import recording
    from storage_guard.models import SaveAttempt, key_digest

    alias = recording.record_alias()
    started = time.perf_counter()
    for first in range(0, n, batch):
        records = [SaveAttempt(key_digest=key_digest(f["key"]), **f)
                   for f in map(success_fields, range(first, min(first + batch, n)))]
        SaveAttempt.objects.using(alias).bulk_create(records)
    return (time.perf_counter() - started) / n


def remove_bench_inserts() -> None:
    sql("DELETE FROM storage_guard_saveattempt WHERE name LIKE 'uploads/2026/11/27/bench-%%'")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def measure(rows: int, inserts: int, batch: int) -> None:
    top_up(rows)
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
    time_single_inserts(50)  # warm up the connection and the code path
    reps = []
    for _rep in range(3):
        single = time_single_inserts(inserts)
        batched = time_batched_inserts(inserts, batch)
        reps.append((statistics.median(single), statistics.mean(single), batched))
    remove_bench_inserts()
    median_of = [statistics.median(values) for values in zip(*reps, strict=True)]
    print(f"single-row insert (insert_attempt): median {ms(median_of[0])}, "
          f"mean {ms(median_of[1])} per save")
    print(f"batched insert (bulk_create x{batch}): {ms(median_of[2])} per save")


class Inserter(threading.Thread):
    """Inserts success records one by one, as a web process would, timing each."""

    def __init__(self):
        super().__init__(daemon=True)
        self.timings: list[float] = []
        self.running = threading.Event()
        self.stopped = threading.Event()

    def run(self) -> None:
        from django.db import connections

        from storage_guard import recording

        number = 0
        while not self.stopped.is_set():
            if not self.running.wait(0.05):
                continue
            started = time.perf_counter()
            recording.insert_attempt(**success_fields(number))
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


def measure_purge(batch_size: int, baseline: float) -> None:
    from storage_guard import purge

    rows = row_count()
    inserter = Inserter()
    inserter.start()
    before, _ = inserter.period(baseline)
    started = time.perf_counter()
    during, result = inserter.period(during=lambda: purge.purge(timedelta(days=30),
                                                                batch_size=batch_size))
    elapsed = time.perf_counter() - started
    inserter.stopped.set()
    inserter.join()
    remove_bench_inserts()
    print(f"purge of {result.deleted:,} of {rows:,} rows in {result.batches:,} batches of "
          f"{batch_size}: {elapsed:.1f} s ({result.deleted / elapsed:,.0f} rows/s)")
    print(f"inserts before purge: {summary(before)}")
    print(f"inserts during purge: {summary(during)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    measure_parser = sub.add_parser("measure")
    measure_parser.add_argument("--rows", type=int, required=True)
    measure_parser.add_argument("--inserts", type=int, default=1000)
    measure_parser.add_argument("--batch", type=int, default=200)
    purge_parser = sub.add_parser("purge")
    purge_parser.add_argument("--batch-size", type=int, default=1000)
    purge_parser.add_argument("--baseline", type=float, default=15.0)
    args = parser.parse_args()
    setup_django(os.environ.get("STORAGE_GUARD_BENCH_DB", "sg_perf"))
    if args.command == "measure":
        measure(args.rows, args.inserts, args.batch)
    else:
        measure_purge(args.batch_size, args.baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
