"""A fleet: several retry workers on one PostgreSQL, one breaker state in one Redis.

The workers are real ``manage.py retry_failed_saves`` processes (``python -m django``) on the
pytest-django test database, sending through the session's fault proxy to SeaweedFS; the proxy's
log is the witness of how often each key was PUT.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from botocore.exceptions import ClientError
from django.conf import settings
from django.db import connection
from django.test import override_settings

from storage_guard.errors import CircuitOpen
from storage_guard.models import SaveAttempt, StashedPayload, Status
from tests.test_replay import read_default, stash_failed_saves

ROOT = Path(__file__).resolve().parents[1]
REDIS = settings.REDIS_URL
COOLDOWN = 30.0
on_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="runs in the PostgreSQL pass of .ci/run")


def subprocess_env(fault_proxy, **extra) -> dict:
    overrides = {**settings.STORAGE_GUARD, "INDEPENDENT_CONNECTION": True}
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings_tasks",
            "STORAGE_GUARD_TEST_DB_NAME": connection.settings_dict["NAME"],
            "STORAGE_GUARD_TEST_ENDPOINT": fault_proxy.endpoint_url,
            "STORAGE_GUARD_TEST_OVERRIDES": json.dumps(overrides),
            "PYTHONPATH": str(ROOT), **extra}


@pytest.mark.postgres
@pytest.mark.slow
@on_postgres
@pytest.mark.django_db(transaction=True)
def test_four_workers_drain_1000_saves_each_delivered_exactly_once(fault_proxy, s3, tmp_path):
    started = time.monotonic()
    saved = stash_failed_saves(fault_proxy, 1000, size=256)
    stashing_s = time.monotonic() - started
    assert SaveAttempt.objects.filter(status=Status.FAILED).count() == 1000
    fault_proxy.reset_counters()

    started = time.monotonic()
    workers = [subprocess.Popen(
        [sys.executable, "-m", "django", "retry_failed_saves", "--json"], cwd=ROOT,
        env=subprocess_env(fault_proxy), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for _ in range(4)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    draining_s = time.monotonic() - started

    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    reports = [json.loads(out) for out, _err in outputs]
    delivered_by = collections.Counter()
    for report in reports:
        assert report["failed"] == 0
        delivered_by.update(i["record_id"] for i in report["items"] if i["outcome"] == "delivered")
    assert sum(r["delivered"] for r in reports) == 1000
    assert set(delivered_by) == {record_id for record_id, _k, _p in saved}
    assert max(delivered_by.values()) == 1  # no record delivered by two workers
    assert all(r["delivered"] > 0 for r in reports), [r["delivered"] for r in reports]

    puts = collections.Counter(unquote(path.split("?")[0]).split("/", 2)[2]
                               for method, path, action in fault_proxy.log
                               if method == "PUT" and action == "pass")
    keys = {key for _id, key, _payload in saved}
    assert set(puts) == keys
    assert set(puts.values()) == {1}, puts.most_common(3)  # each key PUT exactly once
    for _record_id, key, payload in saved:
        assert read_default(s3, key) == payload
    assert SaveAttempt.objects.filter(status=Status.RECOVERED).count() == 1000
    assert not StashedPayload.objects.exists()
    print(f"\nstashed 1000 saves in {stashing_s:.1f}s; 4 workers drained them in "
          f"{draining_s:.1f}s; per worker: {[r['delivered'] for r in reports]}")


@pytest.mark.postgres
@on_postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_never_takes_a_record_another_worker_holds(fault_proxy):
    """Hold one record's row lock from here; a worker process skips it and takes the rest."""
    from django.db import transaction

    saved = stash_failed_saves(fault_proxy, 3)
    fault_proxy.reset_counters()
    held_id = saved[1][0]
    with transaction.atomic():
        SaveAttempt.objects.select_for_update().get(pk=held_id)
        worker = subprocess.run(
            [sys.executable, "-m", "django", "retry_failed_saves", "--json"], cwd=ROOT,
            env=subprocess_env(fault_proxy), capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0, worker.stderr[-3000:]
    report = json.loads(worker.stdout)
    assert sorted(i["record_id"] for i in report["items"]) == [saved[0][0], saved[2][0]]
    assert SaveAttempt.objects.get(pk=held_id).status == Status.FAILED
    assert fault_proxy.requests_for("PUT", saved[1][1]) == 0


@pytest.mark.django_db
def test_breaker_state_is_shared_through_redis(guarded_storage_factory, fault_proxy):
    caches = {"default": settings.CACHES["default"],
              "fleet": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                        "LOCATION": REDIS}}
    guard = {**settings.STORAGE_GUARD, "BREAKER_CACHE": "fleet"}
    with override_settings(CACHES=caches, STORAGE_GUARD=guard):
        options = {"bucket_name": settings.TEST_BUCKET, "breaker_threshold": 3,
                   "breaker_window": 0, "breaker_cooldown": COOLDOWN,
                   "breaker_initial_cooldown": COOLDOWN, "max_attempts": 3}
        web_1, web_2 = guarded_storage_factory(**options), guarded_storage_factory(**options)
        assert web_1.breaker is not web_2.breaker
        web_1.breaker.reset()
        try:
            assert other_process_sees(fault_proxy) == "closed"
            with fault_proxy.outage_window(action="service_unavailable"):
                with pytest.raises(ClientError):
                    web_1.size("breaker-probe.txt")
            assert web_2.breaker.state() == "open"
            fault_proxy.reset_counters()
            with pytest.raises(CircuitOpen):
                web_2.breaker.before_attempt()
            assert fault_proxy.counts["requests"] == 0
            # Shared: not "closed". Half-open if the cooldown ran out while the process started.
            assert other_process_sees(fault_proxy) in {"open", "half-open"}

            # The cooldown is over for web_2 (its clock moved on): its probe succeeds and
            # closes the circuit for all.
            web_2.breaker.clock = lambda: time.time() + COOLDOWN + 1
            assert web_2.exists("breaker-probe.txt") is False
            assert web_1.breaker.state() == "closed"
            assert other_process_sees(fault_proxy) == "closed"
        finally:
            web_1.breaker.reset()


def other_process_sees(fault_proxy) -> str:
    code = ("import django; django.setup(); "
            "from django.core.files.storage import storages; "
            "print(storages['default'].breaker.state())")
    env = subprocess_env(fault_proxy, STORAGE_GUARD_TEST_CACHE=REDIS)
    overrides = json.loads(env["STORAGE_GUARD_TEST_OVERRIDES"])
    env["STORAGE_GUARD_TEST_OVERRIDES"] = json.dumps({**overrides, "BREAKER_COOLDOWN": COOLDOWN,
                                                     "BREAKER_CACHE": "default"})
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]
