"""Time ``storage_guard_report`` over 1,000,000 SaveAttempt rows on PostgreSQL.

Usage (from the repository root, PostgreSQL on 127.0.0.1:5432 with trust auth)::

    .venv/bin/python benchmarks/report_benchmark.py [--rows 1000000] [--refill] [--runs 3]

It uses its own database (``$STORAGE_GUARD_BENCH_DB``, default ``storage_guard_bench``,
created if missing, never the test database), migrates ``storage_guard`` into it, fills the
table with one ``INSERT … SELECT … FROM generate_series`` (unless it already holds exactly
``--rows`` rows), runs ``ANALYZE``, then times ``build_report`` over the last 24 hours, which
covers every row: the worst case. The target is under 5 s.

The rows look like production: 200,000 keys saved five times each on average, 93 % first-try
successes, 3 % successes after a retry, 4 % failures of every kind with their attempt logs,
and content that is usually, but not always, the same between two saves of a key.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 5.0

FILL_SQL = """
INSERT INTO storage_guard_saveattempt (
    created_at, updated_at, storage_alias, bucket, operation, name, key, key_digest, key_bytes,
    size, content_type, sha256, status, attempts, error_code, error_category, transient,
    error_message, error_response, attempt_log, request_id, host_id, duration_ms,
    write_params, stash_backend, stash_location, recovered_at, next_retry_at)
SELECT created, created, 'default', 'bench', 'save', key, key,
       encode(sha256(convert_to(key, 'UTF8')), 'hex'), octet_length(key),
       size, 'application/octet-stream',
       encode(sha256(convert_to(key || ':' || version, 'UTF8')), 'hex'),
       status, attempts,
       CASE WHEN status = 'succeeded' THEN '' WHEN status = 'rejected' THEN 'KeyTooLong'
            ELSE code END,
       CASE WHEN status = 'succeeded' THEN '' WHEN status = 'rejected' THEN 'validation'
            ELSE category END,
       CASE WHEN status = 'succeeded' THEN NULL WHEN status = 'rejected' THEN false
            ELSE transient END,
       '', NULL,
       CASE WHEN attempts <= 1 AND status = 'succeeded' THEN '[]'::jsonb
            WHEN status = 'rejected' THEN '[]'::jsonb
            ELSE (SELECT jsonb_agg(jsonb_build_object(
                      'n', n, 'code', CASE WHEN status = 'succeeded' AND n = attempts
                                           THEN 'OK' ELSE code END,
                      'duration_ms', 12.5, 'delay_ms', 40.0))
                  FROM generate_series(1, attempts) AS n) END,
       CASE WHEN status = 'succeeded' THEN '' ELSE upper(substr(md5(i::text), 1, 16)) END,
       '', duration, '{}'::jsonb, '', '',
       CASE WHEN status = 'recovered' THEN created + interval '5 minutes' END, NULL
FROM (
    SELECT i, created, key, version, size, status, duration,
           CASE status WHEN 'succeeded' THEN (CASE WHEN r < 0.93 THEN 1 ELSE 2 + i % 2 END)
                       WHEN 'rejected' THEN 0 ELSE 5 END AS attempts,
           (ARRAY['SlowDown', 'InternalError', 'ConnectionClosed', 'ReadTimeout',
                  'AccessDenied'])[1 + i % 5] AS code,
           (ARRAY['throttled', 'server', 'network', 'timeout', 'auth'])[1 + i % 5] AS category,
           (i % 5) <> 4 AS transient
    FROM (
        SELECT i, r, now() - random() * interval '23 hours' AS created,
               'uploads/' || (i % 200000) || '/' || repeat('report-', (i % 200000) % 40)
                   || 'file.bin' AS key,
               CASE WHEN random() < 0.7 THEN 0 ELSE i % 5 END AS version,
               (1000 + random() * 5000000)::bigint AS size,
               CASE WHEN r < 0.96 THEN 'succeeded' WHEN r < 0.98 THEN 'failed'
                    WHEN r < 0.99 THEN 'deferred' WHEN r < 0.995 THEN 'recovered'
                    WHEN r < 0.998 THEN 'abandoned' ELSE 'rejected' END AS status,
               20 + random() * 200 + CASE WHEN r >= 0.93 THEN 500 + random() * 4000 ELSE 0 END
                   AS duration
        FROM (SELECT i, random() AS r FROM generate_series(1, {rows}) AS i) AS draw
    ) AS base
) AS rows
"""


def setup_django(database: str) -> None:
    os.environ["PGDATABASE"] = database
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings_postgres")
    sys.path.insert(0, str(ROOT))
    _create_database(database)
    import django

    django.setup()


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


def fill(rows: int, refill: bool) -> None:
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", "storage_guard", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM storage_guard_saveattempt")
        present = cursor.fetchone()[0]
        if present == rows and not refill:
            print(f"table already holds {present:,} rows; use --refill to rebuild them")
            return
        cursor.execute("TRUNCATE storage_guard_saveattempt CASCADE")
        started = time.perf_counter()
        cursor.execute(FILL_SQL.replace("{rows}", str(int(rows))))
        cursor.execute("ANALYZE storage_guard_saveattempt")
        print(f"filled {rows:,} rows in {time.perf_counter() - started:.1f} s")


def time_report(runs: int) -> list[float]:
    from django.utils import timezone

    from storage_guard.management.arguments import parse_since
    from storage_guard.operations.report import build_report

    timings = []
    for run in range(runs + 1):  # the first run warms the caches and is not counted
        started = time.perf_counter()
        data = build_report(since=parse_since("24h"), until=timezone.now())
        elapsed = time.perf_counter() - started
        if run:
            timings.append(elapsed)
    print(f"report over {data['saves']:,} saves, "
          f"{data['same_data']['keys_with_failures']:,} keys with failures, "
          f"{len(data['errors'])} error codes")
    return timings


def prepare(description: str, runs: int) -> argparse.Namespace:
    """Parse ``--rows/--runs/--refill``, set Django up on the bench database and fill it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--refill", action="store_true", help="rebuild the rows even if present")
    args = parser.parse_args()
    setup_django(os.environ.get("STORAGE_GUARD_BENCH_DB", "storage_guard_bench"))
    fill(args.rows, args.refill)
    return args


def main() -> int:
    args = prepare(__doc__.splitlines()[0], runs=3)
    timings = time_report(args.runs)
    median = statistics.median(timings)
    print("runs: " + ", ".join(f"{t:.2f} s" for t in timings))
    print(f"storage_guard_report over {args.rows:,} rows: median {median:.2f} s "
          f"(target < {TARGET_SECONDS:.0f} s) -> {'OK' if median < TARGET_SECONDS else 'SLOW'}")
    return 0 if median < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
