"""Retries as tasks on RQ (``django_tasks_rq``): real Redis, real ``rqworker`` processes.

The pytest process enqueues through the same backend the workers read (``tests/settings_rq.py``
is the workers' side); each test run uses a queue of its own on the test Redis database
(``STORAGE_GUARD_TEST_REDIS_URL``) and deletes it afterwards.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import unquote

import django_rq
import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import connection
from django.test import override_settings
from rq import Worker
from rq.job import Job
from rq.registry import (
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)

from storage_guard.errors import SaveFailed
from storage_guard.models import SaveAttempt, StashedPayload, Status
from tests.test_replay import read_default, stash_failed_saves
from tests.test_tasks import WITH_TASKS, worker_env

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # django-tasks-rq (0.12) is built on the django-tasks backport's base classes; the Django 6
    # cells uninstall the backport to prove storage_guard uses the built-in django.tasks, so
    # RQ is exercised in the Django 5.2 cells (docs/scaling.md says the same for users).
    pytest.mark.skipif(importlib.util.find_spec("django_tasks") is None,
                       reason="django-tasks-rq needs the django-tasks backport (Django 5.2 cells)"),
]

ROOT = Path(__file__).resolve().parents[1]
RQ_QUEUE = f"storage-guard-test-{uuid.uuid4().hex[:8]}"
WORKERS = 4
SAVES = 1000
on_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="runs in the PostgreSQL pass of .ci/run")


def rq_settings(redis_url: str) -> dict:
    return {"TASKS": {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": [RQ_QUEUE]}},
            "RQ_QUEUES": {RQ_QUEUE: {"URL": redis_url}},
            "STORAGE_GUARD": {**WITH_TASKS, "TASK_QUEUE": RQ_QUEUE}}


@pytest.fixture
def rq_queue():
    """The test run's queue on the test Redis, with retries as tasks going to it."""
    with override_settings(**rq_settings(settings.REDIS_URL)):
        queue = django_rq.get_queue(RQ_QUEUE, job_class="django_tasks_rq.Job")
        try:
            yield queue
        finally:
            delete_queue(queue)


def delete_queue(queue) -> None:
    redis = queue.connection
    for registry in registries(queue):
        for job_id in registry.get_job_ids():
            redis.delete(f"rq:job:{job_id}", f"rq:results:{job_id}")
    for job_id in queue.get_job_ids():
        redis.delete(f"rq:job:{job_id}", f"rq:results:{job_id}")
    for key in redis.scan_iter(match=f"*{RQ_QUEUE}*"):
        redis.delete(key)
    redis.srem("rq:queues", queue.key)


def registries(queue) -> list:
    return [cls(queue=queue) for cls in (ScheduledJobRegistry, StartedJobRegistry,
                                          FinishedJobRegistry, FailedJobRegistry)]


def test_a_failed_save_schedules_its_retry_on_the_rq_queue(fault_proxy, rq_queue):
    [(record_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)
    record = SaveAttempt.objects.get(pk=record_id)
    scheduled = ScheduledJobRegistry(queue=rq_queue)
    [job_id] = scheduled.get_job_ids()
    job = Job.fetch(job_id, connection=rq_queue.connection)

    assert job.func_name == "storage_guard.tasks.retry_save"
    assert list(job.args) == [record_id]
    assert job.origin == RQ_QUEUE
    # RQ keeps the time to the second; the record has the exact run_after.
    at = scheduled.get_scheduled_time(job_id)
    assert abs((at - record.next_retry_at).total_seconds()) < 1.0
    assert rq_queue.count == 0  # not runnable before the backoff


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_redis_down_the_save_fails_with_its_own_error_and_claims_no_retry(fault_proxy, caplog):
    with override_settings(**rq_settings(f"redis://127.0.0.1:{closed_port()}/6")):
        with pytest.raises(SaveFailed) as caught, fault_proxy.outage_window(action="reset"):
            storages["default"].save(f"rq-down-{uuid.uuid4().hex[:8]}.txt", ContentFile(b"x"))
    storages["default"].breaker.reset()

    assert caught.value.code == "ConnectionClosed"  # the S3 error, not Redis's
    record = SaveAttempt.objects.get(pk=caught.value.record_id)
    assert record.status == Status.FAILED and record.has_stash
    assert record.next_retry_at is None  # no retry is queued, so none is promised
    assert any(getattr(r, "event", "") == "retry_enqueue_failed" for r in caplog.records)


# ----------------------------------------------------------------------- a fleet of RQ workers


def rq_env(fault_proxy) -> dict:
    return {**worker_env(fault_proxy), "DJANGO_SETTINGS_MODULE": "tests.settings_rq",
            "STORAGE_GUARD_TEST_RQ_QUEUE": RQ_QUEUE,
            "STORAGE_GUARD_TEST_REDIS_URL": settings.REDIS_URL}


def start_rq_workers(fault_proxy, queue, n: int, log_dir: Path) -> list[subprocess.Popen]:
    """``n`` real ``manage.py rqworker`` processes on the queue, one of them its scheduler.

    ``SimpleWorker`` runs each job in the worker process: RQ's default forks a child per job,
    which imports boto3 and builds its client again for every job (docs/scaling.md).
    """
    workers = []
    for number in range(n):
        log = (log_dir / f"rqworker-{number}.log").open("w")
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "django", "rqworker", RQ_QUEUE, "--with-scheduler",
             "--job-class", "django_tasks_rq.Job", "--worker-class", "rq.worker.SimpleWorker",
             "--name", f"{RQ_QUEUE}-{number}"],
            cwd=ROOT, env=rq_env(fault_proxy), stdout=log, stderr=subprocess.STDOUT))
        log.close()
    deadline = time.monotonic() + 120
    while Worker.count(queue=queue) < n:
        assert all(w.poll() is None for w in workers), worker_logs(log_dir)
        assert time.monotonic() < deadline, worker_logs(log_dir)
        time.sleep(0.2)
    return workers


