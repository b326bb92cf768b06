"""What the real sentry_sdk would send for saves through the fault proxy."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sentry_sdk
from django.core.files.base import ContentFile
from django.db import connection

from storage_guard.errors import SaveFailed, SaveRejected
from storage_guard.integrations import sentry
from storage_guard.models import SaveAttempt
from tests import db_triggers, sentry_support
from tests.testbed.faultproxy import error

sentry_events = sentry_support.sentry_events  # the fixture (an import would trip ruff's F811)

BODY = b"SENTRY-BODY-MARKER-71c3 " * 100
SECRET = "SENTRY-SECRET-MARKER-2b8f"
SIGNATURE = "aa11bb22cc33dd44ee55ff66aa11bb22cc33dd44ee55ff66aa11bb22cc33dd44"
TAGS = ("storage_guard.error_code", "storage_guard.transient", "storage_guard.category",
        "storage_guard.attempts", "storage_guard.storage", "storage_guard.size_bucket",
        "storage_guard.key_bytes_bucket")


@contextlib.contextmanager
def request_scope():
    """What sentry's WSGI/ASGI integrations do around each request."""
    with sentry_sdk.isolation_scope() as scope:
        scope.clear_breadcrumbs()
        yield scope


def guard_tags(event: dict) -> dict:
    return {k: v for k, v in (event.get("tags") or {}).items() if k.startswith("storage_guard")}


def guard_crumbs(event: dict) -> list[dict]:
    crumbs = (event.get("breadcrumbs") or {}).get("values", [])
    return [c for c in crumbs if c.get("category") == "storage_guard"]


@pytest.mark.django_db(transaction=True)
def test_a_failed_save_is_captured_once_with_tags_context_and_fingerprint(
        guarded_storage_factory, fault_proxy, sentry_events):
    storage = guarded_storage_factory(max_attempts=3, secret_key=SECRET)
    fault_proxy.script(["internal", "reset", "internal"])

    with pytest.raises(SaveFailed) as caught:
        storage.save("exports/ünïcode.csv", ContentFile(BODY))

    row = SaveAttempt.objects.get(pk=caught.value.record_id)
    assert len(sentry_events) == 1
    event = sentry_events[0]
    assert event["level"] == "error"
    assert event["fingerprint"] == ["storage_guard", "save", "InternalError"]
    assert event["exception"]["values"][-1]["type"] == "ClientError"
    assert guard_tags(event) == {
        "storage_guard.error_code": "InternalError", "storage_guard.transient": "true",
        "storage_guard.category": "server", "storage_guard.attempts": "3",
        "storage_guard.operation": "save", "storage_guard.storage": "default",
        "storage_guard.size_bucket": "<64KB", "storage_guard.key_bytes_bucket": "<=64"}
    context = event["contexts"]["storage_guard"]
    assert (context["key"], context["key_bytes"]) == (row.key, len(row.key.encode()))
    assert (context["size"], context["sha256"], context["record_id"]) == (
        len(BODY), row.sha256, row.pk)
    assert context["content_type"] == "text/csv"
    assert [a["code"] for a in context["attempts"]] == [
        "InternalError", "ConnectionClosed", "InternalError"]
    assert all(a["duration_ms"] > 0 for a in context["attempts"])
    assert context["request_id"] == row.request_id and len(row.request_id) == 16
    assert context["error_response"]["Error"]["Code"] == "InternalError"
    assert context["error_response"]["HTTPStatusCode"] == 500
    crumbs = guard_crumbs(event)
    assert [c["data"]["error_code"] for c in crumbs] == ["InternalError", "ConnectionClosed"]
    assert [c["data"]["attempt"] for c in crumbs] == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_an_unhandled_save_failed_and_the_error_log_make_no_second_event(
        guarded_storage_factory, fault_proxy, sentry_events):
    storage = guarded_storage_factory(max_attempts=2)
    fault_proxy.script(["slowdown", "slowdown"])

    try:
        storage.save("twice/report.txt", ContentFile(b"x"))
    except SaveFailed as exc:
        sentry_sdk.capture_exception(exc)  # what Django's handler does with an unhandled one

    assert len(sentry_events) == 1
    assert sentry_events[0]["fingerprint"] == ["storage_guard", "save", "SlowDown"]


