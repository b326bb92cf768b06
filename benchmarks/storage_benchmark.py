"""Success-path saves per second: bare ``put_object``, plain S3Storage and GuardedS3Storage.

All three talk straight to a local SeaweedFS server (started here, no fault proxy) and send the
same bytes. The bare arm is the physical limit: one boto3 ``put_object`` per save, no Django.
The machines this runs on are shared and noisy, so the arms are interleaved rep by rep (the
order rotating), and the results are the medians of the per-rep ratios against the bare arm in
the same rep, with their spread.

    .venv/bin/python benchmarks/storage_benchmark.py [--reps 9] [--saves 150]
        [--db sqlite|postgres] [--writer background|inline] [--cpu]
        [--record-successes all|sample|none] [--log-level INFO|WARNING]

Recording is on (a SaveAttempt row per guarded save, written by the background writer unless
``--writer inline``, and flushed before each guarded rep's clock stops) and the
``storage_guard`` logger writes every INFO line to a file, as the issue asks. SQLite runs
with Django's default settings (rollback journal, full sync); PostgreSQL uses ``$PGDATABASE``
(default ``sg_perf``) with records on their own connection, as deployed.

``--cpu`` also prints, per arm, the wall time and the CPU time of the thread that saves (the
request's thread: the record writer's and the servers' CPU are not in it), per save, and the
guarded arm's excess over bare in both: where the gap to the physical limit comes from.
``--record-successes`` and ``--log-level`` change the guarded arm's configuration to show what
recording and the success line cost; the targets apply only to the defaults (``all``,
``INFO``), and a run with anything else prints no verdict.
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


def configure_django(db: str, workdir: Path, writer: str, *, successes: str = "all",
                     log_level: str = "INFO") -> None:
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
        STORAGE_GUARD={"INDEPENDENT_CONNECTION": db == "postgres", "RECORD_WRITER": writer,
                       "RECORD_SUCCESSES": successes},
        LOGGING={"version": 1, "disable_existing_loggers": False,
                 "handlers": {"file": {"class": "logging.FileHandler",
                                       "filename": str(workdir / "storage_guard.log")}},
                 "loggers": {"storage_guard": {"level": log_level, "handlers": ["file"],
                                               "propagate": False}}},
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", "storage_guard", verbosity=0)


class BarePut:
    """The physical limit: boto3's ``put_object`` of the same bytes, no Django."""

    def __init__(self, endpoint: str, bucket: str, content_type: str | None = None,
                 expect_continue_bytes: int = 0):
        import boto3

        from storage_guard.saving import expect_continue

        self.bucket = bucket
        # None: no Content-Type header, as the issue's bare arm; a type: the header every
        # S3Storage save sends (instructions_benchmark.py's "bare-typed" arm)
        self.extra = {"ContentType": content_type} if content_type else {}
        session = boto3.session.Session()
        # 0: botocore's Expect: 100-continue on every body, as the issue's bare arm; more: the
        # guarded storage's threshold (instructions_benchmark.py's "bare-direct" arm)
        expect_continue.watch(session, expect_continue_bytes)
        self.client = session.client(
            "s3", endpoint_url=endpoint, aws_access_key_id="bench",
            aws_secret_access_key="bench", region_name="us-east-1")  # a local server

    def save(self, name: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=name, Body=body, **self.extra)


def build_arms(endpoint: str, bucket: str) -> dict:
    from storages.backends.s3 import S3Storage

    from storage_guard.storage import GuardedS3Storage

    common = {"endpoint_url": endpoint, "bucket_name": bucket, "access_key": "bench",
              "secret_key": "bench", "region_name": "us-east-1"}
    return {"bare": BarePut(endpoint, bucket), "plain": S3Storage(**common),
            "guarded": GuardedS3Storage(alias="bench", **common)}


def timed_saves(arm, body: bytes, n: int, prefix: str) -> tuple[float, float]:
    """Saves per second, and the saving thread's CPU seconds per save."""
    from django.core.files.base import ContentFile

    from storage_guard.saving import success_records

    started, cpu_started = time.perf_counter(), time.thread_time()
    if isinstance(arm, BarePut):
        for i in range(n):
            arm.save(f"{prefix}/{i}.bin", body)
    else:
        for i in range(n):
            arm.save(f"{prefix}/{i}.bin", ContentFile(body))
        # The guarded arm's time includes writing the success records it queued: none of the
        # background writer's work lands in the next arm's time.
        success_records.flush()
    return n / (time.perf_counter() - started), (time.thread_time() - cpu_started) / n


