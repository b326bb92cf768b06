"""Tests for the test bed itself: a real SeaweedFS server and the fault proxy.

Run with ``python -m pytest tests/test_bed.py -q`` (no Django, no
database: nothing here uses the ``db`` fixture).  One ``weed mini`` server is
started for the module; a second one, with ``auth=True``, only for the
aws-chunked test.  Every boto3 client makes exactly one attempt
(``total_max_attempts=1``) with 1 s connect/read timeouts, so each fault
surfaces as exactly one exception.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from tests.testbed import seaweed as seaweed_module
from tests.testbed.faultproxy import FaultProxy, error
from tests.testbed.seaweed import SeaweedServer, free_ports, validate_bucket_name

BUCKET = "bed"
MiB = 1024 * 1024
FAST = Config(
    retries={"total_max_attempts": 1},
    connect_timeout=1,
    read_timeout=1,
    s3={"addressing_style": "path"},
)
# For tests that inject no stall: a slow answer on a loaded machine is not what they check.
PATIENT = FAST.merge(Config(connect_timeout=10, read_timeout=60))


def payload(size: int, seed: str = "bed") -> bytes:
    """Deterministic, non-repeating-looking bytes of ``size`` length."""
    block = hashlib.sha256(seed.encode()).digest()
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(block + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


@pytest.fixture(scope="module", autouse=True)
def _s3_settings():
    """Shadow tests/conftest.py's autouse fixture of this name, which needs
    pytest-django and the Django settings: the bed tests need neither."""
    return


@pytest.fixture(scope="module")
def server():
    with SeaweedServer() as srv:
        srv.create_bucket(BUCKET)
        yield srv


@pytest.fixture(scope="module")
def module_proxy(server):
    with FaultProxy(server.host, server.port, seed=0) as proxy:
        yield proxy


@pytest.fixture
def proxy(module_proxy):
    module_proxy.clear()
    module_proxy.reset_counters()
    module_proxy.stall_seconds = 30
    yield module_proxy
    module_proxy.clear()


@pytest.fixture
def proxied(server, proxy):
    """A client that talks to SeaweedFS through the proxy."""
    client = server.client(endpoint_url=proxy.endpoint_url, config=FAST)
    yield client
    client.close()


@pytest.fixture
def direct(server):
    """A client that talks to SeaweedFS directly."""
    client = server.client(config=FAST)
    yield client
    client.close()


def error_code(exc: ClientError) -> tuple[str, int]:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


# -- SeaweedServer -----------------------------------------------------------------


def test_server_basics(server, direct):
    assert server.endpoint_url == f"http://127.0.0.1:{server.port}"
    assert server.host == "127.0.0.1"
    assert server.is_running()
    assert server.log_path.is_file()
    assert server.create_bucket(BUCKET) == BUCKET  # idempotent
    assert direct.head_bucket(Bucket=BUCKET)["ResponseMetadata"]["HTTPStatusCode"] == 200
    # (SeaweedFS without identities answers ListBuckets with an empty list.)
    # No identities: any access key is accepted.
    other = server.client(aws_access_key_id="someone-else", config=FAST)
    other.put_object(Bucket=BUCKET, Key="anyone.txt", Body=b"ok")
    assert direct.get_object(Bucket=BUCKET, Key="anyone.txt")["Body"].read() == b"ok"


@pytest.mark.parametrize("name", ["ab", "UPPER", "-lead", "trail-", "a..b", "192.168.1.1", "a_b"])
def test_invalid_bucket_names_are_rejected(name):
    with pytest.raises(ValueError):
        validate_bucket_name(name)


def test_start_retries_on_port_clash(monkeypatch):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    original = seaweed_module.free_ports
    calls = []

    def clashing(count, host="127.0.0.1"):
        ports = original(count, host)
        if not calls and count > 1:
            ports[2] = taken  # the volume port of the first attempt is busy
        calls.append(ports)
        return ports

    monkeypatch.setattr(seaweed_module, "free_ports", clashing)
    try:
        with SeaweedServer() as srv:
            assert taken not in srv.ports.values()
            log = srv.log_path.read_text()
            assert "===== attempt 2" in log
            assert srv.create_bucket("clash") == "clash"
    finally:
        blocker.close()


def test_free_ports_are_distinct():
    ports = free_ports(10)
    assert len(set(ports)) == 10


# -- pass-through ------------------------------------------------------------------


@pytest.mark.parametrize("size", [2 * 1024, 1 * MiB], ids=["2KB", "1MB"])
def test_put_get_pass_through_is_byte_identical(proxied, direct, proxy, size):
    body = payload(size, seed=str(size))
    key = f"pass/{size}.bin"
    proxied.put_object(Bucket=BUCKET, Key=key, Body=body)
    assert proxied.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
    assert direct.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
    assert proxy.counts == Counter({"requests": 2, "pass": 2, "PUT": 1, "GET": 1})
    put = proxy.records[0]
    # botocore 1.44 over plain http: Content-Length body, Expect: 100-continue
    # (answered by the proxy), CRC32 checksum in a header, no aws-chunked.
    assert put.header("Expect") == "100-continue"
    assert put.header("Content-Length") == str(size)
    assert put.header("x-amz-checksum-crc32")
    assert put.status == 200 and put.body_bytes == size


def test_multipart_upload_fileobj_6mb(proxied, direct, proxy):
    body = payload(6 * MiB, seed="six")
    transfer = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    proxied.upload_fileobj(io.BytesIO(body), BUCKET, "pass/six.bin", Config=transfer)
    assert direct.get_object(Bucket=BUCKET, Key="pass/six.bin")["Body"].read() == body
    assert proxied.get_object(Bucket=BUCKET, Key="pass/six.bin")["Body"].read() == body
    assert proxy.requests_for("POST", "?uploads") == 1
    assert proxy.requests_for("PUT", "partNumber=") == 2
    assert proxy.requests_for("POST", "uploadId=") == 1
    assert proxy.counts["pass"] == proxy.counts["requests"] == 5


def test_keep_alive_reuses_one_connection(proxied, proxy):
    proxied.put_object(Bucket=BUCKET, Key="ka.txt", Body=b"keep")
    for _ in range(4):
        assert proxied.get_object(Bucket=BUCKET, Key="ka.txt")["Body"].read() == b"keep"
    proxied.head_object(Bucket=BUCKET, Key="ka.txt")
    assert proxy.counts["requests"] == 6
    assert proxy.connections == 1


def test_head_of_missing_key_relays_404(proxied, proxy):
    with pytest.raises(ClientError) as info:
        proxied.head_object(Bucket=BUCKET, Key="does/not/exist")
    assert error_code(info.value) == ("404", 404)
    # the connection stays usable after a body-less response
    proxied.put_object(Bucket=BUCKET, Key="after-404.txt", Body=b"x")
    assert proxy.connections == 1


def test_raw_chunked_request_body(server, proxy, direct):
    """A plain ``Transfer-Encoding: chunked`` PUT (no auth needed here)."""
    chunks = [b"hello ", payload(70_000, "chunk"), b" world"]
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
    conn.putrequest("PUT", f"/{BUCKET}/chunked/raw.bin")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    for chunk in chunks:
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.send(b"0\r\n\r\n")
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 200
    stored = direct.get_object(Bucket=BUCKET, Key="chunked/raw.bin")["Body"].read()
    assert stored == b"".join(chunks)
    assert proxy.log == [("PUT", f"/{BUCKET}/chunked/raw.bin", "pass")]


def _force_aws_chunked(params, **_kwargs):
    """botocore only uses aws-chunked trailer checksums over https; flip it."""
    algorithm = params.get("context", {}).get("checksum", {}).get("request_algorithm")
    if isinstance(algorithm, dict):
        algorithm["in"] = "trailer"


def test_aws_chunked_multipart_through_proxy_with_auth():
    """aws-chunked uploads need a SeaweedFS with an identity (auth=True);
    signatures still verify through the proxy because it keeps Host."""
    with (
        SeaweedServer(auth=True) as srv,
        FaultProxy(srv.host, srv.port) as proxy,
    ):
        srv.create_bucket("chunky")
        client = srv.client(endpoint_url=proxy.endpoint_url, config=PATIENT)
        for op in ("PutObject", "UploadPart"):
            client.meta.events.register(f"before-call.s3.{op}", _force_aws_chunked)
        body = payload(6 * MiB, seed="aws-chunked")
        transfer = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
        client.upload_fileobj(io.BytesIO(body), "chunky", "six.bin", Config=transfer)
        client.put_object(Bucket="chunky", Key="small.bin", Body=b"tiny")
        assert client.get_object(Bucket="chunky", Key="six.bin")["Body"].read() == body
        assert client.get_object(Bucket="chunky", Key="small.bin")["Body"].read() == b"tiny"
        uploads = [r for r in proxy.records if r.method == "PUT"]
        assert len(uploads) == 3
        for record in uploads:
            assert record.header("Transfer-Encoding") == "chunked"
            assert record.header("Content-Encoding") == "aws-chunked"
            assert record.header("X-Amz-Content-SHA256") == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
            assert record.status == 200
        wrong = srv.client(
            endpoint_url=proxy.endpoint_url, aws_secret_access_key="wrong", config=PATIENT
        )
        with pytest.raises(ClientError) as info:
            wrong.list_buckets()
        assert error_code(info.value) == ("SignatureDoesNotMatch", 403)


def test_chunked_and_close_delimited_responses_are_relayed():
    """The upstream side of the proxy against a tiny non-S3 HTTP server."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path == "/chunked":
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for part in (b"abc", b"defgh"):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"until-close")
                self.close_connection = True

        def log_message(self, *args):
            pass

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    try:
        with FaultProxy("127.0.0.1", upstream.server_address[1]) as proxy:
            conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
            conn.request("GET", "/chunked")
            assert conn.getresponse().read() == b"abcdefgh"
            conn.request("GET", "/chunked")  # same connection again
            assert conn.getresponse().read() == b"abcdefgh"
            conn.request("GET", "/close")
            assert conn.getresponse().read() == b"until-close"
            conn.close()
            assert proxy.connections == 1
            assert proxy.counts["pass"] == 3
    finally:
        upstream.shutdown()
        upstream.server_close()


