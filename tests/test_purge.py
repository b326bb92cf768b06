"""purge_save_attempts: old records go in batches; unresolved failures and stashes stay."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from storage_guard.models import SaveAttempt, StashedPayload
from storage_guard.operations import purge
from storage_guard.storage import GuardedS3Storage
from tests.test_replay import stash_failed_saves

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[1]


def save_ok(n: int) -> list[int]:
    prefix = uuid.uuid4().hex[:8]
    for number in range(n):
        storages["default"].save(f"purge-{prefix}/{number}.txt", ContentFile(b"ok"))
    return list(SaveAttempt.objects.filter(key__contains=f"purge-{prefix}/")
                .values_list("pk", flat=True))


def age(ids, days: int) -> None:
    SaveAttempt.objects.filter(pk__in=ids).update(
        created_at=timezone.now() - timedelta(days=days))


def test_old_resolved_records_go_in_batches_unresolved_and_new_stay(fault_proxy):
    old_ok, new_ok = save_ok(5), save_ok(1)
    failed = [s[0] for s in stash_failed_saves(fault_proxy, 2)]
    age(old_ok + failed, days=40)

    result = purge.purge(timedelta(days=30), batch_size=2)

    assert (result.deleted, result.batches, result.unresolved_deleted) == (5, 3, 0)
    remaining = set(SaveAttempt.objects.values_list("pk", flat=True))
    assert remaining == set(new_ok + failed)
    assert StashedPayload.objects.filter(attempt_id__in=failed).count() == 2


def test_include_unresolved_deletes_failures_and_their_stashes(fault_proxy):
    failed = [s[0] for s in stash_failed_saves(fault_proxy, 2)]
    age(failed, days=40)
    result = purge.purge(timedelta(days=30), include_unresolved=True)
    assert (result.deleted, result.unresolved_deleted, result.stashes_freed) == (2, 2, 2)
    assert not SaveAttempt.objects.exists() and not StashedPayload.objects.exists()


def test_stash_storage_files_are_deleted_with_their_record(fault_proxy):
    options = {**settings.STORAGES["default"]["OPTIONS"], "stash_storage": "stash",
               "stash_db_max_bytes": 16}
    saved = stash_failed_saves(fault_proxy, 1, storage=GuardedS3Storage(**options), size=100)
    record = SaveAttempt.objects.get(pk=saved[0][0])
    alias, name = record.stash_location.split(":", 1)
    assert record.stash_backend == "storage" and storages[alias].exists(name)
    age([record.pk], days=40)

    kept = purge.purge(timedelta(days=30))
    assert kept.deleted == 0 and storages[alias].exists(name)

    gone = purge.purge(timedelta(days=30), include_unresolved=True)
    assert gone.deleted == 1 and not storages[alias].exists(name)


def test_dry_run_counts_and_deletes_nothing(fault_proxy):
    old_ok = save_ok(3)
    age(old_ok, days=40)
    result = purge.purge(timedelta(days=30), dry_run=True)
    assert (result.deleted, result.dry_run) == (3, True)
    assert SaveAttempt.objects.count() == 3


def test_the_command(fault_proxy):
    age(save_ok(3), days=40)
    out = StringIO()
    call_command("purge_save_attempts", "--older-than", "30d", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "would delete 3 record(s)"
    out = StringIO()
    call_command("purge_save_attempts", "--older-than", "30d", "--batch-size", "2", stdout=out)
    assert out.getvalue().strip() == "deleted 3 record(s), freed 0 stash(es), in 2 batch(es)"
    out = StringIO()
    call_command("purge_save_attempts", "--older-than", "30d", "--json", stdout=out)
    assert json.loads(out.getvalue())["deleted"] == 0


def test_a_bad_batch_size_is_refused():
    with pytest.raises(ValueError, match="batch_size must be at least 1, not 0"):
        purge.purge(timedelta(days=1), batch_size=0)


@pytest.mark.parametrize(("args", "message"), [
    ([], "the following arguments are required: --older-than"),
    (["--older-than", "30"], "'30' is not an age"),
    (["--older-than", "30d", "--batch-size", "0"],
     "--batch-size must be a whole number from 1 to 100000, not '0'"),
])
def test_usage_errors_exit_2(args, message):
    done = subprocess.run(
        [sys.executable, "-m", "django", "purge_save_attempts", *args,
         "--settings", "tests.settings"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_batches_walk_forward_through_equal_and_later_timestamps(fault_proxy):
    same, later = save_ok(5), save_ok(4)
    age(same, days=41)  # five rows with one created_at: a batch boundary falls among them
    age(later, days=40)

    result = purge.purge(timedelta(days=30), batch_size=2, pause=0.001)

    assert (result.deleted, result.batches) == (9, 5)
    assert not SaveAttempt.objects.exists()


@pytest.mark.postgres
@pytest.mark.skipif(connection.vendor != "postgresql",
                    reason="runs in the PostgreSQL pass of .ci/run (needs row locks)")
def test_purge_skips_a_record_another_transaction_holds_instead_of_waiting(fault_proxy):
    ids = save_ok(4)
    age(ids, days=40)
    held = min(ids)
    params = {k: v for k, v in connection.get_connection_params().items()
              if k != "cursor_factory"}
    with psycopg.connect(**params) as replay_worker:  # holds the row as a replay delivery does
        replay_worker.execute("SELECT id FROM storage_guard_saveattempt WHERE id = %s "
                              "FOR UPDATE", [held])
        done = {}
        runner = threading.Thread(target=lambda: done.update(
            result=purge.purge(timedelta(days=30), batch_size=2)))
        runner.start()
        runner.join(120)  # a purge that waited for the lock would still be running
        assert not runner.is_alive(), "purge waited for a row lock"
        replay_worker.rollback()

    assert done["result"].deleted == 3
    assert list(SaveAttempt.objects.values_list("pk", flat=True)) == [held]
    assert purge.purge(timedelta(days=30)).deleted == 1
