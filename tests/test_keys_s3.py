"""Keys and headers against a real SeaweedFS: shortened keys arrive, refused ones never leave.

SeaweedFS stores objects on a filesystem, so like MinIO it refuses a key segment over 255 bytes.
"""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile

from storage_guard.errors import HeadersTooLarge, KeyTooLong
from storage_guard.keys import short_hash, utf8_len
from storage_guard.models import SaveAttempt, Status

pytestmark = pytest.mark.django_db

LONG_NAME = "reports/" + "é" * 1496 + ".txt"  # 3,004 bytes
WIDE_SEGMENT = "docs/" + "字" * 200 + ".pdf"  # one segment of 604 bytes


def test_seaweedfs_itself_refuses_a_long_segment(s3, bucket):
    """The ground truth behind max_segment_bytes: sent unguarded, the wide segment fails."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="KeyTooLongError"):
        s3.put_object(Bucket=bucket, Key=WIDE_SEGMENT, Body=b"x")


def assert_within_limits(key: str) -> None:
    assert utf8_len(key) <= 1024
    assert all(utf8_len(segment) <= 255 for segment in key.split("/"))


@pytest.mark.parametrize("name", [LONG_NAME, WIDE_SEGMENT], ids=["3000-bytes", "600-byte-segment"])
def test_shorten_stores_an_over_long_name_that_reads_back(guarded_storage_factory, read_object,
                                                          name):
    storage = guarded_storage_factory(key_policy="shorten")
    body = f"body of {name[:20]}".encode()

    saved = storage.save(name, ContentFile(body))

    assert saved != name
    assert saved.endswith(f"-{short_hash(name)}{name[-4:]}")
    assert saved.rpartition("/")[0] == name.rpartition("/")[0]
    assert_within_limits(saved)
    assert read_object(saved) == body
    with storage.open(saved) as handle:
        assert handle.read() == body
    assert storage.exists(saved)


def test_shorten_under_a_location_counts_the_location(guarded_storage_factory, read_object):
    storage = guarded_storage_factory(location="tenant-42/uploads")
    saved = storage.save(LONG_NAME, ContentFile(b"x"))
    key = f"tenant-42/uploads/{saved}"
    assert_within_limits(key)
    assert read_object(key) == b"x"


@pytest.mark.parametrize("name", [LONG_NAME, WIDE_SEGMENT], ids=["3000-bytes", "600-byte-segment"])
def test_reject_raises_before_any_request(guarded_storage_factory, fault_proxy, name):
    storage = guarded_storage_factory(key_policy="reject")
    fault_proxy.reset_counters()

    with pytest.raises(KeyTooLong) as caught:
        storage.save(name, ContentFile(b"never sent"))

    assert fault_proxy.counts["requests"] == 0
    assert caught.value.context["key_bytes"] == utf8_len(name)
    assert caught.value.context["limit"] in (255, 1024)
    record = SaveAttempt.objects.get()
    assert record.status == Status.REJECTED
    assert record.error_code == "KeyTooLong"
    assert record.attempts == 0


def test_oversized_metadata_is_refused_before_any_request(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory(object_parameters={"Metadata": {"notes": "x" * 3000}})
    fault_proxy.reset_counters()

    with pytest.raises(HeadersTooLarge, match="over max_metadata_bytes=2048") as caught:
        storage.save("meta/a.txt", ContentFile(b"never sent"))

    assert fault_proxy.counts["requests"] == 0
    assert caught.value.context["largest"][0][0] == "x-amz-meta-notes"
    assert SaveAttempt.objects.get().status == Status.REJECTED


def test_metadata_within_a_raised_limit_is_sent(guarded_storage_factory, read_object, s3, bucket):
    storage = guarded_storage_factory(max_metadata_bytes=4096,
                                      object_parameters={"Metadata": {"notes": "x" * 3000}})
    saved = storage.save("meta/b.txt", ContentFile(b"sent"))
    assert read_object(saved) == b"sent"
    assert s3.head_object(Bucket=bucket, Key=saved)["Metadata"]["notes"] == "x" * 3000


def test_a_model_file_field_gets_a_name_that_fits_its_column(fault_proxy, read_object):
    from django.conf import settings

    from tests.testapp.models import Document

    document = Document(title="long")
    document.file.save("ü" * 300 + ".pdf", ContentFile(b"pdf"), save=True)

    name = Document.objects.get(pk=document.pk).file.name
    assert len(name) <= Document._meta.get_field("file").max_length
    assert name.startswith("docs/ü") and name.endswith(".pdf")
    assert read_object(name, settings.TEST_BUCKET) == b"pdf"
