"""Hostile input: a corpus of names, content types and headers thrown at every way in.

Each save goes through the real storage, fault proxy and SeaweedFS; uploads go through the
example project's view; every admin page is fetched. What must hold for all of them:

* only ``SaveRejected``/``SaveFailed`` subclasses reach the caller, and every save has a record;
* the breaker stays closed, and ordinary saves afterwards still reach the server (counted at
  the proxy);
* no admin page answers 500 (the test client re-raises any view exception);
* no payload byte, credential or signature appears in any log record or Sentry event (the real
  sentry_sdk with ``StorageGuardIntegration``, events kept in memory), and no log line is forged.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import threading

import pytest
import sentry_sdk
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.urls import reverse

from storage_guard.contrib.generated.responses import SaveOutcome, delivery_status, save_generated
from storage_guard.errors import InvalidHeader, InvalidKey, SaveFailed, SaveRejected
from storage_guard.integrations.sentry import StorageGuardIntegration
from storage_guard.models import SaveAttempt, StashedPayload, Status
from storage_guard.saving.payload import Payload
from storage_guard.saving.records import insert_attempt, record_alias
from tests.sentry_support import memory_sentry
from tests.test_example_project import example_app  # noqa: F401 - the fixture
from tests.testbed.faultproxy import error

pytestmark = pytest.mark.django_db(transaction=True)

MARKER = b"HOSTILE-PAYLOAD-9d41e7"
PAYLOAD = MARKER + os.urandom(64).hex().encode() + MARKER
SECRET = "HOSTILE-SECRET-KEY-5c2a"
SIGNATURE = "f00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeed"
STRING_TO_SIGN = "AWS4-HMAC-SHA256\n20260101T000000Z\nSTRING-TO-SIGN-MARKER"
CANONICAL = "PUT\n/CANONICAL-REQUEST-MARKER\n"
ACCESS_KEY_ID = "AKIAHOSTILEMARKER777"
SECRETS = (SECRET, SIGNATURE, "STRING-TO-SIGN-MARKER", "CANONICAL-REQUEST-MARKER", ACCESS_KEY_ID)
FORGED = "\nCRITICAL storage_guard: admin password reset OK"

NAMES = [
    "plain/ok.txt",
    "nul/a\x00b.txt",
    "surrogate/\ud800.txt",
    "surrogate/x\udfffy.bin",
    f"forged/key{FORGED}.txt",
    "cr/carriage\rreturn.txt",
    "escape/\x1b[31mred.txt",
    "del/\x7f.txt",
    "nel/\x85.txt",
    "tab/a\tb.txt",
    "rtl/invoice\u202egpj.exe",
    "bidi/\u2066isolate\u2069.txt",
    "bom/\ufeffbom.txt",
    "zwj/a\u200db.txt",
    "emoji/😀 face.png",
    'quotes/he said "hi" <b>.html',
    "percent/%00%0a.txt",
    "long/" + "a" * 100_000 + ".txt",
    "long/" + "é" * 50_000 + ".txt",
    "long/" + "字" * 34_000,
    ("deep/" * 300) + "x.txt",
]
CONTENT_TYPES = [
    "image/png\nx: y",
    "text/plain\r\nX-Injected: 1",
    "text/plain\x00",
    b"\x89PNG\r\n\x1a\n",
    "\u202etext/plain",
    "bild/jpeg-é",
    "text/plain;\tcharset=utf-8",
    "x" * 9000,
    "application/" + "x" * 200,
]
PARAMS = [
    {"CacheControl": "max-age=1\r\nSet-Cookie: a=b"},
    {"ContentDisposition": 'attachment; filename="a\nb"'},
    {"ContentDisposition": "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"},
    {"ContentEncoding": "gzip\n"},
    {"ContentLanguage": "de\x00"},
    {"Metadata": {"note": "café"}},
    {"Metadata": {"bad name": "x"}},
    {"Metadata": {"ok": "\x01"}},
    {"Metadata": {"n": "x" * 2047}},  # 1 + 2047 = 2048 bytes: exactly the limit
    {"Metadata": {"n": "x" * 2048}},  # one byte over
    {"Metadata": {f"k{i}": "v" * 60 for i in range(30)}},
    {"CacheControl": "x" * 7500},  # over the header section limit
    {"StorageClass": b"STANDARD"},
]


# ----------------------------------------------------------------------- fixtures


@pytest.fixture
def hostile_storage(guarded_storage_factory):
    """Five transient failures would open the breaker: low enough that any counted would. Once
    open it stays open for the test (no half-open after the default first second, which a
    loaded machine can spend between the failure and the assertion)."""
    return guarded_storage_factory(secret_key=SECRET, max_attempts=3, breaker_threshold=3,
                                   breaker_window=0, breaker_cooldown=300,
                                   breaker_initial_cooldown=300)


@pytest.fixture
def guard_sentry():
    """The real SDK with StorageGuardIntegration and the default integrations (logging too)."""
    with memory_sentry(integrations=[StorageGuardIntegration()],
                       include_local_variables=True) as transport:
        yield transport


@pytest.fixture
def all_logs(caplog):
    """Every record storage_guard writes at DEBUG and above, and any other logger's at INFO.

    (botocore logs whole requests, signatures included, at DEBUG: a project's choice.)"""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="storage_guard")
    return caplog


def assert_nothing_private(caplog, transport):
    """No payload byte or secret in any log record (message, extras, traceback) or in any
    event as the SDK serialises it for sending (which also proves every event can be sent)."""
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    texts = [formatter.format(r) + json.dumps(vars(r), default=repr) for r in caplog.records]
    texts += [envelope.serialize().decode("utf-8") for envelope in transport.envelopes]
    marker = MARKER.decode()
    for text in texts:
        assert marker not in text
        for secret in SECRETS:
            assert secret not in text, secret
    lines = [line for r in caplog.records for line in r.getMessage().splitlines()]
    assert not [line for line in lines if line.startswith("CRITICAL storage_guard")]


def assert_breaker_closed(storage):
    assert storage.breaker.state() == "closed"
    assert storage.breaker.snapshot().failures == 0


def upload(content_type) -> ContentFile:
    content = ContentFile(PAYLOAD)
    content.content_type = content_type
    return content


def hostile_saves():
    """(name, content_type, object_parameters) triples covering the whole corpus."""
    yield from ((name, "text/plain", {}) for name in NAMES)
    yield from ((f"types/{i}.bin", ct, {}) for i, ct in enumerate(CONTENT_TYPES))
    yield from ((f"params/{i}.bin", "text/plain", p) for i, p in enumerate(PARAMS))


def save_one(storage, fault_proxy, name, content_type, params):
    """Save through ``storage``; return ``(record, error, puts sent)``."""
    storage.object_parameters = params
    before = fault_proxy.counts["PUT"]
    try:
        _saved, record = storage.save_with_record(name, upload(content_type))
    except SaveRejected as exc:
        error = exc
        record = SaveAttempt.objects.using(record_alias()).get(pk=exc.context["record_id"])
    else:
        error = None
    return record, error, fault_proxy.counts["PUT"] - before


# ----------------------------------------------------------------------- save()


def test_the_corpus_through_save(hostile_storage, fault_proxy, all_logs, guard_sentry):
    outcomes = []
    for name, content_type, params in hostile_saves():
        record, error, puts = save_one(hostile_storage, fault_proxy, name, content_type, params)
        assert record is not None, name[:80]
        assert_breaker_closed(hostile_storage)
        if error is None:
            assert record.status == Status.SUCCEEDED and puts == 1
        else:
            assert record.status == Status.REJECTED and record.attempts == 0 and puts == 0
            assert record.error_code == error.code and record.transient is False
            assert "\n" not in str(error) and "\x00" not in str(error)
        outcomes.append((name, content_type, params, error))

    rejected = {(n[:40], str(ct)[:40], json.dumps(p, default=repr)[:40]): e.code
                for n, ct, p, e in outcomes if e is not None}
    codes = set(rejected.values())
    assert codes == {"InvalidKey", "InvalidHeader", "HeadersTooLarge", "KeyTooLong"}, rejected
    by_name = {n: e for n, _ct, _p, e in outcomes if _ct == "text/plain" and not _p}
    for name in ("nul/a\x00b.txt", "surrogate/\ud800.txt", f"forged/key{FORGED}.txt",
                 "del/\x7f.txt", "tab/a\tb.txt"):
        assert isinstance(by_name[name], InvalidKey), name
    for name in ("plain/ok.txt", "rtl/invoice\u202egpj.exe", "emoji/😀 face.png",
                 'quotes/he said "hi" <b>.html', "long/" + "a" * 100_000 + ".txt"):
        assert by_name[name] is None, name[:60]
    header_errors = [e for _n, _ct, _p, e in outcomes if isinstance(e, InvalidHeader)]
    assert len(header_errors) >= 14
    assert all("at position" in str(e) or "must be" in str(e) or "name has" in str(e)
               for e in header_errors)
    assert_nothing_private(all_logs, guard_sentry)

    # The storage still works: ordinary saves reach the server, one PUT each.
    hostile_storage.object_parameters = {}
    fault_proxy.reset_counters()
    for number in range(3):
        hostile_storage.save(f"after/ordinary-{number}.txt", ContentFile(b"ordinary"))
    assert fault_proxy.counts["PUT"] == 3
    assert_breaker_closed(hostile_storage)


def test_every_rejected_record_is_stored_safely(hostile_storage, fault_proxy):
    """NUL and lone surrogates are escaped in the row, long text cut to its column."""
    rows = {}
    for name, content_type in (("nul/a\x00b.txt", "text/plain"), ("s/\ud800.txt", "a\x00b"),
                               ("ok/ct.bin", "text/" + "\x00" * 300)):
        record, error, _puts = save_one(hostile_storage, fault_proxy, name, content_type, {})
        rows[name] = SaveAttempt.objects.using(record_alias()).get(pk=record.pk)
        assert error is not None
    assert rows["nul/a\x00b.txt"].name == "nul/a\\x00b.txt"
    assert rows["s/\ud800.txt"].name == "s/\\ud800.txt"
    assert len(rows["ok/ct.bin"].content_type) == 255
    assert "\x00" not in rows["ok/ct.bin"].content_type


def test_insert_attempt_takes_anything(db):
    """The sanitizer is in insert_attempt: no value can make the INSERT fail."""
    record = insert_attempt(
        storage_alias="s\x00" * 80, bucket="b", name="\ud800\x00" * 10, key="k\x00\udc00",
        key_bytes=3, size=None, sha256="", content_type="\x00" * 1000, write_params={
            "Metadata": {"k\x00": "v\ud800"}, "Body": b"\x00raw bytes", "\ud800": ["\x00"]},
        status=Status.REJECTED, error_code="X" * 200, error_message="m\x00\ud800",
        error_response={"Error": {"Message": "\x00"}}, attempt_log=[{"code": "\ud800"}])
    row = SaveAttempt.objects.using(record_alias()).get(pk=record.pk)
    assert row.name == "\\ud800\\x00" * 10 and row.key == "k\\x00\\udc00"
    assert len(row.storage_alias) == 100 and len(row.error_code) == 64
    assert row.write_params == {"Metadata": {"k\\x00": "v\\ud800"}, "Body": "<10 bytes>",
                                "\\ud800": ["\\x00"]}
    assert row.error_message == "m\\x00\\ud800" and row.attempt_log == [{"code": "\\ud800"}]


def test_path_traversal_is_refused_by_django_before_any_request(hostile_storage, fault_proxy):
    """Django's own ``validate_file_name`` refuses it, as with plain django-storages."""
    with pytest.raises(SuspiciousFileOperation):
        hostile_storage.save("../../etc/passwd", ContentFile(PAYLOAD))
    assert fault_proxy.counts["PUT"] == 0


# ----------------------------------------------------------------------- the breaker


def test_requests_the_http_layer_refuses_never_count_toward_the_breaker(hostile_storage,
                                                                        fault_proxy):
    """Bypass the validation: http.client refuses the header, nothing is sent, nothing counts.

    Without the classification of a plain ``HTTPClientError`` as ``RequestNotSent`` every one
    of these would be five transient attempts and the breaker (threshold 3) would open.
    """
    for number in range(10):
        payload = Payload.from_bytes(PAYLOAD)
        params = {"ContentType": f"image/png\nx-forged-{number}: y"}
        trace = hostile_storage._trace("save", f"direct/{number}.bin", payload, params)
        outcome = hostile_storage._run_put(f"direct/{number}.bin", payload, params, trace)
        payload.close()
        assert outcome.classification.code == "RequestNotSent"
        assert outcome.classification.transient is False
        assert outcome.attempt_count == 1
    assert fault_proxy.counts["PUT"] == 0
    assert_breaker_closed(hostile_storage)
    hostile_storage.save("after/direct.txt", ContentFile(b"ordinary"))
    assert fault_proxy.counts["PUT"] == 1


def test_a_real_connection_error_still_counts(hostile_storage, fault_proxy):
    """The other side of the line: resets are the endpoint's failures and open the breaker."""
    fault_proxy.script(["reset"] * 3)
    with pytest.raises(SaveFailed) as caught:
        hostile_storage.save("outage/x.bin", ContentFile(b"x"))
    assert caught.value.transient is True
    assert hostile_storage.breaker.state() == "open"
    hostile_storage.breaker.reset()


# ----------------------------------------------------------------------- save_generated()


def test_the_corpus_through_save_generated(hostile_storage, fault_proxy, all_logs, guard_sentry,
                                           settings):
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "INLINE_MAX_BYTES": 64}
    for name, content_type, params in hostile_saves():
        hostile_storage.object_parameters = params
        outcome = save_generated(PAYLOAD, name, storage=hostile_storage,
                                 content_type=content_type if isinstance(content_type, str)
                                 else None)
        assert isinstance(outcome, SaveOutcome)
        assert outcome.attempt_id is not None and outcome.status_token
        record = SaveAttempt.objects.using(record_alias()).get(pk=outcome.attempt_id)
        if outcome.partial:
            assert record.status == Status.REJECTED
            assert outcome.retry_scheduled is False
            assert "nothing is lost" not in outcome.message.lower()
            assert "try again in a few minutes" not in outcome.message
            assert outcome.content_base64 is None  # over INLINE_MAX_BYTES
        assert_breaker_closed(hostile_storage)
    assert_nothing_private(all_logs, guard_sentry)


