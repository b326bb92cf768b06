"""The header budget of a PUT, estimated before any request so S3's refusals never happen.

``check_header_values`` comes first: a header name or value that HTTP cannot carry (CR, LF, NUL,
any other control character; non-ASCII, which S3 refuses in metadata and cannot sign elsewhere)
raises ``InvalidHeader`` naming the header and the character's position, so such a value never
reaches ``http.client`` (which would refuse it as a network-looking error) or S3.

S3 refuses user metadata over 2 KB (``MetadataTooLarge``) and a request header section over
8 KB (``RequestHeaderSectionTooLarge``). ``check_headers`` estimates both from the boto3
``ExtraArgs`` dict the storage is about to send and raises ``HeadersTooLarge`` naming the largest
headers. ``docs/keys.md`` explains each allowance below.
"""

from __future__ import annotations

import datetime
from urllib.parse import quote

from storage_guard.errors import HeadersTooLarge, InvalidHeader
from storage_guard.saving.safetext import (
    describe_char,
    escape_controls,
    find_unsafe,
    preview_key,
)

__all__ = ["check_header_values", "check_headers", "header_sizes", "metadata_bytes"]

# boto3 PutObject parameter -> the HTTP header botocore sends it as (from botocore's S3 model).
HEADER_NAMES: dict[str, str] = {
    "ACL": "x-amz-acl",
    "CacheControl": "Cache-Control",
    "ContentDisposition": "Content-Disposition",
    "ContentEncoding": "Content-Encoding",
    "ContentLanguage": "Content-Language",
    "ContentLength": "Content-Length",
    "ContentMD5": "Content-MD5",
    "ContentType": "Content-Type",
    "ChecksumAlgorithm": "x-amz-sdk-checksum-algorithm",
    "ChecksumCRC32": "x-amz-checksum-crc32",
    "ChecksumCRC32C": "x-amz-checksum-crc32c",
    "ChecksumCRC64NVME": "x-amz-checksum-crc64nvme",
    "ChecksumSHA1": "x-amz-checksum-sha1",
    "ChecksumSHA256": "x-amz-checksum-sha256",
    "Expires": "Expires",
    "IfMatch": "If-Match",
    "IfNoneMatch": "If-None-Match",
    "GrantFullControl": "x-amz-grant-full-control",
    "GrantRead": "x-amz-grant-read",
    "GrantReadACP": "x-amz-grant-read-acp",
    "GrantWriteACP": "x-amz-grant-write-acp",
    "ServerSideEncryption": "x-amz-server-side-encryption",
    "StorageClass": "x-amz-storage-class",
    "WebsiteRedirectLocation": "x-amz-website-redirect-location",
    "SSECustomerAlgorithm": "x-amz-server-side-encryption-customer-algorithm",
    "SSECustomerKey": "x-amz-server-side-encryption-customer-key",
    "SSECustomerKeyMD5": "x-amz-server-side-encryption-customer-key-MD5",
    "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
    "SSEKMSEncryptionContext": "x-amz-server-side-encryption-context",
    "BucketKeyEnabled": "x-amz-server-side-encryption-bucket-key-enabled",
    "RequestPayer": "x-amz-request-payer",
    "Tagging": "x-amz-tagging",
    "ObjectLockMode": "x-amz-object-lock-mode",
    "ObjectLockRetainUntilDate": "x-amz-object-lock-retain-until-date",
    "ObjectLockLegalHoldStatus": "x-amz-object-lock-legal-hold",
    "ExpectedBucketOwner": "x-amz-expected-bucket-owner",
}
META_PREFIX = "x-amz-meta-"
# "PUT /" + a path-style bucket (at most 63) + "/" ... + " HTTP/1.1\r\n".
REQUEST_LINE_OVERHEAD = len("PUT /") + 63 + len("/") + len(" HTTP/1.1\r\n")
# Headers botocore always adds whose size does not depend on the object: Host (a 63-byte bucket
# plus a long regional endpoint), User-Agent (botocore's runs to ~250 bytes), X-Amz-Date,
# X-Amz-Content-SHA256, Content-Length, Content-MD5 or a checksum, Expect, amz-sdk-* ids, and the
# SigV4 Authorization header without its SignedHeaders list. Session tokens are extra.
FIXED_ALLOWANCE = 1024
SHOW_LARGEST = 5
# The characters of an HTTP header name (RFC 9110 ``token``).
TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def metadata_bytes(metadata: dict | None) -> int:
    """User metadata as AWS counts it: UTF-8 bytes of every key (without the prefix) and value."""
    return sum(_utf8(k) + _utf8(v) for k, v in (metadata or {}).items())


def header_sizes(params: dict) -> dict[str, int]:
    """Each header the params become, with its size on the wire (``Name: value\\r\\n``)."""
    sizes: dict[str, int] = {}
    for param, value in params.items():
        if param == "Metadata":
            for meta_key, meta_value in (value or {}).items():
                name = f"{META_PREFIX}{meta_key}"
                sizes[name] = _line(name, meta_value)
        elif param in HEADER_NAMES:
            sizes[HEADER_NAMES[param]] = _line(HEADER_NAMES[param], value)
        # Anything else (ACL grants in other shapes, transfer options) is not a header.
    return sizes


