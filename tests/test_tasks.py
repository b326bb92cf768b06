"""Retries as tasks: a failed save enqueues its own retry; a real ORM worker delivers it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from storage_guard import conf, tasks
from storage_guard.errors import SaveFailed
from storage_guard.models import SaveAttempt, Status
from tests.test_replay import read_default, stash_failed_saves

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[1]
WITH_TASKS = {**settings.STORAGE_GUARD, "RETRY_WITH_TASKS": True, "BREAKER_COOLDOWN": 1.0}
on_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="runs in the PostgreSQL pass of .ci/run")


def queued_for(record_id: int) -> list[DBTaskResult]:
    return [t for t in DBTaskResult.objects.order_by("enqueued_at")
            if t.args_kwargs["args"] == [record_id]]


@override_settings(STORAGE_GUARD=WITH_TASKS)
def test_a_failed_save_enqueues_its_retry_with_backoff(fault_proxy):
    before = timezone.now()
    [(record_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)
    after = timezone.now()  # the retry was enqueued between these two readings
    [queued] = queued_for(record_id)
    record = SaveAttempt.objects.get(pk=record_id)

    assert queued.task_path == "storage_guard.tasks.retry_save"
    assert queued.status == "READY"
    assert record.next_retry_at == queued.run_after
    # First round: the base delay (the 1 s breaker cooldown here), half of it jittered, counted
    # from the enqueue: bracketed by clock readings, not by a margin a busy machine can exceed.
    assert before + timedelta(seconds=0.5) <= queued.run_after <= after + timedelta(seconds=1)


@override_settings(STORAGE_GUARD=WITH_TASKS)
def test_a_retry_that_fails_again_schedules_the_next_round_later(fault_proxy):
    [(record_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)
    [first] = queued_for(record_id)
    before = timezone.now()
    with fault_proxy.outage_window(action="internal"):
        outcome = tasks.retry_save.call(record_id)
    after = timezone.now()
    storages["default"].breaker.reset()

    assert outcome == {"delivered": 0, "failed": 1, "skipped": 0}
    first_round, second_round = queued_for(record_id)
    assert first_round.pk == first.pk
    record = SaveAttempt.objects.get(pk=record_id)
    assert record.status == Status.FAILED and tasks.replay_rounds(record) == 1
    assert record.next_retry_at == second_round.run_after
    # The round was scheduled between `before` and `after`, 1-2 s ahead (2 s, half jittered):
    # bounds that hold however slow the machine is.
    assert second_round.run_after >= before + timedelta(seconds=1)
    assert second_round.run_after <= after + timedelta(seconds=2)


@override_settings(STORAGE_GUARD=WITH_TASKS)
def test_the_task_delivers_and_marks_recovered(fault_proxy, s3):
    [(record_id, key, payload)] = stash_failed_saves(fault_proxy, 1)
    assert tasks.retry_save.call(record_id) == {"delivered": 1, "failed": 0, "skipped": 0}
    record = SaveAttempt.objects.get(pk=record_id)
    assert record.status == Status.RECOVERED and record.next_retry_at is None
    assert record.attempt_log[-1]["via"] == "task"
    assert read_default(s3, key) == payload
    assert len(queued_for(record_id)) == 1  # no further round


@override_settings(STORAGE_GUARD=WITH_TASKS)
def test_automatic_retries_stop_after_the_last_round(fault_proxy):
    [(record_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)
    record = SaveAttempt.objects.get(pk=record_id)
    rounds = conf.get("RETRY_TASK_MAX_ROUNDS")
    record.attempt_log = [*record.attempt_log, {"n": 99, "code": "X", "round": rounds}]
    SaveAttempt.objects.filter(pk=record_id).update(attempt_log=record.attempt_log)

    assert tasks.schedule_retry(record) is None
    assert len(queued_for(record_id)) == 1  # only the one the save enqueued
    assert SaveAttempt.objects.get(pk=record_id).next_retry_at is None


IMMEDIATE = {"default": {"BACKEND": settings.IMMEDIATE_TASK_BACKEND}}


@override_settings(STORAGE_GUARD=WITH_TASKS, TASKS=IMMEDIATE)
def test_a_backend_that_cannot_defer_is_refused_not_run_inside_the_request(fault_proxy, caplog):
    [(record_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)
    record = SaveAttempt.objects.get(pk=record_id)
    assert record.status == Status.FAILED  # not replayed inline by the immediate backend
    assert record.next_retry_at is None
    assert any("cannot run tasks later" in r.getMessage() for r in caplog.records)


def test_retry_delay_doubles_and_is_capped():
    rng = random.Random(1)
    with override_settings(STORAGE_GUARD={**settings.STORAGE_GUARD, "BREAKER_COOLDOWN": 10.0}):
        delays = [tasks.retry_delay(rounds, rng) for rounds in range(12)]
    for rounds, delay in enumerate(delays):
        ceiling = min(3600.0, 10.0 * 2 ** rounds)
        assert ceiling / 2 <= delay <= ceiling, (rounds, delay)
    assert max(delays) <= 3600.0


@pytest.mark.postgres
@on_postgres
@pytest.mark.django_db(transaction=True, databases="__all__")
@override_settings(STORAGE_GUARD={**WITH_TASKS, "INDEPENDENT_CONNECTION": True})
def test_the_retry_survives_the_callers_rollback(fault_proxy):
    """Under ATOMIC_REQUESTS a view re-raising SaveFailed rolls back; record and task stay."""
    name = f"atomic-{uuid.uuid4().hex[:8]}/file.txt"
    with pytest.raises(SaveFailed) as caught, fault_proxy.outage_window(action="reset"):
        with transaction.atomic():
            storages["default"].save(name, ContentFile(b"keep me"))
    storages["default"].breaker.reset()
    record_id = caught.value.record_id

    assert SaveAttempt.objects.get(pk=record_id).status == Status.FAILED
    assert len(queued_for(record_id)) == 1


@pytest.mark.postgres
@on_postgres
@override_settings(STORAGE_GUARD=WITH_TASKS)
def test_a_real_db_worker_delivers_the_retry(fault_proxy, s3, tmp_path):
    saved = stash_failed_saves(fault_proxy, 3)
    env = worker_env(fault_proxy)
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "django", "db_worker", "--interval", "0.2", "--no-startup-delay",
         "--no-reload", "--settings", "tests.settings_tasks"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        ids = [s[0] for s in saved]
        while time.monotonic() < deadline:
            if SaveAttempt.objects.filter(pk__in=ids, status=Status.RECOVERED).count() == 3:
                break
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(timeout=10)
        log.close()
    worker_log = (tmp_path / "worker.log").read_text()
    for record_id, key, payload in saved:
        record = SaveAttempt.objects.get(pk=record_id)
        assert record.status == Status.RECOVERED, worker_log
        assert record.attempt_log[-1]["via"] == "task"
        assert read_default(s3, key) == payload
        [queued] = queued_for(record_id)
        assert queued.status == "SUCCESSFUL", worker_log
        assert queued.return_value == {"delivered": 1, "failed": 0, "skipped": 0}
        assert queued.started_at >= queued.run_after  # the backoff was honoured


def worker_env(fault_proxy) -> dict:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings_tasks",
            "STORAGE_GUARD_TEST_DB_NAME": connection.settings_dict["NAME"],
            "STORAGE_GUARD_TEST_ENDPOINT": fault_proxy.endpoint_url,
            "STORAGE_GUARD_TEST_OVERRIDES": json.dumps(
                {**WITH_TASKS, "INDEPENDENT_CONNECTION": True}),
            "PYTHONPATH": str(ROOT)}