# ----------------------------------------------------------------------- uploads through a view


def multipart(filename: bytes, content_type: bytes) -> tuple[bytes, str]:
    """A raw multipart body: Django's parser keeps a lone LF or NUL in the part headers."""
    boundary = "HostileBoundary7x"
    body = (b"--" + boundary.encode() + b"\r\n"
            b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
            b"Content-Type: " + content_type + b"\r\n\r\n" + PAYLOAD + b"\r\n"
            b"--" + boundary.encode() + b"--\r\n")
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.urls("example_project.urls")
def test_hostile_uploads_through_the_example_view(client, example_app, all_logs,  # noqa: F811
                                                  guard_sentry):
    storage = storages["default"]
    storage.breaker.reset()
    for filename, content_type in [
            (b"a.png", b"image/png\nx: y"), (b"b.png", b"image/png\x00"),
            (b"c\x00.png", b"image/png"), (b"d\nCRITICAL storage_guard: x.png", b"image/png"),
            (b"e\xe2\x80\xaegnp.exe", b"application/octet-stream"),
            (b"f.bin", b"\x89PNG\r"), (b"g" * 900 + b".png", b"image/png")]:
        body, ctype = multipart(filename, content_type)
        before = SaveAttempt.objects.using(record_alias()).count()
        response = client.post("/documents/", data=body, content_type=ctype)
        assert response.status_code == 200, filename[:40]
        assert SaveAttempt.objects.using(record_alias()).count() == before + 1
        assert_breaker_closed(storage)
    example_app.reset_counters()
    response = client.post("/api/generate/", {"label": "after the hostile uploads"})
    assert response.json()["saved"] is True and example_app.counts["PUT"] == 1
    assert_nothing_private(all_logs, guard_sentry)


