"""Every row of the classification table, and the exceptions real failures raise."""

import socket
import ssl

import pytest
from botocore import exceptions as bce
from urllib3 import exceptions as u3e

from storage_guard.errors import CircuitOpen, HeadersTooLarge, KeyTooLong, classify
from storage_guard.saving.classification import S3_CODES, key_bytes_bucket, size_bucket


def client_error(code: str, status: int) -> bce.ClientError:
    response = {
        "Error": {"Code": code, "Message": f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "REQ1", "HostId": "HOST1"},
    }
    return bce.ClientError(response, "PutObject")


@pytest.mark.parametrize(("code", "expected"), sorted(S3_CODES.items()))
def test_every_s3_code_row(code, expected):
    result = classify(client_error(code, 400))
    assert (result.transient, result.category) == expected
    assert result.code == code
    assert result.request_id == "REQ1"
    assert result.host_id == "HOST1"


@pytest.mark.parametrize(("exc", "code", "transient", "category"), [
    (bce.ReadTimeoutError(endpoint_url="http://x"), "ReadTimeout", True, "timeout"),
    (bce.ConnectTimeoutError(endpoint_url="http://x"), "ConnectTimeout", True, "timeout"),
    (bce.ProxyConnectionError(proxy_url="http://p", error="x"), "ProxyConnectionError", True,
     "network"),
    (bce.SSLError(endpoint_url="http://x", error="handshake"), "TLSError", True, "network"),
    (bce.EndpointConnectionError(endpoint_url="http://x"), "ConnectError", True, "network"),
    (bce.ConnectionClosedError(endpoint_url="http://x"), "ConnectionClosed", True, "network"),
    (bce.ResponseStreamingError(error="x"), "ResponseStreamingError", True, "network"),
    (bce.IncompleteReadError(actual_bytes=1, expected_bytes=2), "IncompleteRead", True,
     "network"),
    (bce.HTTPClientError(error="x"), "HTTPClientError", True, "network"),
    (bce.NoCredentialsError(), "NoCredentials", False, "auth"),
    (bce.PartialCredentialsError(provider="env", cred_var="secret"), "PartialCredentials",
     False, "auth"),
    (bce.ParamValidationError(report="bad"), "ParamValidation", False, "validation"),
    (ConnectionResetError(104, "reset"), "ConnectionReset", True, "network"),
    (ConnectionAbortedError(), "ConnectionAborted", True, "network"),
    (ConnectionRefusedError(), "ConnectionRefused", True, "network"),
    (BrokenPipeError(), "BrokenPipe", True, "network"),
    (ssl.SSLError("handshake"), "TLSError", True, "network"),
    (TimeoutError("timed out"), "Timeout", True, "timeout"),
    (socket.gaierror("no such host"), "DNSError", True, "network"),
    (u3e.ReadTimeoutError(None, "/", "read timed out"), "ReadTimeout", True, "timeout"),
    (u3e.ConnectTimeoutError(), "ConnectTimeout", True, "timeout"),
    (u3e.ProtocolError("Connection aborted."), "ConnectionClosed", True, "network"),
    (u3e.NewConnectionError(None, "refused"), "ConnectError", True, "network"),
    (FileNotFoundError("gone"), "NoSuchKey", False, "client"),
    (KeyTooLong("long", key="k"), "KeyTooLong", False, "validation"),
    (HeadersTooLarge("big"), "HeadersTooLarge", False, "validation"),
    (CircuitOpen("open"), "CircuitOpen", True, "unavailable"),
    (RuntimeError("boom"), "RuntimeError", False, "unknown"),
])
def test_network_and_own_errors(exc, code, transient, category):
    result = classify(exc)
    assert (result.code, result.transient, result.category) == (code, transient, category)


@pytest.mark.parametrize(("status", "transient", "category"), [
    (404, False, "client"), (429, True, "throttled"), (403, False, "auth"),
    (401, False, "auth"), (500, True, "server"), (502, True, "server"), (503, True, "server"),
    (400, False, "client"),
])
def test_unknown_codes_fall_back_to_http_status(status, transient, category):
    result = classify(client_error("SomethingNew", status))
    assert (result.transient, result.category, result.status) == (transient, category, status)


def test_head_errors_have_no_body_and_classify_by_status():
    exc = bce.ClientError({"Error": {"Code": "503", "Message": "Service Unavailable"},
                           "ResponseMetadata": {"HTTPStatusCode": 503}}, "HeadObject")
    assert classify(exc).transient is True


@pytest.mark.parametrize(("size", "label"), [
    (None, "unknown"), (0, "<64KB"), (65535, "<64KB"), (65536, "<1MB"),
    (1024 * 1024, "<16MB"), (16 * 1024 * 1024, ">=16MB"),
])
def test_size_bucket(size, label):
    assert size_bucket(size) == label


@pytest.mark.parametrize(("key_bytes", "label"), [
    (None, "unknown"), (10, "<=64"), (65, "<=128"), (1024, "<=1024"), (1025, ">1024"),
])
def test_key_bytes_bucket(key_bytes, label):
    assert key_bytes_bucket(key_bytes) == label