def run(arms: dict, db: str, size_label: str, reps: int, saves: int) -> dict:
    body = os.urandom(SIZES[size_label])
    n = saves if size_label == "2KB" else max(saves // 5, 10)
    for arm in arms.values():  # warm up connections and code paths
        timed_saves(arm, body, 5, f"warmup/{uuid.uuid4().hex}")
    rates = {name: [] for name in ARMS}
    cpu = {name: [] for name in ARMS}
    ratios = {name: [] for name in ARMS[1:]}
    excess = {"wall": [], "cpu": []}  # guarded minus bare, per save, within each rep
    for rep in range(reps):
        order = ARMS[rep % 3:] + ARMS[:rep % 3]
        measured = {name: timed_saves(arms[name], body, n, f"{size_label}/{name}/{rep}")
                    for name in order}
        for name in ARMS:
            rates[name].append(measured[name][0])
            cpu[name].append(measured[name][1])
        for name in ratios:
            ratios[name].append(measured[name][0] / measured["bare"][0])
        excess["wall"].append(1 / measured["guarded"][0] - 1 / measured["bare"][0])
        excess["cpu"].append(measured["guarded"][1] - measured["bare"][1])
    return {
        "size": size_label, "saves_per_rep": n, "reps": reps,
        **{f"{name}_median": statistics.median(rates[name]) for name in ARMS},
        **{f"{name}_cpu": statistics.median(cpu[name]) for name in ARMS},
        "excess_wall": statistics.median(excess["wall"]),
        "excess_cpu": statistics.median(excess["cpu"]),
        "plain_ratio": statistics.median(ratios["plain"]),
        "ratio_median": statistics.median(ratios["guarded"]),
        "ratio_min": min(ratios["guarded"]), "ratio_max": max(ratios["guarded"]),
        "target": TARGETS.get((db, size_label)),
    }


def print_cpu(r: dict) -> None:
    """Per save: each arm's wall time and saving-thread CPU, and the guarded arm's excess."""
    walls = {name: 1e6 / r[f"{name}_median"] for name in ARMS}
    print("       " + "  ".join(f"{name}: {walls[name]:.0f} us wall, "
                                 f"{r[f'{name}_cpu'] * 1e6:.0f} us CPU" for name in ARMS))
    print(f"       guarded - bare, per save (median of the reps): "
          f"{r['excess_wall'] * 1e6:.0f} us wall, {r['excess_cpu'] * 1e6:.0f} us CPU of the "
          "saving thread", flush=True)


def add_recording_arguments(parser: argparse.ArgumentParser) -> None:
    """``--record-successes`` and ``--log-level``: the guarded arm's recording and logging."""
    from storage_guard.options import CHOICES

    parser.add_argument("--record-successes", choices=CHOICES["record_successes"],
                        default="all", help="RECORD_SUCCESSES for the guarded arm")
    parser.add_argument("--log-level", choices=["INFO", "WARNING"], default="INFO",
                        help="the storage_guard logger's level (INFO: a line per save)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--saves", type=int, default=150)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--writer", choices=["background", "inline"], default="background")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--cpu", action="store_true",
                        help="also print wall and saving-thread CPU time per save, per arm")
    add_recording_arguments(parser)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="storage-guard-bench-"))
    configure_django(args.db, workdir, args.writer, successes=args.record_successes,
                     log_level=args.log_level)
    as_issue_asks = args.record_successes == "all" and args.log_level == "INFO"
    logging.getLogger("storage_guard").info("benchmark started")

    from tests.testbed.seaweed import SeaweedServer

    with SeaweedServer(workdir / "seaweed") as server:
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        server.create_bucket(bucket)
        arms = build_arms(server.endpoint_url, bucket)
        print(f"database: {args.db}; record writer: {args.writer}; successes recorded: "
              f"{args.record_successes}; logging: {args.log_level} to a file; "
              f"reps interleaved: {args.reps}; load average: {os.getloadavg()[0]:.1f}")
        print(f"{'size':>5} {'bare/s':>8} {'plain/s':>8} {'guarded/s':>9} {'plain/bare':>10} "
              f"{'guarded/bare':>12} {'spread':>13} {'target':>7}  verdict")
        failed = False
        for size_label in args.sizes:
            r = run(arms, args.db, size_label, args.reps, args.saves)
            target = r["target"] if as_issue_asks else None
            ok = target is None or r["ratio_median"] >= target
            failed |= not ok
            verdict = "-" if target is None else ("met" if ok else "MISSED")
            print(f"{size_label:>5} {r['bare_median']:>8.1f} {r['plain_median']:>8.1f} "
                  f"{r['guarded_median']:>9.1f} {r['plain_ratio']:>10.3f} "
                  f"{r['ratio_median']:>12.3f} {r['ratio_min']:>6.3f}-{r['ratio_max']:<6.3f} "
                  f"{'>=' + str(target) if target else '':>7}  {verdict}", flush=True)
            if args.cpu:
                print_cpu(r)
        from storage_guard.models import SaveAttempt
        from storage_guard.saving import records

        records.flush()
        print(f"records written: {SaveAttempt.objects.filter(storage_alias='bench').count()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