# ----------------------------------------------------------------------- Sentry and logs


def test_the_integration_keeps_storage_guard_loggers_and_frame_locals_out(guard_sentry):
    for name in ("storage_guard", "storage_guard.contrib.generated.responses",
                 "storage_guard.anything.deeper"):
        logging.getLogger(name).error("guard line %s", PAYLOAD)
    logging.getLogger("someone.else").error("project line")  # the logging integration is on
    events = guard_sentry.events
    assert [e["logentry"]["message"] for e in events] == ["project line"]

    def caller_holding_the_payload():
        payload = PAYLOAD  # noqa: F841 - a local the SDK would serialise
        save_generated(b"", "")  # ValueError raised from a storage_guard frame

    try:
        caller_holding_the_payload()
    except ValueError:
        sentry_sdk.capture_exception()
    [event] = events[1:]
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert any(f["module"].startswith("storage_guard") for f in frames)
    assert all("vars" not in f for f in frames)
    assert MARKER.decode() not in json.dumps(event, default=repr)

    try:
        payload = PAYLOAD  # noqa: F841
        raise RuntimeError("not through storage_guard")
    except RuntimeError:
        sentry_sdk.capture_exception()
    assert "vars" in events[-1]["exception"]["values"][-1]["stacktrace"]["frames"][-1]