def test_unreachable_upstream_gives_502(server):
    (dead_port,) = free_ports(1)
    with FaultProxy("127.0.0.1", dead_port) as proxy:
        client = server.client(endpoint_url=proxy.endpoint_url, config=FAST)
        with pytest.raises(ClientError) as info:
            client.list_buckets()
        assert error_code(info.value) == ("BadGateway", 502)
        assert proxy.counts["upstream_error"] == 1


# -- faults --------------------------------------------------------------------


def _put(client, size=2048):
    client.put_object(Bucket=BUCKET, Key="fault/x.bin", Body=payload(size))


def _get(client):
    client.get_object(Bucket=BUCKET, Key="fault/x.bin")["Body"].read()


@pytest.fixture
def existing_object(direct):
    direct.put_object(Bucket=BUCKET, Key="fault/x.bin", Body=payload(2048))


@pytest.mark.parametrize("op", [_put, _get], ids=["PUT", "GET"])
@pytest.mark.parametrize("action", ["reset", "reset_mid_body"])
def test_reset_actions_close_the_connection(proxied, proxy, existing_object, op, action):
    proxy.script([action])
    with pytest.raises(ConnectionClosedError):
        op(proxied)
    assert proxy.counts[action] == 1
    op(proxied)  # the next request gets a fresh connection and passes
    assert proxy.counts["pass"] == 1