@pytest.mark.django_db(transaction=True)
def test_tags_stay_with_the_failure_and_breadcrumbs_with_the_request(
        guarded_storage_factory, fault_proxy, sentry_events):
    storage = guarded_storage_factory(max_attempts=2)
    fault_proxy.script(["internal", "internal"])

    with request_scope():
        with pytest.raises(SaveFailed):
            storage.save("leak/check.txt", ContentFile(b"x"))
        sentry_sdk.capture_message("later in the same request")
    with request_scope():
        sentry_sdk.capture_message("the next request")

    failure, same_request, next_request = sentry_events
    assert guard_tags(failure)
    assert guard_tags(same_request) == {} and "storage_guard" not in same_request["contexts"]
    assert same_request.get("fingerprint") is None
    assert len(guard_crumbs(same_request)) == 1  # the retry happened in this request
    assert guard_tags(next_request) == {} and guard_crumbs(next_request) == []


@pytest.mark.django_db(transaction=True)
def test_a_retried_success_leaves_breadcrumbs_and_sends_nothing(
        guarded_storage_factory, fault_proxy, sentry_events):
    storage = guarded_storage_factory()
    fault_proxy.script(["throttle_429", "pass"])

    storage.save("flaky/ok.txt", ContentFile(b"fine"))
    assert sentry_events == []
    sentry_sdk.capture_message("probe")

    crumbs = guard_crumbs(sentry_events[0])
    assert [c["message"].split()[0] for c in crumbs] == ["save_retry", "save_success"]
    assert crumbs[0]["data"]["error_code"] == "TooManyRequests"
    assert crumbs[1]["data"]["codes"] == ["TooManyRequests", "OK"]


@pytest.mark.django_db(transaction=True)
def test_a_first_try_success_does_no_sentry_work(guarded_storage_factory, fault_proxy,
                                                 sentry_events, monkeypatch):
    calls = []
    for name in ("active", "breadcrumb", "capture_failure", "capture_message_throttled"):
        original = getattr(sentry, name)
        monkeypatch.setattr(sentry, name, lambda *a, _o=original, _n=name, **k: calls.append(_n)
                            or _o(*a, **k))
    storage = guarded_storage_factory()

    storage.save("plain/ok.txt", ContentFile(b"fine"))
    sentry_sdk.capture_message("probe")

    assert calls == []
    assert guard_crumbs(sentry_events[0]) == []  # nor through the logging integration


@pytest.mark.django_db(transaction=True)
def test_reads_add_retry_breadcrumbs_but_never_events(guarded_storage_factory, fault_proxy,
                                                      sentry_events):
    storage = guarded_storage_factory()
    storage.save("read/me.txt", ContentFile(b"hello"))
    fault_proxy.script(["reset", "pass"])

    assert storage.exists("read/me.txt")
    with pytest.raises(FileNotFoundError):
        storage.size("read/missing.txt")
    assert sentry_events == []
    sentry_sdk.capture_message("probe")

    crumbs = guard_crumbs(sentry_events[0])
    assert [(c["data"]["operation"], c["data"].get("error_code")) for c in crumbs] == [
        ("exists", "ConnectionClosed"), ("exists", None)]
    assert crumbs[1]["data"]["codes"] == ["ConnectionClosed", "OK"]


@pytest.mark.django_db(transaction=True)
def test_a_refused_save_is_one_warning_event(guarded_storage_factory, fault_proxy,
                                             sentry_events):
    storage = guarded_storage_factory(key_policy="reject", max_key_bytes=40)

    try:
        storage.save("refused/" + "y" * 60 + ".txt", ContentFile(b"data"))
    except SaveRejected as exc:
        sentry_sdk.capture_exception(exc)

    assert len(sentry_events) == 1
    event = sentry_events[0]
    assert (event["level"], event["fingerprint"]) == (
        "warning", ["storage_guard", "save", "KeyTooLong"])
    assert guard_tags(event)["storage_guard.category"] == "validation"
    assert guard_tags(event)["storage_guard.transient"] == "false"
    assert event["contexts"]["storage_guard"]["record_id"] == SaveAttempt.objects.get().pk


