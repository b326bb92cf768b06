"""A deferred save stays deliverable until it is delivered or deleted: delete cancels it, and a
storage built outside ``settings.STORAGES`` is rebuilt by replay from its record (no secrets)."""

from __future__ import annotations

import json
import os
import uuid
from io import StringIO

import pytest
from botocore.config import Config
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.management import call_command
from django.core.management.base import CommandError

from storage_guard.models import SaveAttempt, StashBackend, StashedPayload, Status
from storage_guard.storage import GuardedS3Storage
from tests.conftest import TEST_KEY

pytestmark = pytest.mark.django_db(transaction=True)


def deferring_storage(**options) -> GuardedS3Storage:
    return GuardedS3Storage(**{**settings.STORAGES["default"]["OPTIONS"], "on_failure": "defer",
                               "max_attempts": 1, "breaker_threshold": 0, **options})


def defer_one(fault_proxy, storage, body: bytes) -> tuple[str, SaveAttempt]:
    name = f"pending-{uuid.uuid4().hex[:10]}/file.bin"
    with fault_proxy.outage_window("internal"):
        assert storage.save(name, ContentFile(body)) == name
    record = SaveAttempt.objects.get(name=name)
    assert record.status == Status.DEFERRED
    return name, record


def retry_failed_saves() -> str:
    out = StringIO()
    call_command("retry_failed_saves", stdout=out)
    return out.getvalue()


# --------------------------------------------------------------------- delete cancels
@pytest.mark.parametrize("where", ["database", "stash storage"])
def test_delete_cancels_a_deferred_save_and_frees_its_stash(fault_proxy, s3, where):
    options = {"stash_storage": "stash", "stash_db_max_bytes": 1024} \
        if where == "stash storage" else {}
    storage = deferring_storage(**options)
    name, record = defer_one(fault_proxy, storage, os.urandom(4096))
    stash_location = record.stash_location
    assert storage.exists(name)  # served from the stash until delivered ...

    storage.delete(name)  # ... or deleted

    record.refresh_from_db()
    assert record.status == Status.CANCELLED
    assert record.stash_backend == StashBackend.NONE and record.next_retry_at is None
    assert not StashedPayload.objects.filter(attempt=record).exists()
    if stash_location:
        alias, stash_name = stash_location.split(":", 1)
        assert not storages[alias].exists(stash_name)
    assert_nothing_comes_back(storage, name, fault_proxy, s3)


def assert_nothing_comes_back(storage, name: str, fault_proxy, s3) -> None:
    """A deleted name stays deleted: no read finds it, no retry uploads it."""
    assert storage.exists(name) is False
    with pytest.raises(FileNotFoundError):
        storage.open(name)
    fault_proxy.reset_counters()
    assert "0 delivered, 0 failed again, 0 skipped" in retry_failed_saves()
    assert fault_proxy.counts["PUT"] == 0
    assert s3.list_objects_v2(Bucket=settings.TEST_BUCKET, Prefix=name)["KeyCount"] == 0


def test_delete_leaves_other_keys_pending(fault_proxy):
    storage = deferring_storage()
    kept_name, kept = defer_one(fault_proxy, storage, b"kept")
    gone_name, gone = defer_one(fault_proxy, storage, b"gone")
    storage.delete(gone_name)
    kept.refresh_from_db()
    gone.refresh_from_db()
    assert (kept.status, gone.status) == (Status.DEFERRED, Status.CANCELLED)
    assert storage.exists(kept_name)


# --------------------------------------------------------------------- storages outside STORAGES
def unlisted_storage(bucket: str, endpoint_url: str, **options) -> GuardedS3Storage:
    return GuardedS3Storage(bucket_name=bucket, endpoint_url=endpoint_url, access_key=TEST_KEY,
                            secret_key=TEST_KEY, region_name="us-east-1", on_failure="defer",
                            max_attempts=1, breaker_threshold=0, **options)


def test_a_storage_outside_storages_is_described_without_secrets_and_replayed(
        fault_proxy, bucket, read_object, settings):
    storage = unlisted_storage(bucket, fault_proxy.endpoint_url)
    assert storage.storage_alias == ""
    body = os.urandom(3000)
    name, record = defer_one(fault_proxy, storage, body)

    assert record.storage_alias == ""
    assert record.storage_spec["backend"] == "storage_guard.storage.GuardedS3Storage"
    assert record.storage_spec["options"]["bucket_name"] == bucket
    assert TEST_KEY not in json.dumps(record.storage_spec)  # no credentials in the record
    # Replay builds it again; the credentials come from settings, as django-storages reads them.
    settings.AWS_S3_ACCESS_KEY_ID = settings.AWS_S3_SECRET_ACCESS_KEY = TEST_KEY

    assert "1 delivered, 0 failed again, 0 skipped" in retry_failed_saves()

    assert read_object(name) == body
    assert SaveAttempt.objects.get(pk=record.pk).status == Status.RECOVERED


def test_a_storage_in_storages_is_found_by_its_options():
    options = settings.STORAGES["default"]["OPTIONS"]
    unnamed = {key: value for key, value in options.items() if key != "alias"}
    settings_storages = {**settings.STORAGES, "unnamed": {
        "BACKEND": "storage_guard.storage.GuardedS3Storage", "OPTIONS": unnamed}}
    from django.test import override_settings

    with override_settings(STORAGES=settings_storages):
        storage = GuardedS3Storage(**unnamed)
    assert storage.storage_alias == "unnamed" and storage.storage_spec is None


def test_an_unrecordable_storage_outside_storages_is_refused_at_construction(fault_proxy,
                                                                              bucket):
    with pytest.raises(ImproperlyConfigured) as caught:
        unlisted_storage(bucket, fault_proxy.endpoint_url, client_config=Config())
    assert "client_config" in str(caught.value) and "settings.STORAGES" in str(caught.value)


def test_retry_exits_non_zero_when_a_save_can_never_be_delivered(fault_proxy, bucket):
    storage = unlisted_storage(bucket, fault_proxy.endpoint_url)
    _name, record = defer_one(fault_proxy, storage, b"orphaned")
    SaveAttempt.objects.filter(pk=record.pk).update(storage_spec=None)  # recorded before 0002
    out = StringIO()

    with pytest.raises(CommandError) as caught:
        call_command("retry_failed_saves", stdout=out)

    assert caught.value.returncode == 1
    assert "1 save(s) skipped that can never be delivered" in str(caught.value)
    assert f"skipped #{record.pk}: undeliverable" in out.getvalue()
    assert SaveAttempt.objects.get(pk=record.pk).status == Status.DEFERRED