def test_reset_mid_body_reads_part_of_the_body(proxied, proxy):
    proxy.script(["reset_mid_body"])
    with pytest.raises(ConnectionClosedError):
        _put(proxied, size=1 * MiB)
    (record,) = proxy.records
    assert 0 < record.body_bytes < MiB
    assert record.status is None


@pytest.mark.parametrize("op", [_put, _get], ids=["PUT", "GET"])
def test_stall_hits_the_read_timeout(proxied, proxy, existing_object, op):
    proxy.script(["stall"])  # stall_seconds stays 30: only the client's read timeout ends it
    with pytest.raises(ReadTimeoutError):
        op(proxied)
    assert proxy.counts["stall"] == 1


def test_stall_does_not_block_other_connections(server, proxied, proxy, existing_object):
    proxy.script(["stall"])
    outcome: list[BaseException] = []

    def stalled():
        client = server.client(endpoint_url=proxy.endpoint_url, config=FAST)
        try:
            _get(client)
        except BaseException as exc:  # noqa: BLE001 - recorded and asserted below
            outcome.append(exc)

    thread = threading.Thread(target=stalled)
    thread.start()
    deadline = time.monotonic() + 2
    while proxy.counts["stall"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    _get(proxied)  # passes (within its read timeout) while the other connection stalls for 30 s
    thread.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], ReadTimeoutError)


