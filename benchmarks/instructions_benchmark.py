"""Instructions per save: bare ``put_object``, plain S3Storage and GuardedS3Storage, by callgrind.

The wall clock of these shared 2-core machines moves by more than most changes do; the number
of instructions a save executes does not. Each arm runs in its own Python process under
``valgrind --tool=callgrind`` with instrumentation off; after a warm-up the process waits, the
counters are switched on and zeroed (``callgrind_control``), ``--saves`` saves are made (and the
record writer flushed), and the counters are dumped. The whole client process is counted, the
record writer's thread included; SeaweedFS and PostgreSQL are other processes and are not.

    .venv/bin/python benchmarks/instructions_benchmark.py [--db sqlite|postgres]
        [--size 2KB|1MB] [--saves 200] [--arms bare guarded plain bare-typed bare-direct]
        [--record-successes all|sample|none] [--log-level INFO|WARNING]

``bare-typed`` (not run unless named) is the bare arm with the ``Content-Type`` header that
every ``S3Storage`` save sends and the bare arm does not: what that header alone costs.
``bare-direct`` (not run unless named) is the bare arm without botocore's
``Expect: 100-continue`` handshake, which the guarded storage leaves out below
``EXPECT_CONTINUE_BYTES``: against it, the guarded save's cost is all its own.
``--record-successes`` and ``--log-level`` configure every arm's process as in
``storage_benchmark.py`` (only the guarded arm records and logs): what the success record and
the success line cost, in instructions.

Needs ``valgrind`` (Debian package ``valgrind``). A save is about 50 times slower under
valgrind, so the writer's batches hold one or two records and its per-batch costs weigh more
than in a real run; and OpenSSL hashes without the CPU's SHA instructions there, which inflates
every SHA-256 (botocore's signature hash in every arm included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {"2KB": 2 * 1024, "1MB": 1024 * 1024}
ARMS = ("bare", "guarded", "plain", "bare-typed", "bare-direct")


def child(args) -> None:
    """One arm, run under valgrind: warm up, wait for ``go``, save, flush, say ``done``."""
    import storage_benchmark  # on the path: main() put it there

    signals = Path(args.signals)
    storage_benchmark.configure_django(args.db, Path(tempfile.mkdtemp(prefix="sg-ir-")),
                                       "background", successes=args.record_successes,
                                       log_level=args.log_level)
    from django.core.files.base import ContentFile

    from storage_guard import conf
    from storage_guard.saving import success_records

    if args.arm == "bare-typed":  # bare, with the Content-Type header S3Storage sends
        arm = storage_benchmark.BarePut(args.endpoint, args.bucket, "application/octet-stream")
    elif args.arm == "bare-direct":  # bare, without the Expect: 100-continue handshake
        arm = storage_benchmark.BarePut(args.endpoint, args.bucket,
                                        expect_continue_bytes=conf.get("EXPECT_CONTINUE_BYTES"))
    else:
        arm = storage_benchmark.build_arms(args.endpoint, args.bucket)[args.arm]
    body = os.urandom(SIZES[args.size])

    def save(count: int, prefix: str) -> None:
        for number in range(count):
            name = f"{prefix}/{number}.bin"
            arm.save(name, body if args.arm.startswith("bare") else ContentFile(body))

    save(30, f"warmup/{uuid.uuid4().hex}")
    success_records.flush()
    (signals / "ready").touch()
    while not (signals / "go").exists():
        time.sleep(0.05)
    save(args.saves, f"counted/{uuid.uuid4().hex}")
    success_records.flush()
    (signals / "done").touch()
    while not (signals / "exit").exists():
        time.sleep(0.05)


def wait_for(path: Path, process: subprocess.Popen) -> None:
    while not path.exists():
        if process.poll() is not None:
            raise SystemExit(f"the arm's process ended early (exit {process.returncode})")
        time.sleep(0.2)


def count(arm: str, args, endpoint: str, bucket: str) -> float:
    """Instructions per save of ``arm``."""
    work = Path(tempfile.mkdtemp(prefix="sg-ir-run-"))
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "-q",
               f"--callgrind-out-file={work}/callgrind.%p", sys.executable, __file__, "--child",
               "--arm", arm, "--db", args.db, "--size", args.size, "--saves", str(args.saves),
               "--endpoint", endpoint, "--bucket", bucket, "--signals", str(work),
               "--record-successes", args.record_successes, "--log-level", args.log_level]
    with open(work / "output.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(work / "ready", process)
        control = ["callgrind_control"]
        subprocess.run([*control, "-i", "on", str(process.pid)], check=True, capture_output=True)
        subprocess.run([*control, "-z", str(process.pid)], check=True, capture_output=True)
        (work / "go").touch()
        wait_for(work / "done", process)
        subprocess.run([*control, "-d", str(process.pid)], check=True, capture_output=True)
        time.sleep(1)
        (work / "exit").touch()
        process.wait(timeout=120)
        total = 0
        for dump in work.glob(f"callgrind.{process.pid}.*"):  # the dumps made by -d
            for line in dump.read_text().splitlines():
                if line.startswith(("summary:", "totals:")):
                    total += int(line.split()[1])
                    break
        return total / args.saves
    finally:
        if process.poll() is None:
            process.kill()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import storage_benchmark

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--size", choices=list(SIZES), default="2KB")
    parser.add_argument("--saves", type=int, default=200)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS[:3]))
    storage_benchmark.add_recording_arguments(parser)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--arm", "--endpoint", "--bucket", "--signals"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        print("needs valgrind (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    from tests.testbed.seaweed import SeaweedServer

    with SeaweedServer(Path(tempfile.mkdtemp(prefix="sg-ir-s3-")) / "seaweed") as server:
        bucket = f"ir-{uuid.uuid4().hex[:12]}"
        server.create_bucket(bucket)
        results = {arm: count(arm, args, server.endpoint_url, bucket) for arm in args.arms}
    print(f"database: {args.db}; size: {args.size}; saves counted per arm: {args.saves}; "
          f"successes recorded: {args.record_successes}; logging: {args.log_level}")
    for arm, per_save in results.items():
        ratio = f"{per_save / results['bare']:.3f} x bare" if "bare" in results else ""
        print(f"{arm:>8} {per_save / 1e6:8.2f} M instructions per save  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
