"""What a save costs when the record database fails: down, blackholed, or an SQLite file locked.

    .venv/bin/python benchmarks/database_failure_benchmark.py [--saves 5]

Records go to PostgreSQL (database ``$STORAGE_GUARD_BENCH_DB``, default
``storage_guard_bench_dbsafe``, created if missing) through a TCP gate
(``tests/testbed/tcpgate.py``), and to an SQLite file that a second connection holds locked.
S3 is a local SeaweedFS behind the fault proxy; a failing save meets two ``InternalError``
answers (``max_attempts=2``, no backoff to speak of), so its own S3 time is milliseconds and
what is measured is the database part. Each row gives the median seconds per save and its
ratio to the same save with a healthy database, measured in the same run, against the bound
``RECORD_CONNECT_TIMEOUT + RECORD_STATEMENT_TIMEOUT + 1`` (6 s at the defaults). Before the
bound existed, a blackholed database held every save for more than 180 s.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCH_DB = os.environ.get("STORAGE_GUARD_BENCH_DB", "storage_guard_bench_dbsafe")
RECORDS = "default__storage_guard"


def configure_django(workdir: Path) -> None:
    import django
    from django.conf import settings

    _create_database()
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "storage_guard"],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1",
                        "PORT": "5432", "NAME": BENCH_DB, "USER": "postgres"},
            "sqlite_records": {"ENGINE": "django.db.backends.sqlite3",
                               "NAME": str(workdir / "records.sqlite3")},
        },
        USE_TZ=True,
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        STORAGE_GUARD={"LAST_RESORT_DIR": str(workdir / "spool")},
        LOGGING={"version": 1, "disable_existing_loggers": False,
                 "loggers": {"storage_guard": {"level": "CRITICAL", "propagate": False}}},
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", "storage_guard", verbosity=0)
    call_command("migrate", "storage_guard", database="sqlite_records", verbosity=0)


def _create_database() -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            [BENCH_DB]).fetchone():
            conn.execute(f'CREATE DATABASE "{BENCH_DB}"')


def seconds_per_save(storage, *, failing: bool, proxy, n: int, between=None) -> list[float]:
    from django.core.files.base import ContentFile

    times = []
    for i in range(n):
        if between is not None:
            between()
        name = f"bench/{uuid.uuid4().hex}/{i}.bin"
        started = time.perf_counter()
        try:
            if failing:
                with proxy.outage_window("internal"):
                    storage.save(name, ContentFile(b"x" * 2048))
            else:
                storage.save(name, ContentFile(b"x" * 2048))
        except OSError:
            pass
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=5)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="storage-guard-dbfail-"))
    configure_django(workdir)

    from django.db import connections
    from django.test import override_settings

    from storage_guard import conf
    from storage_guard.saving import records
    from storage_guard.storage import GuardedS3Storage
    from tests.testbed.faultproxy import FaultProxy
    from tests.testbed.seaweed import SeaweedServer
    from tests.testbed.tcpgate import TcpGate

    records.register_alias("default")
    bound = conf.get("RECORD_CONNECT_TIMEOUT") + conf.get("RECORD_STATEMENT_TIMEOUT") + 1
    with SeaweedServer(workdir / "seaweed") as server, \
            TcpGate("127.0.0.1", 5432) as gate:
        proxy = FaultProxy(server.host, server.port, seed=0).start()
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        server.create_bucket(bucket)
        connections.settings[RECORDS].update(PORT=str(gate.port))
        storage = GuardedS3Storage(
            alias="bench", endpoint_url=proxy.endpoint_url, bucket_name=bucket,
            access_key="bench", secret_key="bench", region_name="us-east-1", max_attempts=2,
            breaker_threshold=0, backoff_base=0.001, backoff_cap=0.002, on_failure="defer")

        def close_records():
            connections[RECORDS].close()

        def run(label, failing, *, setup=None, between=None):
            if setup:
                setup()
            times = seconds_per_save(storage, failing=failing, proxy=proxy, n=args.saves,
                                     between=between)
            gate.open()
            return label, statistics.median(times), max(times)

        def warm_then_blackhole():
            gate.open()
            seconds_per_save(storage, failing=False, proxy=proxy, n=1)
            gate.blackhole()

        rows = [
            run("failed save, database healthy", True),
            run("failed save, PostgreSQL down", True, setup=gate.down),
            run("failed save, PostgreSQL blackholed, open connection", True,
                between=warm_then_blackhole),
            run("failed save, PostgreSQL blackholed, new connection", True,
                setup=gate.blackhole, between=close_records),
            run("successful save, database healthy", False),
            run("successful save, PostgreSQL blackholed, open connection", False,
                between=warm_then_blackhole),
        ]
        locker = sqlite3.connect(workdir / "records.sqlite3", isolation_level=None)
        with override_settings(STORAGE_GUARD={"LAST_RESORT_DIR": str(workdir / "spool"),
                                              "DATABASE_ALIAS": "sqlite_records"}):
            rows.append(run("failed save, SQLite healthy", True))
            locker.execute("BEGIN IMMEDIATE")
            rows.append(run("failed save, SQLite locked by another writer", True))
            locker.execute("ROLLBACK")
        proxy.stop()

    healthy = {"failed save": rows[0][1], "successful save": rows[4][1]}
    print(f"saves per row: {args.saves}; bound per save: {bound:.0f} s; spool: {workdir}/spool")
    print(f"{'scenario':<58} {'median s':>9} {'max s':>7} {'x healthy':>10}  within bound")
    worst = 0.0
    for label, median, longest in rows:
        base = rows[6][1] if "SQLite" in label else healthy[label.split(",")[0]]
        worst = max(worst, longest)
        print(f"{label:<58} {median:>9.3f} {longest:>7.3f} {median / base:>10.1f}  "
              f"{'yes' if longest <= bound + 0.5 else 'NO'}")
    spooled = len(list((workdir / "spool").glob("*.json")))
    print(f"spool entries written: {spooled}")
    return 0 if worst <= bound + 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
