"""Time targets that used to be wall-clock assertions in tests, measured here instead.

The tests now assert what cannot flake (requests counted at the fault proxy, attempts, statuses);
the times live in this script, on a real SeaweedFS behind the fault proxy:

* **fail fast**: with the circuit open a save fails without a request; target: the median
  circuit-open failure costs at most 0.5x a healthy 2 KB save measured in the same run (a ratio,
  as docs/benchmarks.md asks on these shared machines); the slowest is printed next to the
  issue's 100 ms figure (tests/test_breaker.py, tests/test_scenarios.py).
* **stalls never hang**: with 5 % of PUTs stalled for 30 s, read_timeout 1 s and a 4 s deadline,
  the slowest save ends within deadline + 1 s (tests/test_scenarios.py).

    .venv/bin/python benchmarks/fail_fast_benchmark.py [--saves 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FAST_RATIO_TARGET = 0.5
FAST_MAX_SECONDS = 0.1
STALL_DEADLINE = 4.0


def configure_django(workdir: Path) -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "storage_guard"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                               "NAME": str(workdir / "bench.sqlite3")}},
        USE_TZ=True,
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        STORAGE_GUARD={"BACKOFF_BASE": 0.01, "BACKOFF_CAP": 0.05},
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", "storage_guard", verbosity=0)


def timed_saves(storage, n: int, prefix: str) -> list[float]:
    """Seconds per save, failed saves included."""
    from django.core.files.base import ContentFile

    from storage_guard.errors import SaveFailed

    durations = []
    for i in range(n):
        started = time.perf_counter()
        try:
            storage.save(f"{prefix}/{i}.bin", ContentFile(b"x" * 2048))
        except SaveFailed:
            pass
        durations.append(time.perf_counter() - started)
    return durations


def fail_fast(build, proxy, n: int) -> bool:
    healthy = timed_saves(build(), n, "healthy")
    storage = build(max_attempts=1, breaker_threshold=3, breaker_cooldown=600)
    with proxy.outage_window("reset"):
        timed_saves(storage, 3, "opening")
        assert storage.breaker.state() == "open"
        sent = proxy.counts["requests"]
        open_failures = timed_saves(storage, n, "open")
        assert proxy.counts["requests"] == sent, "an open circuit sent requests"
    ratio = statistics.median(open_failures) / statistics.median(healthy)
    ok = ratio <= FAST_RATIO_TARGET
    print(f"fail fast: healthy save median {statistics.median(healthy) * 1000:.1f} ms; "
          f"circuit-open failure median {statistics.median(open_failures) * 1000:.2f} ms, "
          f"max {max(open_failures) * 1000:.2f} ms; ratio {ratio:.3f} "
          f"(target <= {FAST_RATIO_TARGET}; issue's figure for the max: "
          f"{FAST_MAX_SECONDS * 1000:.0f} ms): "
          f"{'met' if ok else 'MISSED'}")
    return ok


def stalls_never_hang(build, proxy, n: int) -> bool:
    storage = build(read_timeout=1, retry_deadline=STALL_DEADLINE, max_attempts=5,
                    breaker_threshold=0)
    proxy.configure(stall=0.05, methods={"PUT"}, seed=5, stall_seconds=30)
    try:
        durations = timed_saves(storage, n, "stalls")
    finally:
        proxy.clear()
    ok = max(durations) < STALL_DEADLINE + 1.0
    print(f"stalls: {proxy.counts['stall']} stalled PUTs in {n} saves; slowest save "
          f"{max(durations):.2f} s (target < {STALL_DEADLINE + 1.0:.1f} s): "
          f"{'met' if ok else 'MISSED'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=50)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="storage-guard-bench-"))
    configure_django(workdir)

    from storage_guard.storage import GuardedS3Storage
    from tests.testbed.faultproxy import FaultProxy
    from tests.testbed.seaweed import SeaweedServer

    with SeaweedServer(workdir / "seaweed") as server:
        proxy = FaultProxy(server.host, server.port, seed=0)
        proxy.start()
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        server.create_bucket(bucket)

        def build(**options):
            return GuardedS3Storage(
                bucket_name=bucket, endpoint_url=proxy.endpoint_url, access_key="bench",
                secret_key="bench", region_name="us-east-1", alias=f"b{uuid.uuid4().hex[:6]}",
                file_overwrite=True, **options)

        try:
            results = [fail_fast(build, proxy, args.saves),
                       stalls_never_hang(build, proxy, args.saves)]
        finally:
            proxy.stop()
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
