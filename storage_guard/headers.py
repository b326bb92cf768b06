"""The header budget of a PUT, estimated before any request so S3's refusals never happen.

S3 refuses user metadata over 2 KB (``MetadataTooLarge``) and a request header section over
8 KB (``RequestHeaderSectionTooLarge``). ``check_headers`` estimates both from the boto3
``ExtraArgs`` dict the storage is about to send and raises ``HeadersTooLarge`` naming the largest
headers. ``docs/keys.md`` explains each allowance below.
"""

from __future__ import annotations

import datetime
from urllib.parse import quote

from storage_guard.errors import HeadersTooLarge

__all__ = ["check_headers", "header_sizes", "metadata_bytes"]

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


def check_headers(key: str, params: dict, *, max_metadata_bytes: int,
                  max_header_bytes: int) -> None:
    """Raise HeadersTooLarge when the metadata or the whole header section is over budget."""
    meta = metadata_bytes(params.get("Metadata"))
    sizes = header_sizes(params)
    total = _request_line(key) + FIXED_ALLOWANCE + _signed_headers(sizes) + sum(sizes.values())
    over_meta = meta > max_metadata_bytes
    over_total = total > max_header_bytes
    if not (over_meta or over_total):
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


def _message(key, meta, total, meta_limit, header_limit, largest) -> str:
    parts = []
    if meta > meta_limit:
        parts.append(f"user metadata is {meta} bytes, over max_metadata_bytes={meta_limit}")
    if total > header_limit:
        parts.append(f"request headers are an estimated {total} bytes, "
                     f"over max_header_bytes={header_limit}")
    shown = ", ".join(f"{name} ({size} bytes)" for name, size in largest)
    preview = key if len(key) <= 80 else f"{key[:80]}…"
    return f"{'; '.join(parts)} for key {preview!r}; largest headers: {shown}"


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
