"""Retries as tasks: with ``STORAGE_GUARD["RETRY_WITH_TASKS"] = True`` a failed save enqueues
its own retry, so whatever worker fleet runs the project's task queue does the replay.

``schedule_retry(record)`` enqueues ``retry_save`` with ``run_after`` set by an exponential
backoff over replay rounds (``RETRY_TASK_DELAY``, doubling, capped at ``RETRY_TASK_CAP``, at
most ``RETRY_TASK_MAX_ROUNDS`` rounds; the first delay defaults to the breaker cooldown, the
time after which the endpoint is worth probing again) and writes the same time into the
record's ``next_retry_at``. ``retry_save`` replays through ``operations.redelivery`` (the code the
command and the admin action use) and, when delivery fails again, schedules the next round.

The enqueue survives the caller's rollback, like the record does: when records are written on
their own connection (PostgreSQL), the task is enqueued from a short-lived thread, which Django
gives its own database connection in autocommit mode, so a view under ``ATOMIC_REQUESTS`` that
re-raises ``SaveFailed`` rolls back its own work but neither the record nor its retry. On SQLite
both share the caller's connection and transaction (see ``docs/scaling.md``).

Uses Django's ``django.tasks`` where it exists (Django 6) and the ``django_tasks`` backport
otherwise. The backend must support ``run_after`` (``supports_defer``); one that does not is
refused with a log line rather than retrying inside the request.
"""

from __future__ import annotations

import random
import threading
from datetime import timedelta

from django.db import connections
from django.utils import timezone

from storage_guard import conf
from storage_guard.integrations.task_framework import load as load_task_framework
from storage_guard.log import logger
from storage_guard.models import UNRESOLVED, SaveAttempt
from storage_guard.operations import redelivery
from storage_guard.saving import spool
from storage_guard.saving.classification import data_dependent
from storage_guard.saving.records import record_alias, update_attempt

# django.tasks (Django 6) or the django_tasks backport; ImproperlyConfigured without either.
_framework = load_task_framework()
task, task_backends = _framework.task, _framework.task_backends




# Declared on the configured backend and queue: the framework checks the queue when the task is
# defined, and an RQ backend accepts only the queues in RQ_QUEUES.
@task(backend=conf.get("TASK_BACKEND"), queue_name=conf.get("TASK_QUEUE"))
def retry_save(record_id: int) -> dict:
    """Replay one stashed save; schedule the next round if it fails again."""
    spool.ingest()  # saves kept on this machine while the database was out get records first
    result = redelivery.replay_ids([record_id], via="task")
    if result.failed or result.circuit_open:  # refused by the open circuit: try again later
        record = SaveAttempt.objects.using(record_alias()).filter(pk=record_id).first()
        if record is not None and record.status in UNRESOLVED:
            schedule_retry(record)
    return {"delivered": result.delivered, "failed": result.failed, "skipped": result.skipped}


def replay_rounds(record: SaveAttempt) -> int:
    return max((entry.get("round", 0) for entry in record.attempt_log or []), default=0)


def retry_delay(rounds: int, rng: random.Random | None = None) -> float:
    """Seconds before round ``rounds + 1``: doubling from the base, capped, half of it jittered."""
    base = conf.get("RETRY_TASK_DELAY")
    base = float(base if base is not None else max(conf.get("BREAKER_COOLDOWN"), 1.0))
    ceiling = min(float(conf.get("RETRY_TASK_CAP")), base * 2 ** rounds)
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def schedule_retry(record: SaveAttempt) -> str | None:
    """Enqueue the next retry of ``record``; returns the task result id, or None if not queued.

    Never raises: the record is already safe, and ``retry_failed_saves`` picks up anything a
    broken queue could not take.
    """
    if data_dependent(record.error_code, record.error_category):
        logger.warning("retry_not_scheduled %s, record %s: %s fails the same way every time; "
                       "left for an operator", record.key, record.pk, record.error_code,
                       extra={"event": "retry_not_scheduled", "record_id": record.pk,
                              "error_code": record.error_code})
        return None
    rounds = replay_rounds(record)
    if rounds >= conf.get("RETRY_TASK_MAX_ROUNDS"):
        update_attempt(record, next_retry_at=None)
        logger.error("retry_given_up %s after %s task round(s), record %s: left for an operator "
                     "(retry_failed_saves or the admin)", record.key, rounds, record.pk,
                     extra={"event": "retry_given_up", "record_id": record.pk, "rounds": rounds})
        return None
    try:
        return _enqueue(record, rounds)
    except Exception as exc:  # a queue failure must not hide the save's own error
        logger.exception("retry_enqueue_failed %s, record %s: %r", record.key, record.pk, exc,
                         extra={"event": "retry_enqueue_failed", "record_id": record.pk})
        _no_retry_queued(record)
        return None


def _no_retry_queued(record: SaveAttempt) -> None:
    """The record must not claim a retry the queue (Redis down, say) never took."""
    try:
        update_attempt(record, next_retry_at=None)
    except Exception:  # noqa: BLE001 - already failing; retry_failed_saves finds it anyway
        logger.warning("next_retry_at of record %s not cleared", record.pk,
                       extra={"event": "retry_enqueue_failed", "record_id": record.pk})


def _enqueue(record: SaveAttempt, rounds: int) -> str | None:
    backend_alias = conf.get("TASK_BACKEND")
    if not task_backends[backend_alias].supports_defer:
        logger.error("retry_not_enqueued %s: task backend %r cannot run tasks later (no "
                     "run_after); use one that can, e.g. django_tasks_db", record.key,
                     backend_alias, extra={"event": "retry_not_enqueued", "record_id": record.pk})
        return None
    run_after = timezone.now() + timedelta(seconds=retry_delay(rounds))
    update_attempt(record, next_retry_at=run_after)
    bound = retry_save.using(backend=backend_alias, queue_name=conf.get("TASK_QUEUE"),
                             run_after=run_after)
    task_result = _outside_callers_transaction(lambda: bound.enqueue(record.pk))
    logger.info("retry_enqueued %s for %s, record %s, round %s", record.key,
                run_after.isoformat(), record.pk, rounds + 1, extra={
                    "event": "retry_enqueued", "record_id": record.pk, "task_id": task_result.id,
                    "run_after": run_after.isoformat(), "round": rounds + 1})
    return task_result.id


def _outside_callers_transaction(fn):
    """Run ``fn`` on connections of its own when records are written on their own connection."""
    if record_alias() == conf.get("DATABASE_ALIAS"):
        return fn()
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the calling thread
            box["error"] = exc
        finally:
            connections.close_all()  # this thread's connections only

    thread = threading.Thread(target=run, name="storage_guard-enqueue")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
