"""Transient failures are retried; permanent ones fail at once; retries never multiply.

Every fault here is produced by the real fault proxy in front of a real SeaweedFS server.
"""

import hashlib
import io
import os

import pytest
from django.core.files.base import ContentFile, File

from storage_guard.errors import SaveFailed
from storage_guard.models import SaveAttempt, Status
from storage_guard.saving import payload, records
from tests.testbed.faultproxy import error

pytestmark = pytest.mark.django_db

TRANSIENT = ["reset", "reset_mid_body", "slowdown", "internal", "throttle_429",
             "service_unavailable",
             error(400, "RequestTimeout", "Your socket connection timed out"),
             error(502, "BadGateway", "Bad gateway"), "stall"]


@pytest.mark.parametrize("fault", TRANSIENT, ids=str)
def test_transient_failure_is_retried_until_success(guarded_storage_factory, fault_proxy,
                                                    read_object, fault):
    storage = guarded_storage_factory(read_timeout=1)
    fault_proxy.configure(methods={"PUT"}, stall_seconds=5)
    fault_proxy.script([fault, fault])
    body = os.urandom(5000)

    name = storage.save("retry/object.bin", ContentFile(body))

    assert read_object(name) == body
    assert fault_proxy.counts["PUT"] == 3
    record = SaveAttempt.objects.get()
    assert record.status == Status.SUCCEEDED
    assert record.attempts == 3
    assert [a["code"] for a in record.attempt_log][-1] == "OK"
    assert record.sha256 and record.size == 5000


PERMANENT = [
    error(403, "AccessDenied", "Access Denied"),
    error(404, "NoSuchBucket", "The specified bucket does not exist"),
    error(400, "InvalidArgument", "Invalid Argument"),
    error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"),
    error(400, "MetadataTooLarge", "Your metadata headers exceed the maximum allowed size"),
    error(400, "RequestHeaderSectionTooLarge", "Your request header section is too large"),
    error(400, "KeyTooLongError", "Your key is too long"),
]


@pytest.mark.parametrize("fault", PERMANENT, ids=str)
def test_permanent_failure_fails_at_once(guarded_storage_factory, fault_proxy, fault):
    storage = guarded_storage_factory(backoff_base=5, backoff_cap=5)  # a sleep would show
    fault_proxy.configure(methods={"PUT"})
    fault_proxy.script([fault])

    with pytest.raises(SaveFailed) as caught:
        storage.save("permanent/object.bin", ContentFile(b"data"))

    assert fault_proxy.counts["PUT"] == 1
    assert caught.value.code == fault.code
    assert caught.value.transient is False
    assert caught.value.attempts == 1
    record = SaveAttempt.objects.get(pk=caught.value.record_id)
    assert record.status == Status.FAILED
    assert [a["delay_ms"] for a in record.attempt_log] == [0]  # no backoff sleep was chosen
    assert record.error_code == fault.code


def test_key_too_long_from_the_real_server_is_permanent(guarded_storage_factory, fault_proxy):
    """SeaweedFS refuses a 300-byte segment itself when our own segment limit is lifted."""
    storage = guarded_storage_factory(max_segment_bytes=1024)
    with pytest.raises(SaveFailed) as caught:
        storage.save("d/" + "k" * 300, ContentFile(b"x"))
    assert caught.value.code == "KeyTooLongError"
    assert fault_proxy.counts["PUT"] == 1


@pytest.mark.parametrize("max_attempts", [1, 3, 5])
def test_requests_on_the_wire_equal_max_attempts(guarded_storage_factory, fault_proxy,
                                                 max_attempts):
    # A deadline far off: on a loaded machine the 10 s default can end retries first.
    storage = guarded_storage_factory(max_attempts=max_attempts, breaker_threshold=0,
                                      retry_deadline=120)
    with fault_proxy.outage_window("slowdown"), pytest.raises(SaveFailed) as caught:
        storage.save("wire/count.bin", ContentFile(b"x" * 100))
    assert fault_proxy.counts["requests"] == max_attempts
    assert caught.value.attempts == max_attempts


def test_botocore_sends_one_request_per_call(guarded_storage_factory):
    storage = guarded_storage_factory(connect_timeout=2, read_timeout=4)
    config = storage.client.meta.config
    assert config.retries["total_max_attempts"] == 1
    assert (config.connect_timeout, config.read_timeout) == (2, 4)


