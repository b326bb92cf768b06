"""Success-path saves per second: bare ``put_object``, plain S3Storage and GuardedS3Storage.

All three talk straight to a local SeaweedFS server (started here, no fault proxy) and send the
same bytes. The bare arm is the physical limit: one boto3 ``put_object`` per save, no Django.
The machines this runs on are shared and noisy, so the arms are interleaved rep by rep (the
order rotating), and the results are the medians of the per-rep ratios against the bare arm in
the same rep, with their spread.

    .venv/bin/python benchmarks/storage_benchmark.py [--reps 9] [--saves 150]
        [--db sqlite|postgres] [--writer background|inline]

Recording is on (a SaveAttempt row per guarded save, written by the background writer unless
``--writer inline``, and flushed before each guarded rep's clock stops) and the
``storage_guard`` logger writes every INFO line to a file, as the issue asks. SQLite runs
with Django's default settings (rollback journal, full sync); PostgreSQL uses ``$PGDATABASE``
(default ``sg_perf``) with records on their own connection, as deployed.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {"2KB": 2 * 1024, "1MB": 1024 * 1024}
# Guarded saves/s as a fraction of bare put_object saves/s (issue 14).
TARGETS = {("postgres", "2KB"): 0.9, ("postgres", "1MB"): 0.95, ("sqlite", "2KB"): 0.8}
ARMS = ("bare", "plain", "guarded")


def configure_django(db: str, workdir: Path, writer: str) -> None:
    import django
    from django.conf import settings

    if db == "postgres":
        database = {"ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1",
                    "PORT": "5432", "NAME": os.environ.get("PGDATABASE", "sg_perf"),
                    "USER": "postgres"}
    else:  # Django's defaults: no journal or sync pragmas
        database = {"ENGINE": "django.db.backends.sqlite3",
                    "NAME": str(workdir / "bench.sqlite3")}
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "storage_guard"],
        DATABASES={"default": database},
        USE_TZ=True,
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        STORAGE_GUARD={"INDEPENDENT_CONNECTION": db == "postgres", "RECORD_WRITER": writer},
        LOGGING={"version": 1, "disable_existing_loggers": False,
                 "handlers": {"file": {"class": "logging.FileHandler",
                                       "filename": str(workdir / "storage_guard.log")}},
                 "loggers": {"storage_guard": {"level": "INFO", "handlers": ["file"],
                                               "propagate": False}}},
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", "storage_guard", verbosity=0)


class BarePut:
    """The physical limit: boto3's ``put_object`` of the same bytes, no Django."""

    def __init__(self, endpoint: str, bucket: str):
        import boto3

        self.bucket = bucket
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, aws_access_key_id="bench",
            aws_secret_access_key="bench", region_name="us-east-1")  # a local server

    def save(self, name: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=name, Body=body)


def build_arms(endpoint: str, bucket: str) -> dict:
    from storages.backends.s3 import S3Storage

    from storage_guard.storage import GuardedS3Storage

    common = {"endpoint_url": endpoint, "bucket_name": bucket, "access_key": "bench",
              "secret_key": "bench", "region_name": "us-east-1"}
    return {"bare": BarePut(endpoint, bucket), "plain": S3Storage(**common),
            "guarded": GuardedS3Storage(alias="bench", **common)}


def saves_per_second(arm, body: bytes, n: int, prefix: str) -> float:
    from django.core.files.base import ContentFile

    from storage_guard.saving import success_records

    started = time.perf_counter()
    if isinstance(arm, BarePut):
        for i in range(n):
            arm.save(f"{prefix}/{i}.bin", body)
    else:
        for i in range(n):
            arm.save(f"{prefix}/{i}.bin", ContentFile(body))
        # The guarded arm's time includes writing the success records it queued: none of the
        # background writer's work lands in the next arm's time.
        success_records.flush()
    return n / (time.perf_counter() - started)


def run(arms: dict, db: str, size_label: str, reps: int, saves: int) -> dict:
    body = os.urandom(SIZES[size_label])
    n = saves if size_label == "2KB" else max(saves // 5, 10)
    for arm in arms.values():  # warm up connections and code paths
        saves_per_second(arm, body, 5, f"warmup/{uuid.uuid4().hex}")
    rates = {name: [] for name in ARMS}
    ratios = {name: [] for name in ARMS[1:]}
    for rep in range(reps):
        order = ARMS[rep % 3:] + ARMS[:rep % 3]
        measured = {name: saves_per_second(arms[name], body, n, f"{size_label}/{name}/{rep}")
                    for name in order}
        for name in ARMS:
            rates[name].append(measured[name])
        for name in ratios:
            ratios[name].append(measured[name] / measured["bare"])
    return {
        "size": size_label, "saves_per_rep": n, "reps": reps,
        **{f"{name}_median": statistics.median(rates[name]) for name in ARMS},
        "plain_ratio": statistics.median(ratios["plain"]),
        "ratio_median": statistics.median(ratios["guarded"]),
        "ratio_min": min(ratios["guarded"]), "ratio_max": max(ratios["guarded"]),
        "target": TARGETS.get((db, size_label)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--saves", type=int, default=150)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--writer", choices=["background", "inline"], default="background")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="storage-guard-bench-"))
    configure_django(args.db, workdir, args.writer)
    logging.getLogger("storage_guard").info("benchmark started")

    from tests.testbed.seaweed import SeaweedServer

    with SeaweedServer(workdir / "seaweed") as server:
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        server.create_bucket(bucket)
        arms = build_arms(server.endpoint_url, bucket)
        print(f"database: {args.db}; record writer: {args.writer}; logging: INFO to a file; "
              f"reps interleaved: {args.reps}; load average: {os.getloadavg()[0]:.1f}")
        print(f"{'size':>5} {'bare/s':>8} {'plain/s':>8} {'guarded/s':>9} {'plain/bare':>10} "
              f"{'guarded/bare':>12} {'spread':>13} {'target':>7}  verdict")
        failed = False
        for size_label in args.sizes:
            r = run(arms, args.db, size_label, args.reps, args.saves)
            target = r["target"]
            ok = target is None or r["ratio_median"] >= target
            failed |= not ok
            verdict = "-" if target is None else ("met" if ok else "MISSED")
            print(f"{size_label:>5} {r['bare_median']:>8.1f} {r['plain_median']:>8.1f} "
                  f"{r['guarded_median']:>9.1f} {r['plain_ratio']:>10.3f} "
                  f"{r['ratio_median']:>12.3f} {r['ratio_min']:>6.3f}-{r['ratio_max']:<6.3f} "
                  f"{'>=' + str(target) if target else '':>7}  {verdict}", flush=True)
        from storage_guard.models import SaveAttempt
        from storage_guard.saving import records

        records.flush()
        print(f"records written: {SaveAttempt.objects.filter(storage_alias='bench').count()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
