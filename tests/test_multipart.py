"""Large files resume, not restart: each multipart request is retried on its own.

Against the real SeaweedFS behind the real fault proxy. Parts are S3's smallest, 5 MB
(SeaweedFS refuses smaller ones with EntityTooSmall, as S3 does), and uploads have two or three
parts. Every test ends by asking the server for unfinished uploads: none may be left behind.
"""

from __future__ import annotations

import os

import pytest
from boto3.s3.transfer import TransferConfig
from django.core.files.base import ContentFile

from storage_guard.errors import SaveFailed
from storage_guard.models import SaveAttempt, Status
from storage_guard.saving import stash
from tests.testbed.faultproxy import error

pytestmark = pytest.mark.django_db

KB = 1024
MB = KB * KB
PART = 5 * MB


@pytest.fixture
def multipart_storage(guarded_storage_factory):
    def build(**options):
        return guarded_storage_factory(**{
            "preset": "standard", "breaker_threshold": 0,
            "transfer_config": TransferConfig(multipart_threshold=PART,
                                              multipart_chunksize=PART, use_threads=False),
            **options})
    return build


@pytest.fixture
def unfinished_uploads(s3, bucket):
    def count() -> int:
        return len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
    return count


def requests_for_one_upload(size: int) -> int:
    """Create, one PUT per part, complete."""
    return 2 + -(-size // PART)


def test_a_failed_part_is_sent_again_alone(multipart_storage, fault_proxy, read_object,
                                           unfinished_uploads):
    storage = multipart_storage()
    fault_proxy.configure(methods={"PUT"})
    fault_proxy.script(["pass", "reset_mid_body"])  # part 2 is cut off once
    body = os.urandom(2 * PART + 1000)

    name = storage.save("big/resumed.bin", ContentFile(body))

    assert read_object(name) == body
    assert fault_proxy.counts["PUT"] == 3 + 1
    assert fault_proxy.counts["requests"] == requests_for_one_upload(len(body)) + 1
    record = SaveAttempt.objects.get()
    assert record.status == Status.SUCCEEDED and record.attempts == 2
    assert [(e["step"], e["code"]) for e in record.attempt_log] == [
        ("part 2", "ConnectionClosed"), ("complete", "OK")]
    assert unfinished_uploads() == 0


def test_a_part_that_fails_for_good_aborts_the_upload(multipart_storage, fault_proxy,
                                                      unfinished_uploads):
    storage = multipart_storage()
    fault_proxy.configure(methods={"PUT"})
    fault_proxy.script(["pass", error(403, "AccessDenied", "Access Denied")])
    body = os.urandom(2 * PART + 10)

    with pytest.raises(SaveFailed) as caught:
        storage.save("big/denied.bin", ContentFile(body))

    assert caught.value.code == "AccessDenied"
    assert fault_proxy.requests_for("DELETE", "uploadId=") == 1
    assert unfinished_uploads() == 0
    assert stash.read(SaveAttempt.objects.get(pk=caught.value.record_id)) == body


def test_a_reset_abort_is_retried(multipart_storage, fault_proxy, unfinished_uploads):
    storage = multipart_storage()
    fault_proxy.configure(methods={"PUT", "DELETE"})
    fault_proxy.script([error(403, "AccessDenied", "Access Denied"), "reset", "reset"])

    with pytest.raises(SaveFailed):
        storage.save("big/abort.bin", ContentFile(os.urandom(PART + 10)))

    assert fault_proxy.requests_for("DELETE", "uploadId=") == 3
    assert unfinished_uploads() == 0


def test_a_lost_complete_answer_is_not_a_failure(multipart_storage, fault_proxy, read_object,
                                                 unfinished_uploads, bucket):
    """The server completes the upload but the answer never arrives: the complete is sent
    again (SeaweedFS, like S3, answers a repeated complete; a server that answers
    NoSuchUpload instead gets a HEAD to confirm the whole object is there)."""
    storage = multipart_storage()
    body = os.urandom(PART + 7)
    fault_proxy.configure(methods={"POST"}, path_prefix=f"/{bucket}/big/lost.bin?uploadId=")
    fault_proxy.script(["lose_answer"])  # the server completes it, the answer is lost

    name = storage.save("big/lost.bin", ContentFile(body))

    assert read_object(name) == body
    assert fault_proxy.counts["lose_answer"] == 1
    record = SaveAttempt.objects.get()
    assert record.status == Status.SUCCEEDED
    assert [(e["step"], e["code"]) for e in record.attempt_log] == [
        ("complete", "ConnectionClosed"), ("complete", "OK")]
    assert unfinished_uploads() == 0


def test_a_complete_answered_no_such_upload_is_confirmed_with_a_head(
        multipart_storage, fault_proxy, read_object, bucket):
    """S3 may forget a completed upload: the retried complete then gets NoSuchUpload, and
    a HEAD of the key with the right size proves the object is whole."""
    storage = multipart_storage()
    body = os.urandom(PART + 7)
    fault_proxy.configure(methods={"POST"}, path_prefix=f"/{bucket}/big/gone.bin?uploadId=")
    fault_proxy.script(["lose_answer", error(404, "NoSuchUpload", "The upload does not exist")])

    name = storage.save("big/gone.bin", ContentFile(body))

    assert read_object(name) == body
    assert fault_proxy.requests_for("HEAD", "big/gone.bin") == 1
    assert SaveAttempt.objects.get().status == Status.SUCCEEDED


def test_stalled_parts_give_up_inside_the_deadline_and_abort(multipart_storage, fault_proxy,
                                                             unfinished_uploads):
    storage = multipart_storage(on_failure="defer", retry_deadline=6.0)
    fault_proxy.configure(methods={"PUT"}, stall_seconds=60)
    fault_proxy.script(["pass"] + ["stall"] * 20)
    body = os.urandom(2 * PART + 10)

    storage.save("big/stalled.bin", ContentFile(body))

    record = SaveAttempt.objects.get()
    assert record.status == Status.DEFERRED
    assert {e["step"] for e in record.attempt_log} == {"part 2"}
    deadline = storage.policy_for(len(body)).deadline
    reserve = min(storage.read_timeout, deadline / 4)
    spent = sum(e["timeout_s"] + e["delay_ms"] / 1000 for e in record.attempt_log)
    assert spent <= deadline - reserve  # the abort's time was kept back
    assert fault_proxy.requests_for("DELETE", "uploadId=") == 1
    assert unfinished_uploads() == 0


@pytest.mark.parametrize("rate", [0.2, 0.3])
def test_random_resets_cost_one_request_each_and_lose_nothing(
        multipart_storage, fault_proxy, read_object, unfinished_uploads, rate):
    storage = multipart_storage(max_attempts=5)
    fault_proxy.configure(reset=rate, seed=7)
    payloads = [(f"big/random-{n}.bin", os.urandom(2 * PART + n + 1)) for n in range(5)]

    for name, body in payloads:
        storage.save(name, ContentFile(body))

    fault_proxy.clear()
    assert fault_proxy.counts["reset"] > 5  # the faults really happened
    for name, body in payloads:
        assert read_object(name) == body
    assert set(SaveAttempt.objects.values_list("status", flat=True)) == {Status.SUCCEEDED}
    ideal = sum(requests_for_one_upload(len(body)) for _, body in payloads)
    assert fault_proxy.counts["requests"] == ideal + fault_proxy.counts["reset"]
    assert unfinished_uploads() == 0


def test_a_slow_link_does_not_cut_parts_off(multipart_storage, fault_proxy, read_object):
    """A 5 MB part at 2 MB/s takes 2.5 s, past the 1.5 s floor; the rule allows 24 s."""
    storage = multipart_storage()
    fault_proxy.throttle(2 * MB)
    body = os.urandom(PART + MB)

    name = storage.save("big/slow.bin", ContentFile(body))

    assert read_object(name) == body
    assert fault_proxy.counts["PUT"] == 2
    assert SaveAttempt.objects.get().attempts == 1
