"""The admin's attention-first first page over 1,000,000 SaveAttempt rows on PostgreSQL.

Usage (from the repository root, PostgreSQL on 127.0.0.1:5432 with trust auth)::

    .venv/bin/python benchmarks/admin_order_benchmark.py [--rows 1000000] [--refill] [--runs 5]

Same database and rows as ``report_benchmark.py`` (``$STORAGE_GUARD_BENCH_DB``). Times the
changelist's first page (50 rows ordered by ``ATTENTION, -created_at, -pk``, served by the
``sg_attention_created`` expression index) against the same order computed by an expression the
index does not match (``ATTENTION + 0``: a full scan and sort), in the same run, and reports the
ratio. The target: the indexed first page is at least 10 times faster.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_benchmark import prepare  # after the path is set

TARGET_RATIO = 10.0


def median_ms(queryset, runs: int) -> float:
    timings = []
    for run in range(runs + 1):  # the first run warms the caches and is not counted
        started = time.perf_counter()
        list(queryset[:50])
        if run:
            timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def main() -> int:
    args = prepare(__doc__.splitlines()[0], runs=5)
    from django.db.models import Value

    from storage_guard.models import ATTENTION, SaveAttempt

    rows = SaveAttempt.objects.all()
    indexed = median_ms(rows.order_by(ATTENTION.asc(), "-created_at", "-pk"), args.runs)
    sorted_ = median_ms(rows.order_by((ATTENTION + Value(0)).asc(), "-created_at", "-pk"),
                        args.runs)
    ratio = sorted_ / indexed
    print(f"first page, attention order, {args.rows:,} rows: index {indexed:.1f} ms, "
          f"scan and sort {sorted_:.1f} ms, ratio {ratio:.0f}x "
          f"(target >= {TARGET_RATIO:.0f}x) -> {'OK' if ratio >= TARGET_RATIO else 'SLOW'}")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
