"""save_generated and friends against the real SeaweedFS through the fault proxy."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest
from asgiref.sync import async_to_sync
from botocore.exceptions import ClientError

from storage_guard.contrib.generated import user_messages
from storage_guard.contrib.generated.responses import (
    MAX_PRESIGNED_EXPIRY,
    SaveOutcomeResponse,
    asave_generated,
    delivery_status,
    presigned_url,
    save_generated,
)
from storage_guard.models import SaveAttempt, Status
from storage_guard.saving.classification import S3_CODES
from storage_guard.saving.records import record_alias, update_attempt

pytestmark = pytest.mark.django_db(transaction=True)


def generated_bytes(size: int = 4096) -> bytes:
    """Bytes no other test produces, so a match proves these very bytes travelled."""
    return os.urandom(size)


def record(attempt_id: int) -> SaveAttempt:
    return SaveAttempt.objects.using(record_alias()).get(pk=attempt_id)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # 127.0.0.1 only
        return response.read()


def url_lifetime(url: str) -> float:
    """Seconds a presigned URL stays valid (SigV4 ``X-Amz-Expires`` or SigV2 ``Expires``)."""
    query = parse_qs(urlsplit(url).query)
    if "X-Amz-Expires" in query:
        return int(query["X-Amz-Expires"][0])
    return int(query["Expires"][0]) - time.time()


def fail_every_put(proxy, action="service_unavailable"):
    proxy.configure(**{action: 1.0}, methods={"PUT"})


def assert_person_message(message: str, code: str) -> None:
    assert message
    assert code not in message
    assert "Traceback" not in message and "Error" not in message


# ----------------------------------------------------------------------- success


def test_success_gives_name_url_and_record(guarded_storage_factory, read_object, bucket):
    storage = guarded_storage_factory()
    data = generated_bytes()

    outcome = save_generated(data, "generated/pic.png", storage=storage)

    assert outcome.saved and not outcome.partial
    assert outcome.name == "generated/pic.png"
    assert outcome.content_base64 is None and outcome.error_code is None
    assert outcome.content_type == "image/png" and outcome.filename == "pic.png"
    assert read_object("generated/pic.png") == data
    assert record(outcome.attempt_id).status == Status.SUCCEEDED
    assert record(outcome.attempt_id).sha256 == hashlib.sha256(data).hexdigest()
    assert urlsplit(outcome.url).path == f"/{bucket}/generated/pic.png"
    assert fetch(outcome.url) == data


def test_content_type_is_sent_to_s3(guarded_storage_factory, s3, bucket):
    storage = guarded_storage_factory()

    save_generated(b"col\n1\n", "export/data.bin", storage=storage, content_type="text/csv")

    assert s3.head_object(Bucket=bucket, Key="export/data.bin")["ContentType"] == "text/csv"


def test_transient_failures_are_recovered_inside_the_call(guarded_storage_factory, fault_proxy,
                                                          read_object):
    storage = guarded_storage_factory()
    data = generated_bytes()
    fault_proxy.configure(methods={"PUT"})
    fault_proxy.script(["reset", "internal", "pass"])

    outcome = save_generated(data, "generated/flaky.png", storage=storage)

    assert outcome.saved and not outcome.partial
    assert fault_proxy.counts["PUT"] == 3
    assert record(outcome.attempt_id).attempts == 3
    assert read_object("generated/flaky.png") == data


# ----------------------------------------------------------------------- partial results


def test_final_failure_gives_partial_result_with_exact_bytes(guarded_storage_factory,
                                                              fault_proxy, s3, bucket):
    storage = guarded_storage_factory()
    data = generated_bytes(20_000)
    fail_every_put(fault_proxy)

    outcome = save_generated(data, "generated/lost.png", storage=storage)

    assert outcome.partial and not outcome.saved
    assert base64.b64decode(outcome.content_base64) == data
    assert outcome.url is None and outcome.retry_scheduled
    assert outcome.error_code == "ServiceUnavailable"
    assert outcome.filename == "lost.png" and outcome.content_type == "image/png"
    assert outcome.message == user_messages.message_for("unavailable", kept=True, inline=True)
    assert_person_message(outcome.message, outcome.error_code)
    saved = record(outcome.attempt_id)
    assert saved.status == Status.FAILED and saved.has_stash
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="generated/lost.png")


def test_partial_save_is_later_delivered_with_the_same_bytes(guarded_storage_factory,
                                                             fault_proxy, read_object):
    storage = guarded_storage_factory()
    data = generated_bytes(50_000)
    fail_every_put(fault_proxy)
    outcome = save_generated(data, "generated/later.png", storage=storage)
    assert outcome.partial
    assert delivery_status(outcome.status_token, storage=storage)["delivered"] is False
    fault_proxy.clear()
    storage.breaker.reset()  # the outage is over and the breaker's cooldown has passed

    saved = record(outcome.attempt_id)
    delivered = storage.redeliver(saved)
    assert delivered.ok
    update_attempt(saved, status=Status.RECOVERED)  # what retry_failed_saves does after verify

    assert read_object(outcome.name) == data
    status = delivery_status(outcome.status_token, storage=storage)
    assert status["delivered"] and status["name"] == outcome.name
    assert fetch(status["url"]) == data


def test_deferred_save_is_detected_as_partial(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory(on_failure="defer")
    data = generated_bytes()
    fail_every_put(fault_proxy, "reset")

    outcome = save_generated(data, "generated/deferred.png", storage=storage)

    assert outcome.partial and outcome.retry_scheduled
    assert outcome.error_code == "ConnectionClosed" or outcome.error_code.startswith("Connection")
    assert record(outcome.attempt_id).status == Status.DEFERRED
    assert base64.b64decode(outcome.content_base64) == data
    assert outcome.message == user_messages.message_for("network", kept=True, inline=True)


def test_content_over_the_inline_limit_is_kept_not_inlined(guarded_storage_factory, fault_proxy,
                                                           settings):
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "INLINE_MAX_BYTES": 1000}
    storage = guarded_storage_factory()
    fail_every_put(fault_proxy, "throttle_429")

    outcome = save_generated(generated_bytes(1001), "generated/big.png", storage=storage)

    assert outcome.partial and outcome.retry_scheduled
    assert outcome.content_base64 is None and outcome.size == 1001
    assert outcome.message == user_messages.message_for("throttled", kept=True, inline=False)
    assert "kept" in outcome.message


def test_content_at_the_inline_limit_is_inlined(guarded_storage_factory, fault_proxy, settings):
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "INLINE_MAX_BYTES": 1000}
    storage = guarded_storage_factory()
    fail_every_put(fault_proxy)

    outcome = save_generated(b"x" * 1000, "generated/edge.bin", storage=storage)

    assert base64.b64decode(outcome.content_base64) == b"x" * 1000


def test_timeout_gives_the_timed_out_message(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory(read_timeout=0.3, put_timeout_floor=0.3, max_attempts=2)
    fault_proxy.configure(stall=1.0, methods={"PUT"}, stall_seconds=2)

    outcome = save_generated(generated_bytes(), "generated/slow.png", storage=storage)

    assert outcome.partial and outcome.error_code == "ReadTimeout"
    assert outcome.message == user_messages.message_for("timeout", kept=True, inline=True)


def test_rejected_key_is_partial_without_retry(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory(key_policy="reject", max_key_bytes=64)
    data = generated_bytes()

    outcome = save_generated(data, "generated/" + "x" * 80 + ".png", storage=storage)

    assert outcome.partial and not outcome.retry_scheduled
    assert outcome.error_code == "KeyTooLong"
    assert record(outcome.attempt_id).status == Status.REJECTED
    assert base64.b64decode(outcome.content_base64) == data
    assert "shorter name" in outcome.message and "not been kept" in outcome.message
    assert fault_proxy.counts["PUT"] == 0


def test_failure_before_the_guarded_save_still_returns_the_content(guarded_storage_factory,
                                                                   fault_proxy):
    storage = guarded_storage_factory(file_overwrite=False, max_attempts=2)
    fault_proxy.configure(internal=1.0, methods={"HEAD"})
    data = generated_bytes()

    outcome = save_generated(data, "generated/unchecked.png", storage=storage)

    assert outcome.partial and outcome.attempt_id is None and not outcome.retry_scheduled
    assert base64.b64decode(outcome.content_base64) == data
    assert "download it now" in outcome.message


# ----------------------------------------------------------------------- async and response


def test_async_variant_saves(guarded_storage_factory, read_object):
    storage = guarded_storage_factory()
    data = generated_bytes()

    outcome = async_to_sync(asave_generated)(data, "generated/async.png", storage=storage)

    assert outcome.saved and read_object("generated/async.png") == data


def test_async_variant_gives_partial(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory()
    fail_every_put(fault_proxy)
    data = generated_bytes()

    outcome = async_to_sync(asave_generated)(data, "generated/async-lost.png", storage=storage)

    assert outcome.partial and base64.b64decode(outcome.content_base64) == data


def test_response_is_json_200_and_not_cached(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory()
    fail_every_put(fault_proxy)
    outcome = save_generated(b"abc", "generated/r.txt", storage=storage)

    response = SaveOutcomeResponse(outcome)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    body = json.loads(response.content)
    assert body == outcome.to_dict()
    assert body["saved"] is False and body["partial"] is True and body["content_base64"]


# ----------------------------------------------------------------------- input errors


def test_text_content_is_refused_with_the_type_named(guarded_storage_factory):
    with pytest.raises(TypeError, match="bytes or a binary file object, not str"):
        save_generated("text", "a.txt", storage=guarded_storage_factory())


def test_empty_name_is_refused(guarded_storage_factory):
    with pytest.raises(ValueError, match="non-empty file name"):
        save_generated(b"x", "", storage=guarded_storage_factory())


def test_file_objects_are_read_from_the_start(guarded_storage_factory, read_object):
    import io

    handle = io.BytesIO(b"0123456789")
    handle.seek(5)

    save_generated(handle, "generated/file.bin", storage=guarded_storage_factory())

    assert read_object("generated/file.bin") == b"0123456789"


# ----------------------------------------------------------------------- presigned URLs


def test_presigned_url_uses_expiry_and_fetches_bytes(guarded_storage_factory, read_object):
    storage = guarded_storage_factory(querystring_auth=False)
    storage.save("shared/x.bin", __import__("io").BytesIO(b"payload"))

    url = presigned_url("shared/x.bin", storage=storage, expire=120)

    assert 118 <= url_lifetime(url) <= 120
    assert fetch(url) == b"payload"


def test_presigned_url_default_expiry_comes_from_settings(guarded_storage_factory, settings):
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "PRESIGNED_EXPIRY": 777}

    url = presigned_url("any/key", storage=guarded_storage_factory())

    assert 775 <= url_lifetime(url) <= 777


@pytest.mark.parametrize("expire", [0, -5, MAX_PRESIGNED_EXPIRY + 1])
def test_presigned_url_refuses_expiry_out_of_range(guarded_storage_factory, expire):
    with pytest.raises(ValueError, match=rf"expire={expire} .*1 to {MAX_PRESIGNED_EXPIRY}"):
        presigned_url("k", storage=guarded_storage_factory(), expire=expire)


def test_presigned_url_refuses_non_integer_expiry(guarded_storage_factory):
    with pytest.raises(TypeError, match="whole number of seconds"):
        presigned_url("k", storage=guarded_storage_factory(), expire=1.5)


def test_presigned_url_needs_an_s3_storage(tmp_path):
    from django.core.files.storage import FileSystemStorage

    with pytest.raises(TypeError, match=r"needs an S3 storage.*FileSystemStorage"):
        presigned_url("k", storage=FileSystemStorage(location=tmp_path))


# ----------------------------------------------------------------------- messages


@pytest.mark.parametrize("code", sorted(S3_CODES))
def test_every_classified_code_gets_a_message_without_the_code(code):
    _transient, category = S3_CODES[code]
    reason = user_messages.reason_for(code, category)
    for kept in (True, False):
        for inline in (True, False):
            assert_person_message(user_messages.message_for(reason, kept=kept, inline=inline), code)


@pytest.mark.parametrize(("code", "category", "reason"), [
    ("ReadTimeout", "timeout", "timeout"),
    ("ConnectionReset", "network", "network"),
    ("SlowDown", "throttled", "throttled"),
    ("EntityTooLarge", "validation", "too_large"),
    ("HeadersTooLarge", "validation", "too_large"),
    ("KeyTooLong", "validation", "key_rejected"),
    ("CircuitOpen", "unavailable", "unavailable"),
    ("InternalError", "server", "unavailable"),
    ("AccessDenied", "auth", "unavailable"),
    ("Whatever", "unknown", "unknown"),
])
def test_reason_groups(code, category, reason):
    assert user_messages.reason_for(code, category) == reason


def test_reasons_have_distinct_wording():
    texts = {user_messages.message_for(r, kept=True, inline=True) for r in user_messages.REASONS}
    assert len(texts) == len(user_messages.REASONS)