def test_deadline_stops_retries(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory(max_attempts=50, retry_deadline=1.0, backoff_base=0.2,
                                      backoff_cap=0.2, read_timeout=0.3, put_timeout_floor=0.3,
                                      breaker_threshold=0)
    with fault_proxy.outage_window("internal"), pytest.raises(SaveFailed) as caught:
        storage.save("deadline/x.bin", ContentFile(b"x"))
    record = SaveAttempt.objects.get(pk=caught.value.record_id)
    # The deadline, not max_attempts, ended it; its time is in benchmarks/, not asserted here.
    assert 1 <= record.attempts == caught.value.attempts < 50
    assert fault_proxy.counts["requests"] == record.attempts


class OneWayStream(io.RawIOBase):
    """A non-seekable stream, like a request body or a pipe."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, buffer):
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("size", [2048, 1024 * 1024])
def test_non_seekable_content_is_resent_whole(guarded_storage_factory, fault_proxy, read_object,
                                              size):
    storage = guarded_storage_factory(spool_max_memory=64 * 1024)  # 1 MB spools to disk
    fault_proxy.configure(methods={"PUT"})
    fault_proxy.script(["reset_mid_body", "reset_mid_body"])
    body = os.urandom(size)

    name = storage.save("stream/data.bin", File(OneWayStream(body), name="data.bin"))

    assert read_object(name) == body
    assert fault_proxy.counts["PUT"] == 3


@pytest.mark.parametrize("fault", ["reset", error(403, "AccessDenied", "Access Denied")],
                         ids=str)
def test_a_payload_hashed_alongside_its_put_is_recorded_with_its_sha256(
        guarded_storage_factory, fault_proxy, fault):
    """1 MB held in memory is hashed on the helper thread while the PUT is sent: the record of
    a save that succeeded after a retry, and of one that was stashed, has the bytes' SHA-256."""
    storage = guarded_storage_factory(on_failure="defer")
    fault_proxy.configure(methods={"PUT"})
    fault_proxy.script([fault])
    body = os.urandom(1024 * 1024)
    assert storage.spool_max_memory >= len(body) >= payload.HASH_AHEAD_BYTES

    storage.save("hashed/big.bin", ContentFile(body))

    assert records.flush(timeout=30)
    record = SaveAttempt.objects.get()
    assert record.status == (Status.SUCCEEDED if fault == "reset" else Status.DEFERRED)
    assert record.sha256 == hashlib.sha256(body).hexdigest()


def test_seekable_file_is_rewound_for_each_attempt(guarded_storage_factory, fault_proxy,
                                                   read_object, tmp_path):
    path = tmp_path / "upload.bin"
    body = os.urandom(200_000)
    path.write_bytes(body)
    fault_proxy.configure(methods={"PUT"})
    fault_proxy.script(["reset_mid_body", "internal"])
    with path.open("rb") as handle:
        handle.read(1000)  # the caller left the position somewhere in the middle
        name = guarded_storage_factory().save("seek/upload.bin", File(handle))
    assert read_object(name) == body


def test_text_content_is_saved_as_utf8(guarded_storage_factory, fault_proxy, read_object):
    fault_proxy.configure(methods={"PUT"})
    fault_proxy.script(["reset"])
    name = guarded_storage_factory().save("text/note.txt", ContentFile("héllo wörld"))
    assert read_object(name) == "héllo wörld".encode()


def test_available_name_is_chosen_once_not_per_retry(guarded_storage_factory, fault_proxy, s3,
                                                     bucket):
    storage = guarded_storage_factory(file_overwrite=False)
    first = storage.save("same/name.txt", ContentFile(b"one"))
    fault_proxy.configure(methods={"PUT"})
    fault_proxy.script(["reset", "slowdown"])

    second = storage.save("same/name.txt", ContentFile(b"two"))

    assert first == "same/name.txt"
    assert second != first and second.startswith("same/name_")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted([first, second])


def test_location_prefix_is_part_of_the_key(guarded_storage_factory, read_object):
    storage = guarded_storage_factory(location="media")
    name = storage.save("a/b.txt", ContentFile(b"x"))
    assert name == "a/b.txt"
    assert read_object("media/a/b.txt") == b"x"
    assert SaveAttempt.objects.get().key == "media/a/b.txt"


def test_multipart_upload_is_retried_whole(guarded_storage_factory, fault_proxy, read_object):
    from boto3.s3.transfer import TransferConfig

    storage = guarded_storage_factory(transfer_config=TransferConfig(
        multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024,
        use_threads=False))
    fault_proxy.configure(methods={"PUT"}, path_prefix=f"/{storage.bucket_name}/big/")
    fault_proxy.script(["pass", "reset"])  # the second part fails once
    body = os.urandom(11 * 1024 * 1024)
    name = storage.save("big/blob.bin", ContentFile(body))
    assert read_object(name) == body
    assert SaveAttempt.objects.get().attempts == 2


def test_gzip_storage_stores_what_it_recorded(guarded_storage_factory, fault_proxy, s3, bucket):
    import gzip
    import hashlib

    storage = guarded_storage_factory(gzip=True)
    fault_proxy.configure(methods={"PUT"})
    fault_proxy.script(["reset"])
    name = storage.save("g/style.css", ContentFile(b"body { color: red }" * 50))
    stored = s3.get_object(Bucket=bucket, Key=name)
    raw = stored["Body"].read()
    assert stored["ContentEncoding"] == "gzip"
    assert gzip.decompress(raw) == b"body { color: red }" * 50
    assert SaveAttempt.objects.get().sha256 == hashlib.sha256(raw).hexdigest()


def test_an_overlong_content_type_is_stored_and_recorded_cut(guarded_storage_factory, s3,
                                                             bucket):
    content = ContentFile(b"typed")
    content.content_type = "application/x-" + "z" * 300
    name = guarded_storage_factory().save("typed/file.bin", content)
    assert s3.head_object(Bucket=bucket, Key=name)["ContentType"] == content.content_type
    assert SaveAttempt.objects.get().content_type == content.content_type[:255]
