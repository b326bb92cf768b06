"""A save that finally fails loses nothing: record, stash, and reads served from the stash."""

import os

import pytest
from django.core.files.base import ContentFile

from storage_guard.errors import SaveFailed
from storage_guard.models import SaveAttempt, StashBackend, StashedPayload, Status
from storage_guard.saving import stash

pytestmark = pytest.mark.django_db


def test_raise_mode_gives_savefailed_with_context_and_stashes_bytes(guarded_storage_factory,
                                                                    fault_proxy):
    storage = guarded_storage_factory(max_attempts=3, breaker_threshold=0)
    body = os.urandom(3000)
    with fault_proxy.outage_window("slowdown"), pytest.raises(SaveFailed) as caught:
        storage.save("lost/never.bin", ContentFile(body))

    exc = caught.value
    assert (exc.code, exc.transient, exc.category, exc.attempts) == ("SlowDown", True,
                                                                     "throttled", 3)
    assert "SlowDown" in str(exc) and "lost/never.bin" in str(exc)
    record = SaveAttempt.objects.get(pk=exc.record_id)
    assert record.status == Status.FAILED
    assert record.stash_backend == StashBackend.DATABASE
    assert bytes(StashedPayload.objects.get(attempt=record).data) == body
    assert stash.read(record) == body
    assert [a["code"] for a in record.attempt_log] == ["SlowDown"] * 3
    assert record.request_id  # the proxy's x-amz-request-id reached the record


def test_savefailed_is_an_oserror_callers_already_catch(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory(max_attempts=1)
    fault_proxy.script(["internal"])
    with pytest.raises(OSError):
        storage.save("x.bin", ContentFile(b"x"))


def test_defer_mode_returns_the_name_and_serves_reads_from_the_stash(guarded_storage_factory,
                                                                     fault_proxy, read_object):
    storage = guarded_storage_factory(on_failure="defer", max_attempts=2, breaker_threshold=0)
    body = os.urandom(4096)
    fault_proxy.configure(methods={"PUT"})
    fault_proxy.script(["reset", "reset"])

    name = storage.save("deferred/photo.jpg", ContentFile(body))

    assert name == "deferred/photo.jpg"
    record = SaveAttempt.objects.get()
    assert record.status == Status.DEFERRED
    assert storage.exists(name)
    assert storage.size(name) == 4096
    with storage.open(name) as handle:
        assert handle.read() == body

    outcome = storage.redeliver(record)
    assert outcome.ok
    assert read_object(name) == body


def test_large_payload_goes_to_the_stash_storage(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory(max_attempts=1, stash_storage="stash",
                                      stash_db_max_bytes=1024)
    body = os.urandom(50_000)
    fault_proxy.script(["internal"])
    with pytest.raises(SaveFailed) as caught:
        storage.save("big/one.bin", ContentFile(body))
    record = SaveAttempt.objects.get(pk=caught.value.record_id)
    assert record.stash_backend == StashBackend.STORAGE
    assert record.stash_location.startswith("stash:storage_guard/stash/")
    assert not StashedPayload.objects.exists()
    assert stash.read(record) == body
    stash.free(record)
    with pytest.raises(FileNotFoundError):
        stash.read(record)


def test_free_drops_database_bytes_and_keeps_the_record(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory(max_attempts=1)
    fault_proxy.script(["internal"])
    with pytest.raises(SaveFailed) as caught:
        storage.save("f.bin", ContentFile(b"abc"))
    record = SaveAttempt.objects.get(pk=caught.value.record_id)
    stash.free(record)
    record.refresh_from_db()
    assert record.stash_backend == "" and not StashedPayload.objects.exists()


def test_raise_mode_does_not_serve_reads_from_the_stash(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory(max_attempts=1)
    fault_proxy.script(["internal"])
    with pytest.raises(SaveFailed):
        storage.save("r.bin", ContentFile(b"abc"))
    assert storage.exists("r.bin") is False
    with pytest.raises(FileNotFoundError):
        storage.open("r.bin")


def test_save_with_record_tells_a_deferred_save_from_a_stored_one(guarded_storage_factory,
                                                                  fault_proxy):
    storage = guarded_storage_factory(on_failure="defer", max_attempts=1)
    name, stored = storage.save_with_record("same/key.bin", ContentFile(b"v1"))
    fault_proxy.script(["internal"])
    again, deferred = storage.save_with_record("same/key.bin", ContentFile(b"v1"))
    assert name == again == "same/key.bin"
    assert (stored.status, deferred.status) == (Status.SUCCEEDED, Status.DEFERRED)
    assert stored.pk != deferred.pk and stored.sha256 == deferred.sha256
