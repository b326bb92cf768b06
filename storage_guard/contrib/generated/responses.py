"""Saving generated content from a view so that the person never loses the result.

``save_generated`` saves through the (guarded) storage and returns a ``SaveOutcome``: on success
the name and URL; when the bytes did not reach S3, whatever ``on_failure`` says, a *partial*
result carrying the content inline (up to ``INLINE_MAX_BYTES``), a suggested filename, the
``SaveAttempt`` id that links it to the eventual object, whether a retry will deliver it, and a
message chosen by error category, and a ``status_token``: the signed capability that
``delivery_status`` takes, so only whoever made the save can poll it. ``SaveOutcomeResponse``
turns it into JSON (HTTP 200: the request did what it promised, the ``saved``/``partial``
fields say how; see ``docs/responses.md``).
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import posixpath
from dataclasses import asdict, dataclass

from asgiref.sync import sync_to_async
from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import JsonResponse
from storages.utils import clean_name

from storage_guard import conf
from storage_guard.contrib.generated import user_messages
from storage_guard.errors import StorageGuardError
from storage_guard.log import logger
from storage_guard.models import SaveAttempt, Status
from storage_guard.saving.classification import data_dependent
from storage_guard.saving.records import record_alias

__all__ = [
    "MAX_PRESIGNED_EXPIRY",
    "SaveOutcome",
    "SaveOutcomeResponse",
    "asave_generated",
    "delivery_status",
    "presigned_url",
    "save_generated",
    "status_token",
]


# SigV4 presigned URLs are valid for at most 7 days.
MAX_PRESIGNED_EXPIRY = 7 * 24 * 3600
DELIVERED = (Status.SUCCEEDED, Status.RECOVERED)
TOKEN_SALT = "storage_guard.responses.status"


@dataclass(frozen=True)
class SaveOutcome:
    """What became of one save of generated content; ``to_dict()`` is the JSON schema."""

    saved: bool
    partial: bool
    name: str
    url: str | None
    attempt_id: int | None
    retry_scheduled: bool
    message: str
    error_code: str | None
    content_type: str
    filename: str
    size: int
    content_base64: str | None = None
    status_token: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class SaveOutcomeResponse(JsonResponse):
    """The outcome as JSON, HTTP 200 for both outcomes, never cached (it may carry content)."""

    def __init__(self, outcome: SaveOutcome, **kwargs):
        kwargs.setdefault("status", 200)
        super().__init__(outcome.to_dict(), **kwargs)
        self["Cache-Control"] = "no-store"


@dataclass(frozen=True)
class _Generated:
    """The bytes being saved, with what a response needs to hand them back."""

    data: bytes
    name: str
    content_type: str
    sha256: str

    @classmethod
    def build(cls, content, name: str, content_type: str | None) -> _Generated:
        if not isinstance(name, str) or not name.strip("/ "):
            raise ValueError(f"name must be a non-empty file name, got {name!r}")
        data = _read_bytes(content)
        content_type = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return cls(data, name, content_type, hashlib.sha256(data).hexdigest())

    def as_file(self) -> ContentFile:
        upload = ContentFile(self.data, name=posixpath.basename(self.name))
        upload.content_type = self.content_type  # read by S3Storage._get_write_parameters
        return upload


def _read_bytes(content) -> bytes:
    if isinstance(content, bytes | bytearray | memoryview):
        return bytes(content)
    if hasattr(content, "read"):
        if hasattr(content, "seek"):
            content.seek(0)
        data = content.read()
        if isinstance(data, str):
            raise TypeError("content must be opened in binary mode: read() returned str")
        return data
    raise TypeError(
        f"content must be bytes or a binary file object, not {type(content).__name__}")


def save_generated(content, name: str, *, storage=None, content_type: str | None = None
                   ) -> SaveOutcome:
    """Save ``content`` (bytes or a binary file) as ``name``; never lose it for the person.

    Returns a ``SaveOutcome``: ``saved`` with ``name`` and ``url`` when the bytes reached
    storage; otherwise ``partial`` with the content inline (when within ``INLINE_MAX_BYTES``),
    the ``SaveAttempt`` id, ``retry_scheduled`` and a message a person can act on.
    """
    storage = storage or default_storage
    generated = _Generated.build(content, name, content_type)
    try:
        saved_name, record = _save(storage, name, generated)
    except StorageGuardError as exc:
        record = _find_record(exc.context.get("record_id"))
        return _partial(generated, record, code=exc.code, category=exc.category)
    except Exception as exc:  # the person gets their content whatever happened
        logger.exception("save_generated %s: unexpected error, content returned inline", name,
                         extra={"event": "save_generated_error", "error_code": type(exc).__name__})
        return _partial(generated, None, code=type(exc).__name__, category="unknown")
    if record is not None and record.is_unresolved:
        return _partial(generated, record, code=record.error_code, category=record.error_category)
    return _saved(generated, storage, saved_name, record)


async def asave_generated(content, name: str, *, storage=None, content_type: str | None = None
                          ) -> SaveOutcome:
    """``save_generated`` for async views (the save runs in Django's sync thread)."""
    return await sync_to_async(save_generated)(content, name, storage=storage,
                                               content_type=content_type)


def _find_record(record_id) -> SaveAttempt | None:
    if record_id is None:
        return None
    return SaveAttempt.objects.using(record_alias()).filter(pk=record_id).first()


def _save(storage, name: str, generated: _Generated):
    """Save; with a guarded storage also get the record it wrote (with ``on_failure="defer"``
    the name alone does not say whether the bytes arrived). Unguarded storages: no record."""
    if hasattr(storage, "save_with_record"):
        return storage.save_with_record(name, generated.as_file())
    return storage.save(name, generated.as_file()), None


def _saved(generated: _Generated, storage, name: str, record) -> SaveOutcome:
    return SaveOutcome(
        saved=True, partial=False, name=name, url=_url(storage, name),
        attempt_id=record.pk if record else None, retry_scheduled=False,
        message=user_messages.saved_message(), error_code=None,
        content_type=generated.content_type, filename=posixpath.basename(name),
        size=len(generated.data), status_token=status_token(record))


def _partial(generated: _Generated, record, *, code: str, category: str) -> SaveOutcome:
    kept = will_be_retried(record)
    inline = len(generated.data) <= int(conf.get("INLINE_MAX_BYTES"))
    name = record.name if record is not None and record.name else generated.name
    reason = user_messages.reason_for(code, category)
    return SaveOutcome(
        saved=False, partial=True, name=name, url=None,
        attempt_id=record.pk if record is not None else None, retry_scheduled=kept,
        message=user_messages.message_for(reason, kept=kept, inline=inline),
        error_code=code or None,
        content_type=generated.content_type, filename=posixpath.basename(name),
        size=len(generated.data),
        content_base64=base64.b64encode(generated.data).decode("ascii") if inline else None,
        status_token=status_token(record))


def will_be_retried(record) -> bool:
    """True when a retry can deliver the record's bytes: they are kept and the error is not
    data-dependent (the same request would fail the same way every time)."""
    if record is None or not (record.is_unresolved and record.has_stash):
        return False
    return not data_dependent(record.error_code, record.error_category)


def _url(storage, name: str) -> str | None:
    try:
        return storage.url(name)
    except NotImplementedError:
        return None


# --------------------------------------------------------------------- after the response


def status_token(record) -> str | None:
    """A signed, expiring capability to poll ``record``: only the maker of the save gets it.

    Signed with ``SECRET_KEY`` (``django.core.signing``), so it cannot be guessed or made from
    an id; bound to the record's key digest, so a reused id does not match; valid for
    ``STATUS_TOKEN_MAX_AGE`` seconds.
    """
    if record is None or record.pk is None:
        return None
    return signing.dumps([record.pk, record.key_digest[:16]], salt=TOKEN_SALT, compress=False)


def _record_for_token(token) -> SaveAttempt | None:
    if not isinstance(token, str) or len(token) > 200:
        return None
    try:
        pk, digest = signing.loads(token, salt=TOKEN_SALT,
                                   max_age=int(conf.get("STATUS_TOKEN_MAX_AGE")))
    except (signing.BadSignature, ValueError, TypeError):
        return None
    record = _find_record(pk)
    if record is None or record.key_digest[:16] != digest:
        return None
    return record


def delivery_status(token: str, *, storage=None) -> dict | None:
    """Where a save stands now: what a page polls after a partial, given the outcome's
    ``status_token`` (None for a token that is forged, expired or whose record is gone).

    ``delivered`` turns true once a retry has put the bytes in S3; ``url`` then points at them.
    """
    record = _record_for_token(token)
    if record is None:
        return None
    delivered = record.status in DELIVERED
    return {
        "attempt_id": record.pk, "status": record.status, "delivered": delivered,
        "retry_scheduled": will_be_retried(record),
        "name": record.name,
        "url": _url(storage or default_storage, record.name) if delivered else None,
        "attempts": record.attempts, "error_code": record.error_code or None,
        "attempt_log": record.attempt_log,
    }


def presigned_url(name: str, *, storage=None, expire: int | None = None) -> str:
    """A presigned GET URL for ``name``, valid for ``expire`` seconds (default PRESIGNED_EXPIRY).

    Always signed, whatever the storage's ``querystring_auth`` says, so a worker in another
    container can fetch the object with nothing but the URL.
    """
    storage = storage or default_storage
    expire = _check_expiry(conf.get("PRESIGNED_EXPIRY") if expire is None else expire)
    connection = getattr(storage, "connection", None)
    if connection is None or not hasattr(storage, "bucket_name"):
        raise TypeError("presigned_url needs an S3 storage (S3Storage or GuardedS3Storage), "
                        f"not {type(storage).__name__}")
    key = storage._normalize_name(clean_name(name))
    return connection.meta.client.generate_presigned_url(
        "get_object", Params={"Bucket": storage.bucket_name, "Key": key}, ExpiresIn=expire)


def _check_expiry(expire) -> int:
    if isinstance(expire, bool) or not isinstance(expire, int):
        raise TypeError(f"expire must be a whole number of seconds, not {expire!r}")
    if not 1 <= expire <= MAX_PRESIGNED_EXPIRY:
        raise ValueError(f"expire={expire} is out of range: a presigned URL is valid for 1 to "
                         f"{MAX_PRESIGNED_EXPIRY} seconds (7 days)")
    return expire
