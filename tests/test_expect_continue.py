"""``Expect: 100-continue`` only on bodies of ``EXPECT_CONTINUE_BYTES`` or more
(storage_guard.saving.expect_continue).

What the storage sends is read on the wire: the fault proxy records each request's headers and
the body bytes it received, and answers ``100 Continue`` itself when asked to, as S3 does.
"""

from __future__ import annotations

import io

import pytest
from django.core.files.base import ContentFile

from storage_guard import conf, options
from storage_guard.checks import Codes
from storage_guard.models import SaveAttempt
from storage_guard.saving import expect_continue

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024


def puts(proxy) -> dict[str, object]:
    """The proxy's PUT records by object key (the path after the bucket)."""
    return {record.path.split("/", 2)[2]: record for record in proxy.records
            if record.method == "PUT"}


def test_a_body_below_the_threshold_is_sent_with_its_headers(guarded_storage_factory,
                                                              fault_proxy, read_object):
    storage = guarded_storage_factory(expect_continue_bytes=4096)
    small, large = b"s" * 4095, b"L" * 4096

    storage.save("expect/small.bin", ContentFile(small))
    storage.save("expect/large.bin", ContentFile(large))

    sent = puts(fault_proxy)
    assert sent["expect/small.bin"].header("Expect") is None
    assert sent["expect/large.bin"].header("Expect") == "100-continue"
    assert [sent[k].body_bytes for k in ("expect/small.bin", "expect/large.bin")] == [4095, 4096]
    assert read_object("expect/small.bin") == small and read_object("expect/large.bin") == large


def test_the_default_threshold_is_two_mebibytes(guarded_storage_factory, fault_proxy,
                                                read_object):
    assert conf.get("EXPECT_CONTINUE_BYTES") == 2 * MiB
    storage = guarded_storage_factory()
    below, at = b"b" * (2 * MiB - 1), b"a" * (2 * MiB)

    storage.save("default/2kb.bin", ContentFile(b"k" * 2048))
    storage.save("default/below.bin", ContentFile(below))
    storage.save("default/at.bin", ContentFile(at))

    sent = puts(fault_proxy)
    assert sent["default/2kb.bin"].header("Expect") is None
    assert sent["default/below.bin"].header("Expect") is None
    assert sent["default/at.bin"].header("Expect") == "100-continue"
    assert read_object("default/below.bin") == below and read_object("default/at.bin") == at


def test_zero_keeps_botocores_handshake_on_every_body(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory(expect_continue_bytes=0)
    storage.save("zero/small.bin", ContentFile(b"z" * 10))
    assert puts(fault_proxy)["zero/small.bin"].header("Expect") == "100-continue"


def test_the_project_setting_applies_to_every_storage(settings, guarded_storage_factory,
                                                      fault_proxy):
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "EXPECT_CONTINUE_BYTES": 0}
    storage = guarded_storage_factory()
    assert storage.expect_continue_bytes == 0
    storage.save("project/small.bin", ContentFile(b"p" * 10))
    assert puts(fault_proxy)["project/small.bin"].header("Expect") == "100-continue"


@pytest.mark.parametrize("fault", ["slowdown", "internal", "reset_mid_body"])
def test_a_small_put_sent_without_the_handshake_is_still_classified_and_retried(
        guarded_storage_factory, fault_proxy, read_object, fault):
    """Without the interim answer the body travels with the headers: a server error after it,
    or a connection reset in the middle of it, is still the transient fault it was, retried
    until the bytes arrive, and recorded by its code."""
    storage = guarded_storage_factory(max_attempts=3, backoff_base=0.01, backoff_cap=0.02)
    fault_proxy.configure(methods={"PUT"}, path_prefix="/")
    fault_proxy.script([fault])
    body = b"r" * 3000

    storage.save("retried/small.bin", ContentFile(body))

    first, second = [r for r in fault_proxy.records if r.method == "PUT"]
    assert first.header("Expect") is None and first.action == fault
    assert second.action == "pass" and second.body_bytes == len(body)
    assert read_object("retried/small.bin") == body
    record = SaveAttempt.objects.get(name="retried/small.bin")
    assert record.attempts == 2
    # a reset reaches the client as the connection closing under its read (or, had the body
    # still been on its way, as a reset under its write)
    expected = {"slowdown": {"SlowDown"}, "internal": {"InternalError"},
                "reset_mid_body": {"ConnectionClosed", "ConnectionReset"}}[fault]
    assert record.attempt_log[0]["code"] in expected


class Unmeasurable(io.RawIOBase):
    """A stream whose length cannot be known (not seekable, no len)."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


@pytest.mark.parametrize(("body", "kept"), [
    (b"x" * 99, False), (io.BytesIO(b"x" * 99), False), (b"x" * 100, True),
    (io.BytesIO(b"x" * 100), True), (Unmeasurable(), True)])
def test_only_a_body_known_to_be_below_the_threshold_loses_the_header(body, kept):
    params = {"headers": {"Expect": "100-continue", "Content-Type": "a/b"}, "body": body}
    expect_continue._drop_for_small_bodies(100, params)
    assert ("Expect" in params["headers"]) is kept
    assert params["headers"]["Content-Type"] == "a/b"


@pytest.mark.parametrize("params", [{}, {"headers": {}}, {"headers": {"X": "1"}, "body": b""}])
def test_a_request_without_the_header_is_left_alone(params):
    before = repr(params)
    expect_continue._drop_for_small_bodies(100, params)
    assert repr(params) == before


def test_a_negative_threshold_is_refused_by_the_options_check():
    found = options.problems({"expect_continue_bytes": -1})
    assert [(p.name, p.check_id, p.keys) for p in found] == [
        ("OPTION_MINIMUM", Codes.OPTION_MINIMUM, ("expect_continue_bytes",))]
    assert found[0].fields["minimum"] == 0
