"""operations.redelivery: stashed saves delivered again through the real storage and SeaweedFS."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.utils import timezone

from storage_guard.errors import SaveFailed
from storage_guard.models import SaveAttempt, StashedPayload, Status
from storage_guard.operations import redelivery
from storage_guard.operations.redelivery import Selection
from tests.testbed.faultproxy import error

pytestmark = pytest.mark.django_db(transaction=True)


def stash_failed_saves(fault_proxy, n: int, *, storage=None, prefix: str | None = None,
                       action="reset", size: int = 64) -> list[tuple[int, str, bytes]]:
    """Save ``n`` files through an outage so each leaves a real record and a real stash.

    Returns ``(record_id, key, payload)`` per save. The breaker the outage opened is reset so
    the next step starts from a healthy storage.
    """
    storage = storage or storages["default"]
    prefix = prefix or f"replay-{uuid.uuid4().hex[:10]}"
    saved = []
    with fault_proxy.outage_window(action=action):
        for number in range(n):
            payload = (f"{prefix}:{number}:".encode() * (size // 8 + 1))[:size]
            name = f"{prefix}/file-{number:04d}.bin"
            try:
                storage.save(name, ContentFile(payload))
            except SaveFailed as exc:
                saved.append((exc.record_id, exc.key, payload))
            else:
                record = SaveAttempt.objects.filter(name=name).latest("created_at")
                assert record.status == Status.DEFERRED, record.status
                saved.append((record.pk, record.key, payload))
    storage.breaker.reset()
    assert len(saved) == n
    return saved


def read_default(s3, key: str) -> bytes:
    return s3.get_object(Bucket=settings.TEST_BUCKET, Key=key)["Body"].read()


def test_replay_delivers_verifies_marks_recovered_and_frees_the_stash(fault_proxy, s3):
    saved = stash_failed_saves(fault_proxy, 3)
    before = {r.pk: r for r in SaveAttempt.objects.filter(pk__in=[s[0] for s in saved])}
    assert all(r.status == Status.FAILED and r.stash_backend == "db" for r in before.values())
    fault_proxy.reset_counters()

    result = redelivery.replay(Selection(), via="command")

    assert (result.delivered, result.failed, result.skipped) == (3, 0, 0)
    assert [item.record_id for item in result.items] == [s[0] for s in saved]  # oldest first
    for record_id, key, payload in saved:
        record = SaveAttempt.objects.get(pk=record_id)
        assert record.status == Status.RECOVERED
        assert record.recovered_at is not None
        assert record.stash_backend == "" and record.stash_location == ""
        assert record.attempts == before[record_id].attempts + 1
        newest = record.attempt_log[-1]
        assert newest["code"] == "OK" and newest["round"] == 1 and newest["via"] == "command"
        assert newest["n"] == record.attempts
        assert read_default(s3, key) == payload
    assert not StashedPayload.objects.filter(attempt_id__in=[s[0] for s in saved]).exists()
    assert fault_proxy.counts["PUT"] == 3 and fault_proxy.counts["HEAD"] == 3


def test_replay_in_an_outage_leaves_records_failed_with_attempts_raised(fault_proxy):
    saved = stash_failed_saves(fault_proxy, 2)
    before = {r.pk: r for r in SaveAttempt.objects.filter(pk__in=[s[0] for s in saved])}
    with fault_proxy.outage_window(action="internal"):
        result = redelivery.replay(Selection(), via="admin")
    storages["default"].breaker.reset()

    assert (result.delivered, result.failed) == (0, 2)
    for record_id, _key, payload in saved:
        record = SaveAttempt.objects.get(pk=record_id)
        old = before[record_id]
        assert record.status == Status.FAILED
        assert record.attempts > old.attempts
        assert record.error_code in ("InternalError", "CircuitOpen")
        assert len(record.attempt_log) == len(old.attempt_log) + (record.attempts - old.attempts)
        assert {e["via"] for e in record.attempt_log[len(old.attempt_log):]} == {"admin"}
        assert bytes(StashedPayload.objects.get(attempt_id=record_id).data) == payload
    first = SaveAttempt.objects.get(pk=saved[0][0])
    assert first.error_code == "InternalError"
    assert first.error_response["HTTPStatusCode"] == 500
    assert first.request_id  # the proxy's x-amz-request-id


def test_a_second_replay_round_is_numbered_after_the_first(fault_proxy):
    [(record_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)
    with fault_proxy.outage_window(action="internal"):
        redelivery.replay(Selection(), via="task")
    storages["default"].breaker.reset()
    redelivery.replay(Selection(), via="command")
    record = SaveAttempt.objects.get(pk=record_id)
    rounds = [e.get("round", 0) for e in record.attempt_log]
    assert rounds == sorted(rounds) and rounds[-1] == 2 and record.status == Status.RECOVERED
    assert [e["n"] for e in record.attempt_log] == list(range(1, record.attempts + 1))


def test_stash_is_kept_when_verification_fails(fault_proxy, s3):
    [(record_id, key, payload)] = stash_failed_saves(fault_proxy, 1)
    fault_proxy.configure(methods={"HEAD"})
    fault_proxy.script([error(500, "InternalError", "head broken")] * 20)
    result = redelivery.replay(Selection(), via="command")
    fault_proxy.clear()
    storages["default"].breaker.reset()

    assert result.failed == 1
    record = SaveAttempt.objects.get(pk=record_id)
    # S3 answers HEAD errors without a body: the code is the status (see classification).
    assert record.status == Status.FAILED and record.error_code == "500"
    assert record.error_category == "server"
    assert read_default(s3, key) == payload  # the PUT arrived ...
    assert record.stash_backend == "db"  # ... but unverified bytes are never freed
    assert StashedPayload.objects.filter(attempt_id=record_id).exists()


def test_an_older_failure_never_overwrites_a_newer_save(fault_proxy, s3):
    [(record_id, key, _payload)] = stash_failed_saves(fault_proxy, 1)
    record = SaveAttempt.objects.get(pk=record_id)
    storages["default"].save(record.name, ContentFile(b"newer content"))

    result = redelivery.replay(Selection(), via="command")

    assert (result.delivered, result.skipped) == (0, 1)
    assert "superseded" in result.items[0].reason
    assert read_default(s3, key) == b"newer content"
    assert SaveAttempt.objects.get(pk=record_id).status == Status.FAILED


def test_deferred_saves_are_replayed_too(fault_proxy, s3):
    options = {**settings.STORAGES["default"]["OPTIONS"], "on_failure": "defer"}
    from storage_guard.storage import GuardedS3Storage

    storage = GuardedS3Storage(**options)
    [(record_id, key, payload)] = stash_failed_saves(fault_proxy, 1, storage=storage)
    assert SaveAttempt.objects.get(pk=record_id).status == Status.DEFERRED
    result = redelivery.replay_ids([record_id], via="admin")
    assert result.delivered == 1
    assert read_default(s3, key) == payload


def test_selection_filters(fault_proxy):
    saved = stash_failed_saves(fault_proxy, 4)
    ids = [s[0] for s in saved]
    SaveAttempt.objects.filter(pk=ids[0]).update(created_at=timezone.now() - timedelta(hours=2))
    SaveAttempt.objects.filter(pk=ids[1]).update(error_code="SlowDown")
    SaveAttempt.objects.filter(pk=ids[2]).update(storage_alias="elsewhere")

    def picked(**kwargs):
        return [r.pk for r in redelivery.pending(Selection(**kwargs))]

    assert picked() == ids
    assert picked(older_than=timedelta(hours=1)) == [ids[0]]
    assert picked(error_code="SlowDown") == [ids[1]]
    assert picked(storage_alias="elsewhere") == [ids[2]]
    assert picked(limit=2) == ids[:2]
    assert picked(ids=(ids[3],)) == [ids[3]]


def test_unknown_storage_alias_is_skipped_with_a_reason(fault_proxy):
    [(record_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)
    SaveAttempt.objects.filter(pk=record_id).update(storage_alias="gone")
    result = redelivery.replay(Selection(), via="command")
    assert (result.skipped, result.failed) == (1, 0)
    assert "'gone' is not in settings.STORAGES" in result.items[0].reason


def test_replay_ids_reports_records_it_could_not_take(fault_proxy):
    [(failed_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)
    storages["default"].save(f"ok-{uuid.uuid4().hex}.txt", ContentFile(b"fine"))
    ok_id = SaveAttempt.objects.get(status=Status.SUCCEEDED).pk
    result = redelivery.replay_ids([failed_id, ok_id, 987654321], via="admin")
    assert (result.delivered, result.skipped) == (1, 2)
    reasons = {item.record_id: item.reason for item in result.items if item.outcome == "skipped"}
    assert reasons == {ok_id: "status is succeeded", 987654321: "no such record"}


def test_abandon_keeps_the_evidence_and_frees_bytes_only_when_asked(fault_proxy):
    (keep_id, _k1, payload), (free_id, _k2, _p2) = stash_failed_saves(fault_proxy, 2)
    kept = redelivery.abandon([keep_id])
    freed = redelivery.abandon([free_id], free_stash=True)
    again = redelivery.abandon([keep_id])

    assert (kept.abandoned, kept.stashes_freed) == (1, 0)
    assert (freed.abandoned, freed.stashes_freed) == (1, 1)
    assert again.skipped == 1
    keep, free = SaveAttempt.objects.get(pk=keep_id), SaveAttempt.objects.get(pk=free_id)
    assert keep.status == free.status == Status.ABANDONED
    assert keep.error_code and free.error_code  # evidence kept
    assert bytes(StashedPayload.objects.get(attempt_id=keep_id).data) == payload
    assert not StashedPayload.objects.filter(attempt_id=free_id).exists()
    assert free.stash_backend == ""
    assert redelivery.pending(Selection()) == []


def test_payload_hash_matches_record(fault_proxy):
    [(record_id, _key, payload)] = stash_failed_saves(fault_proxy, 1, size=3000)
    assert SaveAttempt.objects.get(pk=record_id).sha256 == hashlib.sha256(payload).hexdigest()