class SignatureLeakingS3(http.server.BaseHTTPRequestHandler):
    """A server answering every request with the 403 real S3 sends on a bad signature.

    The fault proxy only sends Code/Message/Resource bodies; this one sends S3's whole error
    element, StringToSign and CanonicalRequest included, parsed by the real botocore.
    """

    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SignatureDoesNotMatch</Code>'
                f"<Message>The request signature we calculated does not match.</Message>"
                f"<AWSAccessKeyId>{ACCESS_KEY_ID}</AWSAccessKeyId>"
                f"<StringToSign>{STRING_TO_SIGN}</StringToSign>"
                f"<SignatureProvided>{SIGNATURE}</SignatureProvided>"
                f"<CanonicalRequest>{CANONICAL}</CanonicalRequest>"
                f"<RequestId>REQ123</RequestId><HostId>HOST456</HostId></Error>").encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET = do_PUT

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def signature_leaking_endpoint():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SignatureLeakingS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_403_keeps_no_signature_in_the_record_the_logs_or_sentry(
        guarded_storage_factory, all_logs, guard_sentry, admin_client):
    with signature_leaking_endpoint() as endpoint:
        storage = guarded_storage_factory(endpoint_url=endpoint, secret_key=SECRET,
                                          access_key=ACCESS_KEY_ID, max_attempts=1)
        with pytest.raises(SaveFailed) as caught:
            storage.save("signed/x.bin", ContentFile(PAYLOAD))
    assert caught.value.code == "SignatureDoesNotMatch"
    record = SaveAttempt.objects.get(pk=caught.value.record_id)
    assert record.error_response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert set(record.error_response["Error"]) <= {"Code", "Message", "RequestId", "HostId"}
    stored = json.dumps(record.error_response)
    assert not [s for s in SECRETS if s in stored]
    html = admin_client.get(reverse("admin:storage_guard_saveattempt_change",
                                    args=[record.pk])).content.decode()
    assert "SignatureDoesNotMatch" in html and not [s for s in SECRETS if s in html]
    assert len(guard_sentry.events) == 1
    assert_nothing_private(all_logs, guard_sentry)