def worker_logs(log_dir: Path) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted(log_dir.glob("rqworker-*.log")))


def stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.terminate()  # SIGTERM: RQ's warm shutdown
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def wait_until_drained(queue, workers, log_dir: Path, expected: int, timeout: float = 300):
    deadline = time.monotonic() + timeout
    scheduled, started = ScheduledJobRegistry(queue=queue), StartedJobRegistry(queue=queue)
    while time.monotonic() < deadline:
        recovered = SaveAttempt.objects.filter(status=Status.RECOVERED).count()
        if recovered == expected and not (queue.count or scheduled.count or started.count):
            return
        assert all(w.poll() is None for w in workers), worker_logs(log_dir)
        time.sleep(0.5)
    pytest.fail(f"not drained in {timeout}s\n{worker_logs(log_dir)}")


def task_outcomes(queue) -> dict[int, dict]:
    """The return value of every finished retry task, by record id (each record once)."""
    outcomes: dict[int, dict] = {}
    for job_id in FinishedJobRegistry(queue=queue).get_job_ids():
        job = Job.fetch(job_id, connection=queue.connection)
        [record_id] = job.args
        assert record_id not in outcomes, f"record {record_id} had two retry tasks"
        outcomes[record_id] = job.return_value()
    return outcomes


@pytest.mark.postgres
@pytest.mark.slow
@on_postgres
def test_four_rq_workers_and_a_cron_drain_1000_saves_each_delivered_once(
        fault_proxy, s3, rq_queue, tmp_path):
    started = time.monotonic()
    saved = stash_failed_saves(fault_proxy, SAVES, size=256)
    stashing_s = time.monotonic() - started
    ids = {record_id for record_id, _k, _p in saved}
    assert ScheduledJobRegistry(queue=rq_queue).count == SAVES  # one retry task per failed save
    fault_proxy.reset_counters()

    started = time.monotonic()
    workers = start_rq_workers(fault_proxy, rq_queue, WORKERS, tmp_path)
    try:
        # A cron `retry_failed_saves` at the same time: the row lock keeps them apart.
        cron = subprocess.run([sys.executable, "-m", "django", "retry_failed_saves", "--json"],
                              cwd=ROOT, env=rq_env(fault_proxy), capture_output=True, text=True,
                              timeout=300)
        assert cron.returncode == 0, cron.stderr[-3000:]
        wait_until_drained(rq_queue, workers, tmp_path, expected=SAVES)
    finally:
        stop(workers)
    draining_s = time.monotonic() - started

    assert FailedJobRegistry(queue=rq_queue).count == 0, worker_logs(tmp_path)
    outcomes = task_outcomes(rq_queue)
    assert set(outcomes) == ids  # every retry task ran, exactly once
    by_task = {rid for rid, outcome in outcomes.items() if outcome["delivered"] == 1}
    assert all(o["failed"] == 0 and o["delivered"] + o["skipped"] == 1 for o in outcomes.values())
    report = json.loads(cron.stdout)
    assert report["failed"] == 0
    by_cron = {i["record_id"] for i in report["items"] if i["outcome"] == "delivered"}
    assert not by_task & by_cron  # no record delivered by a task and by the cron
    assert by_task | by_cron == ids
    assert by_task and by_cron, (len(by_task), len(by_cron))  # both really ran at once

    puts = collections.Counter(unquote(path.split("?")[0]).split("/", 2)[2]
                               for method, path, action in fault_proxy.log
                               if method == "PUT" and action == "pass")
    assert set(puts) == {key for _id, key, _payload in saved}
    assert set(puts.values()) == {1}, puts.most_common(3)  # each key PUT exactly once
    for _record_id, key, payload in saved:
        assert read_default(s3, key) == payload
    vias = dict(SaveAttempt.objects.filter(pk__in=ids).values_list("pk", "attempt_log"))
    assert {rid for rid in ids if vias[rid][-1]["via"] == "task"} == by_task
    assert SaveAttempt.objects.filter(status=Status.RECOVERED).count() == SAVES
    assert not StashedPayload.objects.exists()
    print(f"\nstashed 1000 saves in {stashing_s:.1f}s; {WORKERS} RQ workers and a cron drained "
          f"them in {draining_s:.1f}s: {len(by_task)} by tasks, {len(by_cron)} by the cron")