@pytest.mark.django_db(transaction=True)
def test_no_body_secret_or_signature_in_any_event(guarded_storage_factory, fault_proxy,
                                                  sentry_events):
    storage = guarded_storage_factory(max_attempts=2, secret_key=SECRET)
    leaky = f"bad sig; url was /k?X-Amz-Signature={SIGNATURE}&X-Amz-Credential=AKIAEXAMPLE"
    fault_proxy.script([error(503, "SlowDown", leaky), error(403, "SignatureDoesNotMatch",
                                                             leaky)])

    with pytest.raises(SaveFailed):
        storage.save("secret/body.bin", ContentFile(BODY))
    storage.url("secret/body.bin")
    sentry_sdk.capture_message("probe")

    sent = json.dumps(list(sentry_events), default=repr)
    assert "SignatureDoesNotMatch" in sent and "[redacted]" in sent
    for secret in (SIGNATURE, SECRET, "AKIAEXAMPLE", BODY[:24].decode()):
        assert secret not in sent


@pytest.mark.django_db(transaction=True)
def test_without_a_client_a_failed_save_still_raises_save_failed(guarded_storage_factory,
                                                                 fault_proxy):
    assert not sentry_sdk.get_client().is_active()
    storage = guarded_storage_factory(max_attempts=2)
    fault_proxy.script(["internal", "internal"])

    with pytest.raises(SaveFailed) as caught:
        storage.save("nosentry/a.txt", ContentFile(b"a"))

    assert caught.value.code == "InternalError"
    assert sentry.active() is None


def test_no_sentry_import_cost_when_it_is_absent(tmp_path):
    """With sentry_sdk absent, failures go through the trace and nothing even tries to import it."""
    attempted = tmp_path / "import-attempted"
    (tmp_path / "sentry_sdk.py").write_text(
        f"open({str(attempted)!r}, 'w').close()\nraise ImportError('sentry_sdk is absent')\n")
    script = """
import sys, django
django.setup()
from botocore.exceptions import ClientError
from storage_guard.saving.telemetry import SaveTrace
from storage_guard.saving.retry_loop import call_with_retries, RetryPolicy

def fail():
    raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"},
                       "ResponseMetadata": {"HTTPStatusCode": 500}}, "PutObject")

trace = SaveTrace(storage_alias="default", operation="save", key="k", key_bytes=1, size=1)
outcome = call_with_retries(fail, RetryPolicy(max_attempts=2, backoff_base=0), listener=trace)
trace.stashed(outcome, "failed")
trace.rejected(type("R", (Exception,), {"code": "KeyTooLong", "category": "validation",
                                        "message": "m"})("m"))
trace.record_failed(RuntimeError("db down"))
print("sentry_sdk" in sys.modules, outcome.classification.code)
"""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "InternalError"]
    assert not attempted.exists(), "something tried to import sentry_sdk"


@pytest.mark.postgres
@pytest.mark.skipif(connection.vendor != "postgresql",
                    reason="runs in the PostgreSQL pass of .ci/run (needs a database trigger)")
@pytest.mark.django_db(transaction=True)
def test_a_record_that_cannot_be_written_is_a_breadcrumb_and_one_message(
        guarded_storage_factory, fault_proxy, sentry_events, read_object, refusing_records):
    storage = guarded_storage_factory()
    names = [storage.save(f"unrecorded/{n}.bin", ContentFile(b"payload %d" % n))
             for n in range(2)]
    sentry_sdk.capture_message("probe")

    assert [read_object(name) for name in names] == [b"payload 0", b"payload 1"]
    assert SaveAttempt.objects.count() == 0
    message, probe = sentry_events
    assert message["fingerprint"] == ["storage_guard", "record_failed", "ProgrammingError"]  # P0001
    assert guard_tags(message)["storage_guard.error_code"] == "ProgrammingError"
    crumbs = guard_crumbs(probe)
    assert [c["data"]["error_code"] for c in crumbs] == ["ProgrammingError"] * 2


@pytest.fixture
def refusing_records():
    """A real database failure: a trigger that refuses SaveAttempt rows for unrecorded/ keys."""
    with db_triggers.refusing_records():
        yield
