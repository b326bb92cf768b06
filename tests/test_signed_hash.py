"""The record's SHA-256 taken from the PUT's SigV4 signature (storage_guard.saving.signed_hash).

Saves go to the real SeaweedFS through the fault proxy, on an ``http://`` endpoint: botocore
signs the body there, so the storage adopts that hash instead of hashing the bytes again. With
payload signing turned off the request carries ``UNSIGNED-PAYLOAD`` and the storage hashes the
bytes itself: either way the record holds the SHA-256 of exactly the bytes sent.
"""

from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace

import pytest
from django.core.files.base import ContentFile

from storage_guard.saving import payload, signed_hash

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hashes_here(monkeypatch):
    """Counts the payload hashes storage_guard computes itself (not botocore's)."""
    calls = []
    real = payload._sha256_hex

    def counting(data):
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr(payload, "_sha256_hex", counting)
    return calls


@pytest.mark.parametrize("size", [0, 1, 2048, 300 * 1024, 1024 * 1024])
def test_a_signed_put_gives_the_record_its_hash(guarded_storage_factory, read_object, bucket,
                                                 hashes_here, size):
    storage = guarded_storage_factory()
    assert storage.signs_payload  # http:// endpoint
    body = os.urandom(size)
    name, record = storage.save_with_record(f"signed/{size}.bin", ContentFile(body))
    assert record.sha256 == hashlib.sha256(body).hexdigest()
    assert read_object(storage._normalize_name(name), bucket) == body
    assert hashes_here == []  # the signature's hash was taken: the bytes were not hashed again


def test_an_unsigned_put_is_hashed_here(guarded_storage_factory, hashes_here):
    from botocore.config import Config

    storage = guarded_storage_factory(
        client_config=Config(s3={"payload_signing_enabled": False}))
    assert not storage.signs_payload
    body = os.urandom(2048)
    _name, record = storage.save_with_record("unsigned/a.bin", ContentFile(body))
    assert record.sha256 == hashlib.sha256(body).hexdigest()
    assert hashes_here == [2048]  # UNSIGNED-PAYLOAD carries no hash: computed here, once


def test_a_failed_save_stashes_under_the_true_hash(guarded_storage_factory, fault_proxy):
    from storage_guard.models import SaveAttempt

    storage = guarded_storage_factory(on_failure="defer", max_attempts=2)
    fault_proxy.script(["internal", "internal"])
    body = os.urandom(4096)
    storage.save("stashed/a.bin", ContentFile(body))
    record = SaveAttempt.objects.get(key=storage._normalize_name("stashed/a.bin"))
    assert record.sha256 == hashlib.sha256(body).hexdigest()


def test_only_a_hex_sha256_is_ever_taken():
    """The header is made by botocore in this process, before any byte reaches a server, so no
    server or proxy here can send these values: the hook is handed requests that carry them."""
    for value, taken in (("a" * 64, "a" * 64), ("UNSIGNED-PAYLOAD", None),
                         ("STREAMING-UNSIGNED-PAYLOAD-TRAILER", None), ("A" * 64, None),
                         ("a" * 63, None), (b"b" * 64, "b" * 64), (b"\xff" * 64, None),
                         (None, None), (64, None)):  # never raises inside botocore's PUT
        signed_hash.expect()
        signed_hash._note(SimpleNamespace(headers={signed_hash.HEADER: value}))
        assert signed_hash.take() == taken, value
        assert signed_hash.take() is None  # taken once


def test_an_adopted_hash_never_replaces_a_known_one():
    item = payload.Payload(data=b"abc", size=3)
    item.adopt_sha256("f" * 64)
    assert item.sha256 == "f" * 64
    item.adopt_sha256("e" * 64)
    assert item.sha256 == "f" * 64
    fresh = payload.Payload(data=b"abc", size=3)
    fresh.adopt_sha256(None)
    assert fresh.sha256 == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize(("endpoint", "use_ssl", "s3", "expected"), [
    ("http://minio:9000", True, None, True),
    ("https://s3.example.com", True, None, False),
    (None, True, None, False),
    (None, False, None, True),
    ("https://s3.example.com", True, {"payload_signing_enabled": True}, True),
    ("http://minio:9000", True, {"payload_signing_enabled": False}, False),
])
def test_which_storages_sign_their_payload(endpoint, use_ssl, s3, expected):
    from botocore.config import Config

    from storage_guard.storage import GuardedS3Storage

    storage = GuardedS3Storage(alias="sign-check", bucket_name="sign-check", endpoint_url=endpoint,
                               use_ssl=use_ssl,
                               client_config=Config(s3=s3) if s3 else None,
                               region_name="us-east-1")
    assert storage.signs_payload is expected
