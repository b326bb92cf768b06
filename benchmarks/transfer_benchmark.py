"""Transfers: stalled small saves, a throttled large upload, multipart under resets, speed.

Every arm runs against a local SeaweedFS server behind the fault proxy (both from
tests/testbed), in one process, so the figures of one run compare with each other:

* ``stall``: 2 KB saves whose first PUT stalls, default preset, against the same storage with
  a flat 10 s PUT timeout (what main had). Target: <= 3 s per save (today 10 s).
* ``throttle``: one 50 MB save through a proxy that reads request bodies at 1 MB/s, default
  preset. Target: it completes, with no timed-out request.
* ``resets``: 5 x 40 MB saves (5 MB parts) at 20 % and 30 % connection resets, plain
  ``S3Storage`` against ``GuardedS3Storage``: requests at the proxy, stored, stashed, and
  multipart uploads left unfinished. Targets: at 20 %, requests <= 1.3 x plain's and 0 stashed;
  at 30 %, at least as many stored as plain.
* ``speed``: 2 KB saves/s on the success path with payload-sized timeouts (a client per timeout
  class) against one flat timeout (the storage's own client, as before), interleaved reps.
  Target: ratio within noise (>= 0.95).

    .venv/bin/python benchmarks/transfer_benchmark.py [--arms stall,throttle,resets,speed]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KB, MB = 1024, 1024 * 1024


def configure_django(workdir: Path) -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "storage_guard"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                               "NAME": str(workdir / "bench.sqlite3"),
                               "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; "
                                                           "PRAGMA synchronous=NORMAL;"}}},
        USE_TZ=True,
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        STORAGE_GUARD={"STASH_DB_MAX_BYTES": 64 * MB},
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", "storage_guard", verbosity=0)


class Bench:
    def __init__(self, server, proxy):
        self.server, self.proxy = server, proxy
        self.s3 = server.client()

    def bucket(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        self.server.create_bucket(name)
        return name

    def common(self, bucket: str) -> dict:
        return {"endpoint_url": self.proxy.endpoint_url, "bucket_name": bucket,
                "access_key": "bench", "secret_key": "bench", "region_name": "us-east-1",
                "file_overwrite": True}

    def guarded(self, bucket: str, **options):
        from storage_guard.storage import GuardedS3Storage

        return GuardedS3Storage(alias="bench", breaker_threshold=0,
                                **{**self.common(bucket), **options})

    def plain(self, bucket: str, **options):
        from storages.backends.s3 import S3Storage

        return S3Storage(**{**self.common(bucket), **options})

    def unfinished(self, bucket: str) -> int:
        return len(self.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def timed_save(storage, name: str, body: bytes):
    from django.core.files.base import ContentFile

    started = time.monotonic()
    try:
        storage.save(name, ContentFile(body))
        ok = True
    except Exception:  # noqa: BLE001 - a failed save is a measured outcome
        ok = False
    return ok, time.monotonic() - started


def arm_stall(bench: Bench, saves: int = 5) -> bool:
    bucket = bench.bucket()
    arms = {"default preset": bench.guarded(bucket),
            "flat, 12 s class": bench.guarded(bucket, put_timeout_floor=10.0,
                                              put_timeout_rate=10**12, retry_deadline=30.0)}
    print("stall: 2 KB saves whose first PUT stalls")
    met = True
    for label, storage in arms.items():
        timed_save(storage, f"warm/{uuid.uuid4().hex}", b"w")  # build the clients first
        durations = []
        for n in range(saves):
            bench.proxy.clear()
            bench.proxy.configure(methods={"PUT"}, stall_seconds=60)
            bench.proxy.script(["stall"])
            ok, seconds = timed_save(storage, f"stall/{label}/{n}", os.urandom(2 * KB))
            durations.append(seconds if ok else float("inf"))
        print(f"  {label:<18} median {statistics.median(durations):6.2f} s, "
              f"max {max(durations):6.2f} s")
        if label == "default preset":
            met = max(durations) <= 3.0
    bench.proxy.clear()
    print(f"  target <= 3 s: {'met' if met else 'MISSED'}")
    return met


def arm_throttle(bench: Bench, size: int = 50 * MB, rate: int = 1 * MB) -> bool:
    bucket = bench.bucket()
    storage = bench.guarded(bucket)
    bench.proxy.clear()
    bench.proxy.reset_counters()
    bench.proxy.throttle(rate)
    ok, seconds = timed_save(storage, "throttle/big.bin", os.urandom(size))
    bench.proxy.clear()
    from storage_guard.models import SaveAttempt

    record = SaveAttempt.objects.filter(bucket=bucket).get()
    timeouts = [e["code"] for e in record.attempt_log if "Timeout" in e["code"]]
    met = ok and not timeouts
    print(f"throttle: {size // MB} MB at {rate // KB} KB/s: {'stored' if ok else 'FAILED'} in "
          f"{seconds:.1f} s, {bench.proxy.counts['requests']} requests, {len(timeouts)} "
          f"timed out; target completes without a timeout: {'met' if met else 'MISSED'}")
    return met


def arm_resets(bench: Bench, saves: int = 5, size: int = 40 * MB) -> bool:
    from boto3.s3.transfer import TransferConfig

    from storage_guard.models import SaveAttempt, Status

    transfer = TransferConfig(multipart_threshold=5 * MB, multipart_chunksize=5 * MB)
    payloads = [os.urandom(size) for _ in range(saves)]
    met = True
    for rate in (0.2, 0.3):
        results = {}
        for label in ("plain", "guarded"):
            bucket = bench.bucket()
            storage = (bench.plain(bucket, transfer_config=transfer) if label == "plain"
                       else bench.guarded(bucket, transfer_config=transfer, max_attempts=5))
            bench.proxy.clear()
            bench.proxy.reset_counters()
            bench.proxy.configure(reset=rate, seed=11)
            stored = sum(timed_save(storage, f"resets/{n}.bin", body)[0]
                         for n, body in enumerate(payloads))
            bench.proxy.clear()
            stashed = SaveAttempt.objects.filter(bucket=bucket).exclude(
                status=Status.SUCCEEDED).count()
            results[label] = (bench.proxy.counts["requests"], stored, stashed,
                              bench.unfinished(bucket))
        (p_req, p_ok, _, p_left), (g_req, g_ok, g_stash, g_left) = results["plain"], \
            results["guarded"]
        ratio = g_req / p_req
        if rate == 0.2:
            ok = ratio <= 1.3 and g_stash == 0
        else:
            ok = g_ok >= p_ok
        met &= ok
        print(f"resets {rate:.0%}: plain {p_req} requests, {p_ok}/{saves} stored, {p_left} "
              f"unfinished uploads; guarded {g_req} requests ({ratio:.2f}x), {g_ok}/{saves} "
              f"stored, {g_stash} stashed, {g_left} unfinished; {'met' if ok else 'MISSED'}")
    return met


def arm_speed(bench: Bench, reps: int = 9, saves: int = 200) -> bool:
    bucket = bench.bucket()
    bench.proxy.clear()
    arms = {"payload-sized": bench.guarded(bucket, read_timeout=5.0),
            "flat": bench.guarded(bucket, read_timeout=2.0, put_timeout_floor=2.0,
                                  put_timeout_rate=10**12)}
    body = os.urandom(2 * KB)
    rates = {label: [] for label in arms}
    ratios = []
    for label, storage in arms.items():
        for n in range(5):
            timed_save(storage, f"warm/{label}/{n}", body)
    for rep in range(reps):  # each rep: blocks of 10 saves, the arms taking turns
        spent = dict.fromkeys(arms, 0.0)
        for block in range(saves // 10):
            for label in (list(arms) if block % 2 == 0 else list(reversed(arms))):
                started = time.perf_counter()
                for n in range(10):
                    timed_save(arms[label], f"speed/{label}/{rep}/{block}/{n}", body)
                spent[label] += time.perf_counter() - started
        for label in arms:
            rates[label].append(saves / spent[label])
        ratios.append(spent["flat"] / spent["payload-sized"])
    ratio = statistics.median(ratios)
    met = ratio >= 0.95
    print(f"speed: 2 KB saves/s payload-sized {statistics.median(rates['payload-sized']):.1f}, "
          f"flat {statistics.median(rates['flat']):.1f}; ratio {ratio:.3f} "
          f"({min(ratios):.3f}-{max(ratios):.3f}); target >= 0.95: {'met' if met else 'MISSED'}")
    return met


ARMS = {"stall": arm_stall, "throttle": arm_throttle, "resets": arm_resets, "speed": arm_speed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default=",".join(ARMS))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="storage-guard-transfer-bench-"))
    configure_django(workdir)

    from tests.testbed.faultproxy import FaultProxy
    from tests.testbed.seaweed import SeaweedServer

    with SeaweedServer(workdir / "seaweed") as server, \
            FaultProxy(server.host, server.port, seed=0) as proxy:
        bench = Bench(server, proxy)
        results = [ARMS[name](bench) for name in args.arms.split(",")]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
