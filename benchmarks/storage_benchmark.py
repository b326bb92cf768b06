"""Success-path saves per second: GuardedS3Storage against plain S3Storage, in the same run.

Both talk straight to a local SeaweedFS server (started here, no fault proxy). The machines
this runs on are shared and noisy, so the two backends are interleaved rep by rep (the order
alternating), and the result is the median of the per-rep ratios with their spread.

    .venv/bin/python benchmarks/storage_benchmark.py [--reps 9] [--saves 150] [--db sqlite|postgres]

Recording is on (one INSERT per guarded save) and the ``storage_guard`` logger writes every
INFO line to a file, as the issue asks.
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
TARGETS = {"2KB": 1.0, "1MB": 0.97}


def configure_django(db: str, workdir: Path) -> None:
    import django
    from django.conf import settings

    if db == "postgres":
        database = {"ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1",
                    "PORT": "5432", "NAME": "test", "USER": "postgres"}
    else:
        database = {"ENGINE": "django.db.backends.sqlite3",
                    "NAME": str(workdir / "bench.sqlite3"),
                    "OPTIONS": {"init_command":
                                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}}
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "storage_guard"],
        DATABASES={"default": database},
        USE_TZ=True,
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        STORAGE_GUARD={"INDEPENDENT_CONNECTION": db == "postgres"},
        LOGGING={"version": 1, "disable_existing_loggers": False,
                 "handlers": {"file": {"class": "logging.FileHandler",
                                       "filename": str(workdir / "storage_guard.log")}},
                 "loggers": {"storage_guard": {"level": "INFO", "handlers": ["file"],
                                               "propagate": False}}},
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", "storage_guard", verbosity=0)


def build_storages(endpoint: str, bucket: str):
    from storages.backends.s3 import S3Storage

    from storage_guard.storage import GuardedS3Storage

    common = {"endpoint_url": endpoint, "bucket_name": bucket, "access_key": "bench",
              "secret_key": "bench", "region_name": "us-east-1"}
    return {"plain": S3Storage(**common), "guarded": GuardedS3Storage(alias="bench", **common)}


def saves_per_second(storage, body: bytes, n: int, prefix: str) -> float:
    from django.core.files.base import ContentFile

    started = time.perf_counter()
    for i in range(n):
        storage.save(f"{prefix}/{i}.bin", ContentFile(body))
    return n / (time.perf_counter() - started)


def run(storages_by_name, size_label: str, reps: int, saves: int) -> dict:
    body = os.urandom(SIZES[size_label])
    n = saves if size_label == "2KB" else max(saves // 5, 10)
    for storage in storages_by_name.values():  # warm up connections and code paths
        saves_per_second(storage, body, 5, f"warmup/{uuid.uuid4().hex}")
    ratios, rates = [], {"plain": [], "guarded": []}
    for rep in range(reps):
        order = ["plain", "guarded"] if rep % 2 == 0 else ["guarded", "plain"]
        measured = {}
        for name in order:
            measured[name] = saves_per_second(storages_by_name[name], body, n,
                                              f"{size_label}/{name}/{rep}")
            rates[name].append(measured[name])
        ratios.append(measured["guarded"] / measured["plain"])
    return {
        "size": size_label, "saves_per_rep": n, "reps": reps,
        "plain_median": statistics.median(rates["plain"]),
        "guarded_median": statistics.median(rates["guarded"]),
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
        "ratio_max": max(ratios), "target": TARGETS[size_label],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--saves", type=int, default=150)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="storage-guard-bench-"))
    configure_django(args.db, workdir)
    logging.getLogger("storage_guard").info("benchmark started")

    from tests.testbed.seaweed import SeaweedServer

    with SeaweedServer(workdir / "seaweed") as server:
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        server.create_bucket(bucket)
        backends = build_storages(server.endpoint_url, bucket)
        print(f"database: {args.db}; logging: INFO to a file; reps interleaved: {args.reps}")
        print(f"{'size':>5} {'plain/s':>9} {'guarded/s':>10} {'ratio':>7} {'spread':>15} "
              f"{'target':>7}  verdict")
        failed = False
        for size_label in SIZES:
            r = run(backends, size_label, args.reps, args.saves)
            ok = r["ratio_median"] >= r["target"]
            failed |= not ok
            print(f"{size_label:>5} {r['plain_median']:>9.1f} {r['guarded_median']:>10.1f} "
                  f"{r['ratio_median']:>7.3f} {r['ratio_min']:>7.3f}-{r['ratio_max']:<7.3f} "
                  f">={r['target']:<5} {'met' if ok else 'MISSED'}")
        from storage_guard.models import SaveAttempt

        print(f"records written: {SaveAttempt.objects.count()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