def test_stop_ends_a_stall(server):
    proxy = FaultProxy(server.host, server.port).start()
    proxy.script(["stall"])
    sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
    sock.sendall(b"GET /bed/ HTTP/1.1\r\nHost: x\r\n\r\n")
    deadline = time.monotonic() + 2
    while proxy.counts["stall"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    proxy.stop()
    assert sock.recv(100) == b""  # closed without an answer, well before the 5 s socket timeout
    sock.close()


@pytest.mark.parametrize(
    ("action", "code", "status"),
    [
        ("slowdown", "SlowDown", 503),
        ("internal", "InternalError", 500),
        ("throttle_429", "TooManyRequests", 429),
        ("service_unavailable", "ServiceUnavailable", 503),
        (error(400, "RequestTimeout", "Your socket connection timed out."), "RequestTimeout", 400),
        (error(403, "AccessDenied", "Access Denied"), "AccessDenied", 403),
    ],
    ids=lambda v: v.name if hasattr(v, "name") else str(v),
)
@pytest.mark.parametrize("op", [_put, _get], ids=["PUT", "GET"])
def test_error_actions_give_s3_client_errors(
    proxied, proxy, existing_object, op, action, code, status
):
    proxy.script([action])
    with pytest.raises(ClientError) as info:
        op(proxied)
    assert error_code(info.value) == (code, status)
    meta = info.value.response["ResponseMetadata"]
    assert meta["RequestId"]
    assert meta["HTTPHeaders"]["x-amz-id-2"]
    assert meta["HTTPHeaders"]["content-type"] == "application/xml"
    assert info.value.response["Error"]["Resource"] == f"/{BUCKET}/fault/x.bin"
    op(proxied)  # connection was closed after the error; next request passes
    name = action.name if hasattr(action, "name") else action
    assert proxy.actions() == [name, "pass"]


def test_error_on_head_has_no_body(proxied, proxy, existing_object):
    proxy.script(["slowdown", "internal"])
    for expected in ("503", "500"):
        with pytest.raises(ClientError) as info:
            proxied.head_object(Bucket=BUCKET, Key="fault/x.bin")
        # no body on HEAD: botocore reports the status code as the Code
        assert error_code(info.value) == (expected, int(expected))
    proxied.head_object(Bucket=BUCKET, Key="fault/x.bin")
    assert proxy.actions() == ["slowdown", "internal", "pass"]


def test_slowdown_body_is_s3_xml(proxy, existing_object):
    proxy.script(["slowdown"])
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
    conn.request("PUT", f"/{BUCKET}/k", body=b"abc")
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 503
    assert response.getheader("Content-Type") == "application/xml"
    assert int(response.getheader("Content-Length")) == len(body)
    assert response.getheader("x-amz-request-id")
    assert response.getheader("x-amz-id-2")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>')
    assert b"<Message>Please reduce your request rate.</Message>" in body
    assert b"<Resource>/bed/k</Resource>" in body


# -- policy --------------------------------------------------------------------


def test_script_is_consumed_in_order_with_exact_counters(proxied, proxy):
    proxy.script(["reset", "slowdown", "pass", "internal"])
    outcomes = []
    for i in range(5):
        try:
            proxied.put_object(Bucket=BUCKET, Key=f"script/{i}", Body=b"s")
            outcomes.append("ok")
        except ConnectionClosedError:
            outcomes.append("closed")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
    assert outcomes == ["closed", "SlowDown", "ok", "InternalError", "ok"]
    assert proxy.script_remaining == 0
    assert proxy.counts == Counter(
        {"requests": 5, "PUT": 5, "pass": 2, "reset": 1, "slowdown": 1, "internal": 1}
    )
    assert proxy.log == [
        ("PUT", f"/{BUCKET}/script/0", "reset"),
        ("PUT", f"/{BUCKET}/script/1", "slowdown"),
        ("PUT", f"/{BUCKET}/script/2", "pass"),
        ("PUT", f"/{BUCKET}/script/3", "internal"),
        ("PUT", f"/{BUCKET}/script/4", "pass"),
    ]
    assert proxy.requests_for("PUT") == 5
    assert proxy.requests_for(path_contains="script/3") == 1
    assert proxy.requests_for("GET") == 0


def test_script_only_applies_to_matching_requests(proxied, proxy, existing_object):
    proxy.configure(methods={"PUT"})
    proxy.script(["slowdown"])
    _get(proxied)  # GET does not match: passes and does not consume the script
    assert proxy.script_remaining == 1
    with pytest.raises(ClientError):
        _put(proxied)
    assert proxy.actions() == ["pass", "slowdown"]


def _random_run(proxied, proxy, seed):
    proxy.reset_counters()
    proxy.configure(reset=0.3, slowdown=0.2, internal=0.1, methods={"GET"}, seed=seed)
    for _ in range(24):
        try:
            _get(proxied)
        except (ClientError, ConnectionClosedError):
            pass
    return proxy.actions()


def test_seeded_random_policy_is_reproducible(proxied, proxy, existing_object):
    first = _random_run(proxied, proxy, seed=1)
    again = _random_run(proxied, proxy, seed=1)
    other = _random_run(proxied, proxy, seed=2)
    assert first == again
    assert first != other
    assert {"pass", "reset", "slowdown", "internal"} <= set(first)
    counts = Counter(first)
    assert proxy.counts["requests"] == 24
    assert sum(counts.values()) == 24


def test_methods_filter_get_passes_while_put_is_faulted(proxied, proxy, existing_object):
    proxy.configure(reset=1.0, methods={"PUT"})
    for _ in range(3):
        _get(proxied)
        with pytest.raises(ConnectionClosedError):
            _put(proxied)
    assert proxy.counts["GET"] == proxy.counts["pass"] == 3
    assert proxy.counts["PUT"] == proxy.counts["reset"] == 3


def test_path_prefix_filter(proxied, proxy):
    proxy.configure(slowdown=1.0, path_prefix=f"/{BUCKET}/faulty/")
    proxied.put_object(Bucket=BUCKET, Key="healthy/a", Body=b"a")
    with pytest.raises(ClientError) as info:
        proxied.put_object(Bucket=BUCKET, Key="faulty/a", Body=b"a")
    assert error_code(info.value) == ("SlowDown", 503)
    assert proxy.actions() == ["pass", "slowdown"]


def test_outage_fails_everything_then_passes(proxied, proxy, existing_object):
    proxy.configure(methods={"DELETE"})  # outage ignores matching
    proxy.outage(0.6, action="reset")
    with pytest.raises(ConnectionClosedError):
        _get(proxied)
    with pytest.raises(ConnectionClosedError):
        _put(proxied)
    time.sleep(0.7)
    _get(proxied)
    _put(proxied)
    assert proxy.actions() == ["reset", "reset", "pass", "pass"]


def test_outage_window_context_manager(proxied, proxy, existing_object):
    with proxy.outage_window(action="slowdown"):
        for op in (_get, _put, _get):
            with pytest.raises(ClientError) as info:
                op(proxied)
            assert error_code(info.value) == ("SlowDown", 503)
    _get(proxied)
    assert proxy.counts["slowdown"] == 3 and proxy.counts["pass"] == 1


def test_clear_keeps_counters(proxied, proxy, existing_object):
    proxy.configure(internal=1.0)
    proxy.script(["reset"])
    with pytest.raises(ConnectionClosedError):
        _get(proxied)
    proxy.clear()
    _get(proxied)
    assert proxy.counts == Counter({"requests": 2, "GET": 2, "reset": 1, "pass": 1})
    proxy.reset_counters()
    assert proxy.counts == Counter() and proxy.log == []


def test_policy_validation(proxy):
    with pytest.raises(ValueError):
        proxy.script(["explode"])
    with pytest.raises(ValueError):
        proxy.configure(reset=0.7, slowdown=0.5)
    with pytest.raises(ValueError):
        proxy.outage(1, action="nope")