def test_old_rows_with_signatures_are_scrubbed_in_the_admin(admin_client):
    record = SaveAttempt.objects.create(
        storage_alias="default", name="old.bin", key="old.bin", key_bytes=7,
        status=Status.FAILED, error_code="AccessDenied",
        error_response={"Error": {"Code": "AccessDenied", "StringToSign": STRING_TO_SIGN,
                                  "SignatureProvided": SIGNATURE,
                                  "CanonicalRequest": CANONICAL,
                                  "AWSAccessKeyId": ACCESS_KEY_ID}, "HTTPStatusCode": 403})
    html = admin_client.get(reverse("admin:storage_guard_saveattempt_change",
                                    args=[record.pk])).content.decode()
    assert "AccessDenied" in html and not [s for s in SECRETS if s in html]


def test_a_forged_log_line_stays_on_its_own_line(hostile_storage, fault_proxy, all_logs):
    fault_proxy.script(["reset", "pass"])
    hostile_storage.save("forge/ok-\u202e.txt", ContentFile(b"x"))
    with pytest.raises(InvalidKey):
        hostile_storage.save(f"forge/key{FORGED}", ContentFile(b"x"))
    guard = [r for r in all_logs.records if r.name.startswith("storage_guard")]
    assert any(r.levelno == logging.INFO for r in guard)
    for record in guard:
        assert "\n" not in record.getMessage()
        assert not [v for v in vars(record).values() if isinstance(v, str) and "\u202e" in v]
    rejected = [r for r in guard if getattr(r, "event", "") == "save_rejected"]
    assert rejected and "\\nCRITICAL storage_guard" in rejected[-1].getMessage()


# ----------------------------------------------------------------------- the admin