def check_header_values(key: str, params: dict) -> None:
    """Raise InvalidHeader when a header name or value cannot be sent as it is."""
    for param, value in params.items():
        if param == "Metadata":
            _check_metadata(key, value)
        elif param in HEADER_NAMES:
            _check_value(key, HEADER_NAMES[param], value)


def _check_metadata(key: str, metadata) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise _invalid(key, "Metadata", f"must be a dict of text, not {type(metadata).__name__}")
    for meta_key, meta_value in metadata.items():
        if not isinstance(meta_key, str) or not meta_key:
            raise _invalid(key, META_PREFIX + "…", f"has a name that is not text: {meta_key!r}")
        name = META_PREFIX + meta_key
        bad = next((i for i, c in enumerate(meta_key) if c not in TOKEN_CHARS), None)
        if bad is not None:
            raise _invalid(key, name, f"name has {describe_char(meta_key[bad])} at position {bad}; "
                           "metadata names take ASCII letters, digits and -_.!#$%&'*+^`|~")
        _check_value(key, name, meta_value)


def _check_value(key: str, header: str, value) -> None:
    if isinstance(value, bool | int | float | datetime.date):
        return  # botocore serialises these itself
    if not isinstance(value, str):
        raise _invalid(key, header, f"value must be text, not {type(value).__name__}")
    found = find_unsafe(value, ascii_only=True)
    if found is not None:
        position, why = found
        raise _invalid(key, header, f"value has {why} at position {position}",
                       position=position)


def _invalid(key: str, header: str, problem: str, **context) -> InvalidHeader:
    return InvalidHeader(
        f"header {escape_controls(header)} {problem} for key "
        f"{escape_controls(preview_key(key))!r}; "
        "S3 headers take printable ASCII only", key=key, header=header, **context)


def check_headers(key: str, params: dict, *, max_metadata_bytes: int,
                  max_header_bytes: int) -> None:
    """Raise InvalidHeader for a value HTTP cannot carry, HeadersTooLarge when the metadata
    or the whole header section is over budget."""
    text_params = _text_params(params)
    params_bytes = _checked_text_params.get(text_params) if text_params else None
    if params_bytes is not None and \
            _request_line(key) + FIXED_ALLOWANCE + params_bytes <= max_header_bytes:
        return  # values already checked, no metadata, and the whole section fits
    check_header_values(key, params)
    meta = metadata_bytes(params.get("Metadata"))
    sizes = header_sizes(params)
    params_bytes = _signed_headers(sizes) + sum(sizes.values())
    total = _request_line(key) + FIXED_ALLOWANCE + params_bytes
    over_meta = meta > max_metadata_bytes
    over_total = total > max_header_bytes
    if not (over_meta or over_total):
        if text_params:
            if len(_checked_text_params) >= CHECKED_MEMO_SIZE:
                _checked_text_params.clear()
            _checked_text_params[text_params] = params_bytes
        return
    largest = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:SHOW_LARGEST]
    raise HeadersTooLarge(
        _message(key, meta, total, max_metadata_bytes, max_header_bytes, largest),
        key=key, metadata_bytes=meta, header_bytes=total,
        limit=max_metadata_bytes if over_meta else max_header_bytes,
        metadata_limit=max_metadata_bytes, header_limit=max_header_bytes,
        exceeded=[part for part, over in (("metadata", over_meta), ("headers", over_total))
                  if over],
        largest=[list(item) for item in largest],
    )


# Params whose values are all text, no metadata among them, that passed check_header_values ->
# the bytes their headers take. Most saves send the same few (a content type, a cache control).
_checked_text_params: dict[tuple, int] = {}
CHECKED_MEMO_SIZE = 256


def _text_params(params: dict) -> tuple | None:
    """``params`` as a hashable tuple when every value is a ``str`` (metadata is a dict, so
    never); None otherwise."""
    items = tuple(params.items())
    for _param, value in items:
        if type(value) is not str:
            return None
    return items


def _message(key, meta, total, meta_limit, header_limit, largest) -> str:
    parts = []
    if meta > meta_limit:
        parts.append(f"user metadata is {meta} bytes, over max_metadata_bytes={meta_limit}")
    if total > header_limit:
        parts.append(f"request headers are an estimated {total} bytes, "
                     f"over max_header_bytes={header_limit}")
    shown = ", ".join(f"{name} ({size} bytes)" for name, size in largest)
    return f"{'; '.join(parts)} for key {preview_key(key)!r}; largest headers: {shown}"


def _request_line(key: str) -> int:
    return REQUEST_LINE_OVERHEAD + len(quote(key.encode("utf-8", "surrogatepass"), safe="/~"))


def _signed_headers(sizes: dict[str, int]) -> int:
    """SigV4 lists every signed header name (all x-amz-* and content-*) in Authorization."""
    return sum(len(name) + 1 for name in sizes)


def _line(name: str, value) -> int:
    return len(name) + len(": ") + _utf8(_header_value(value)) + len("\r\n")


def _header_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.date):
        return "Thu, 01 Jan 1970 00:00:00 GMT"  # an HTTP date: always 29 characters
    return str(value)


def _utf8(value) -> int:
    return len(str(value).encode("utf-8", "surrogatepass"))
