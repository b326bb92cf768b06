"""The one table that says what an error means: its code, whether a retry can help, its category.

Imported by the storage (to decide whether to retry), the logs, Sentry and the report, so that
an error code means the same thing everywhere. ``docs/errors.md`` reproduces the table.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass

from botocore import exceptions as bce

from storage_guard.saving.safetext import redact

try:  # urllib3 is always present with botocore, but keep the import tolerant.
    from urllib3 import exceptions as u3e
except ImportError:  # pragma: no cover
    u3e = None

CATEGORIES = ("network", "timeout", "throttled", "server", "client", "auth", "validation",
              "unavailable", "unknown")


@dataclass(frozen=True)
class Classification:
    code: str
    transient: bool
    category: str
    status: int | None = None
    message: str = ""
    request_id: str = ""
    host_id: str = ""
    response: dict | None = None


# Fields of an S3 error response that are safe to keep: no signatures, no string-to-sign, no
# canonical request, no access key id.
SAFE_ERROR_FIELDS = ("Code", "Message", "Resource", "BucketName", "Key", "RequestId", "HostId",
                     "ArgumentName", "MaxSizeAllowed", "ProposedSize", "MinSizeAllowed",
                     "Condition")


def safe_response(response: dict | None) -> dict | None:
    """S3's error response without the fields that could carry a signature or a credential.

    Applied where a ``Classification`` is made, so records, logs and Sentry only ever see this;
    the admin applies it again to rows written before it existed.
    """
    if not response:
        return None
    error = response.get("Error") or {}
    kept = {name: redact(str(error[name])) for name in SAFE_ERROR_FIELDS if name in error}
    return {"Error": kept, "HTTPStatusCode": response.get("HTTPStatusCode")}


# S3 error codes (the <Code> of an XML error body). (transient, category)
S3_CODES: dict[str, tuple[bool, str]] = {
    # Throttling: back off and try again.
    "SlowDown": (True, "throttled"),
    "TooManyRequests": (True, "throttled"),
    "Throttling": (True, "throttled"),
    "ThrottlingException": (True, "throttled"),
    "RequestLimitExceeded": (True, "throttled"),
    "RequestThrottled": (True, "throttled"),
    "BandwidthLimitExceeded": (True, "throttled"),
    # Server side faults.
    "InternalError": (True, "server"),
    "ServiceUnavailable": (True, "server"),
    "Unavailable": (True, "server"),
    "BadGateway": (True, "server"),
    "GatewayTimeout": (True, "timeout"),
    "RequestTimeout": (True, "timeout"),
    "IncompleteBody": (True, "network"),
    "BadDigest": (True, "network"),
    "OperationAborted": (True, "server"),
    # Authentication and authorisation: a retry will not help.
    "AccessDenied": (False, "auth"),
    "InvalidAccessKeyId": (False, "auth"),
    "SignatureDoesNotMatch": (False, "auth"),
    "ExpiredToken": (False, "auth"),
    "InvalidToken": (False, "auth"),
    "AccountProblem": (False, "auth"),
    "AllAccessDisabled": (False, "auth"),
    "RequestTimeTooSkewed": (False, "auth"),
    # Data-dependent: the same request fails the same way every time.
    "KeyTooLongError": (False, "validation"),
    "InvalidArgument": (False, "validation"),
    "EntityTooLarge": (False, "validation"),
    "EntityTooSmall": (False, "validation"),
    "MetadataTooLarge": (False, "validation"),
    "RequestHeaderSectionTooLarge": (False, "validation"),
    "InvalidRequest": (False, "validation"),
    "MalformedXML": (False, "validation"),
    "InvalidDigest": (False, "validation"),
    "InvalidStorageClass": (False, "validation"),
    "MissingContentLength": (False, "validation"),
    # Wrong target or state.
    "NoSuchBucket": (False, "client"),
    "NoSuchKey": (False, "client"),
    "NotFound": (False, "client"),
    "InvalidBucketName": (False, "client"),
    "PreconditionFailed": (False, "client"),
    "MethodNotAllowed": (False, "client"),
    "InvalidObjectState": (False, "client"),
    # storage_guard's own refusals (see storage_guard.errors).
    "KeyTooLong": (False, "validation"),
    "HeadersTooLarge": (False, "validation"),
    "InvalidHeader": (False, "validation"),
    "InvalidKey": (False, "validation"),
    # The HTTP layer refused the request before sending it (a header it cannot encode, say):
    # the endpoint never saw it, so it is data-dependent and never counts toward the breaker.
    "RequestNotSent": (False, "validation"),
    "CircuitOpen": (True, "unavailable"),
}

# Exceptions raised below the HTTP layer, most specific first. (code, transient, category)
_NETWORK_TABLE: list[tuple[type, str, bool, str]] = [
    (bce.ReadTimeoutError, "ReadTimeout", True, "timeout"),
    (bce.ConnectTimeoutError, "ConnectTimeout", True, "timeout"),
    (bce.ProxyConnectionError, "ProxyConnectionError", True, "network"),
    (bce.SSLError, "TLSError", True, "network"),
    (bce.EndpointConnectionError, "ConnectError", True, "network"),
    (bce.ConnectionClosedError, "ConnectionClosed", True, "network"),
    (bce.ResponseStreamingError, "ResponseStreamingError", True, "network"),
    (bce.IncompleteReadError, "IncompleteRead", True, "network"),
    (bce.HTTPClientError, "HTTPClientError", True, "network"),
    (bce.NoCredentialsError, "NoCredentials", False, "auth"),
    (bce.PartialCredentialsError, "PartialCredentials", False, "auth"),
    (bce.ParamValidationError, "ParamValidation", False, "validation"),
    (UnicodeError, "EncodingError", False, "validation"),
    (ConnectionResetError, "ConnectionReset", True, "network"),
    (ConnectionAbortedError, "ConnectionAborted", True, "network"),
    (ConnectionRefusedError, "ConnectionRefused", True, "network"),
    (BrokenPipeError, "BrokenPipe", True, "network"),
    (ssl.SSLError, "TLSError", True, "network"),
    (TimeoutError, "Timeout", True, "timeout"),
    (socket.gaierror, "DNSError", True, "network"),
]
if u3e is not None:
    _NETWORK_TABLE += [
        (u3e.NewConnectionError, "ConnectError", True, "network"),  # subclasses ConnectTimeout
        (u3e.ReadTimeoutError, "ReadTimeout", True, "timeout"),
        (u3e.ConnectTimeoutError, "ConnectTimeout", True, "timeout"),
        (u3e.ProtocolError, "ConnectionClosed", True, "network"),
    ]


def classify(exc: BaseException) -> Classification:
    """Map any exception from boto3, botocore, urllib3, the OS or storage_guard to a code."""
    if isinstance(exc, bce.ClientError):
        return _classify_client_error(exc)
    if _not_sent(exc):
        return Classification("RequestNotSent", False, "validation", message=str(exc))
    own_code = getattr(exc, "code", None)
    if own_code in S3_CODES and hasattr(exc, "transient"):
        return Classification(own_code, exc.transient, exc.category, message=str(exc))
    for exc_type, code, transient, category in _NETWORK_TABLE:
        if isinstance(exc, exc_type):
            return Classification(code, transient, category, message=str(exc))
    if isinstance(exc, FileNotFoundError):
        return Classification("NoSuchKey", False, "client", message=str(exc))
    return Classification(type(exc).__name__, False, "unknown", message=str(exc))


def _not_sent(exc: BaseException) -> bool:
    """True for botocore's catch-all ``HTTPClientError`` around an error that is not a network one.

    botocore turns every urllib3 and socket failure it knows into a specific subclass
    (``EndpointConnectionError``, ``ConnectionClosedError``, ...) and wraps anything else in a
    plain ``HTTPClientError``. When that wrapped error is not an ``OSError``, an
    ``http.client.HTTPException`` or a urllib3 error, the request never left: ``http.client``
    refused a header value (``ValueError``) or could not encode it (``UnicodeEncodeError``).
    """
    if type(exc) is not bce.HTTPClientError:
        return False
    cause = getattr(exc, "kwargs", {}).get("error")
    network = (OSError, http.client.HTTPException) + ((u3e.HTTPError,) if u3e else ())
    return isinstance(cause, BaseException) and not isinstance(cause, network)


def _classify_client_error(exc: bce.ClientError) -> Classification:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    meta = response.get("ResponseMetadata", {})
    status = meta.get("HTTPStatusCode")
    code = str(error.get("Code") or status or "ClientError")
    transient, category = S3_CODES.get(code) or _by_status(code, status)
    return Classification(
        code=code, transient=transient, category=category, status=status,
        message=str(error.get("Message", "")), request_id=meta.get("RequestId", ""),
        host_id=meta.get("HostId", ""),
        response=safe_response({"Error": error, "HTTPStatusCode": status}),
    )


def _by_status(code: str, status: int | None) -> tuple[bool, str]:
    """Codes not in the table: decide by HTTP status (S3 answers HEAD errors with no body)."""
    if code == "404" or status == 404:
        return False, "client"
    if status == 429:
        return True, "throttled"
    if status in (401, 403):
        return False, "auth"
    if status is not None and status >= 500:
        return True, "server"
    return False, "client"


def describe(code: str) -> tuple[bool, str] | None:
    """``(transient, category)`` of a code from either table, or None for an unknown code."""
    if code in S3_CODES:
        return S3_CODES[code]
    for _exc_type, known, transient, category in _NETWORK_TABLE:
        if known == code:
            return transient, category
    return None


def data_dependent(code: str | None, category: str | None = None) -> bool:
    """A permanent error caused by the request itself (category ``validation``): no retry of
    the same bytes, name and headers can succeed. Configuration errors (``NoSuchBucket``,
    ``AccessDenied``) are not: a retry succeeds once an operator has fixed the setting."""
    known = describe(code or "")
    if known is not None:
        transient, known_category = known
        return not transient and known_category == "validation"
    return category == "validation"


def size_bucket(size: int | None) -> str:
    """A coarse size label shared by logs, Sentry tags and the report."""
    if size is None:
        return "unknown"
    for limit, label in ((64 * 1024, "<64KB"), (1024 * 1024, "<1MB"), (16 * 1024 * 1024, "<16MB")):
        if size < limit:
            return label
    return ">=16MB"


def key_bytes_bucket(key_bytes: int | None) -> str:
    if key_bytes is None:
        return "unknown"
    for limit in (64, 128, 256, 512, 1024):
        if key_bytes <= limit:
            return f"<={limit}"
    return ">1024"