def hostile_rows(fault_proxy):
    """Rows an attacker could have caused, old ones included, with stashed bytes."""
    storage = storages["default"]
    storage.breaker.reset()
    for name, content_type in (('q/he said "hi".txt', "text/plain"),
                               ("q/\u202egpj.exe", "text/html")):
        fault_proxy.script(["internal"] * 5)
        with contextlib.suppress(SaveFailed):
            storage.save(name, upload(content_type))
        storage.breaker.reset()
    fault_proxy.clear()
    for name, content_type in (("old/x\r\nSet-Cookie: a=b.txt", "text/plain\r\nX-Evil: 1"),
                               ("old/\x01.txt", "a/b\x01"), ("old/q\".txt", 'text/"x"')):
        row = SaveAttempt.objects.create(storage_alias="default", name=name, key=name,
                                         key_bytes=len(name), status=Status.FAILED,
                                         content_type=content_type, stash_backend="db")
        StashedPayload.objects.create(attempt=row, data=PAYLOAD)
    for name, content_type, params in hostile_saves():
        storage.object_parameters = params
        with contextlib.suppress(SaveRejected):
            storage.save(name, upload(content_type))
    storage.object_parameters = {}


def test_no_admin_page_answers_500_on_hostile_rows_or_parameters(admin_client, fault_proxy):
    hostile_rows(fault_proxy)
    changelist = reverse("admin:storage_guard_saveattempt_changelist")
    for query in ["", "created_at__year=2026&created_at__month=0",
                  "created_at__year=2026&created_at__month=13", "created_at__year=0",
                  "created_at__year=99999", "created_at__year=%C2%B2",
                  "created_at__year=2026&created_at__month=-1",
                  "created_at__year=2026&created_at__month=2&created_at__day=31",
                  "q=%00", "q=%ED%A0%80", "q=%FF%FE", "q=" + "a" * 10_000, "q=%25%5C_%27%22",
                  "status=%00", "error_code=%00", "error_category=%0A", "o=99", "p=-1",
                  "storage_alias=%E2%80%AE", "created_at__gte=%00"]:
        response = admin_client.get(f"{changelist}?{query}")
        assert response.status_code in (200, 302), query[:60]
    assert admin_client.get(reverse("admin:storage_guard_saveattempt_summary")).status_code == 200
    for record in SaveAttempt.objects.all():
        change = reverse("admin:storage_guard_saveattempt_change", args=[record.pk])
        assert admin_client.get(change).status_code == 200, record.name[:60]
        if record.has_stash:
            response = admin_client.get(reverse("admin:storage_guard_saveattempt_stash",
                                                args=[record.pk]))
            assert response.status_code == 200
            assert b"".join(response.streaming_content) == PAYLOAD
            disposition = response["Content-Disposition"]
            assert disposition.startswith("attachment; filename")
            assert "\n" not in disposition and "\r" not in disposition
            assert response["Content-Type"] in ("text/plain", "text/html",
                                                "application/octet-stream")
    quoted = SaveAttempt.objects.get(name='q/he said "hi".txt')
    response = admin_client.get(reverse("admin:storage_guard_saveattempt_stash",
                                        args=[quoted.pk]))
    assert response["Content-Disposition"] == 'attachment; filename="he said \\"hi\\".txt"'


# ----------------------------------------------------------------------- honest promises


@pytest.mark.parametrize(("fault", "retryable"), [
    (error(400, "InvalidArgument", "Invalid Argument"), False),
    (error(400, "MalformedXML", "The XML you provided was not well-formed"), False),
    (error(403, "AccessDenied", "Access Denied"), True),  # an operator fixes the policy
    (error(404, "NoSuchBucket", "The specified bucket does not exist"), True),
    ("service_unavailable", True),
], ids=str)
def test_a_retry_is_promised_and_scheduled_only_when_it_can_succeed(
        guarded_storage_factory, fault_proxy, settings, fault, retryable):
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "RETRY_WITH_TASKS": True}
    storage = guarded_storage_factory(max_attempts=1)
    fault_proxy.script([fault])
    outcome = save_generated(PAYLOAD, "promise/x.bin", storage=storage)

    assert outcome.partial and outcome.retry_scheduled is retryable
    record = SaveAttempt.objects.get(pk=outcome.attempt_id)
    assert record.has_stash  # the bytes are kept for an operator either way
    assert (record.next_retry_at is not None) is retryable
    assert ("nothing is lost" in outcome.message.lower()) is retryable
    if not retryable:
        assert "will not help" in outcome.message
    assert delivery_status(outcome.status_token, storage=storage)["retry_scheduled"] is retryable
