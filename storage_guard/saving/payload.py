"""The bytes of one save, hashed once and readable from the start as often as retries need.

The record needs the payload's SHA-256 only after the PUT, so it is computed as late and as
cheaply as possible:

* when the PUT's signature carries the body's SHA-256 (``saving.signed_hash``: ``http://``
  endpoints), that value is adopted and the bytes are not hashed again;
* otherwise a large in-memory payload is hashed on a helper thread while its PUT is on the wire
  (hashlib releases the GIL for large buffers, so the hash runs on another core): the SHA-256 of
  1 MB costs about as much CPU as the rest of the save;
* a small one is hashed when ``Payload.sha256`` is first read (after the PUT, or for a stash).

Reading ``Payload.sha256`` waits for the helper's hash if one is running.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from django.conf import settings
from django.core.files.base import ContentFile
from storages.utils import ReadBytesWrapper, is_seekable

CHUNK = 1024 * 1024
# In-memory payloads of at least this size are hashed on the helper thread (``from_content``);
# below it handing the work over costs more than the hash.
HASH_AHEAD_BYTES = 256 * 1024

_hasher: ThreadPoolExecutor | None = None
_hasher_pid = 0
_hasher_lock = threading.Lock()
# One hash at a time on the helper thread: a save that finds it busy hashes in its own thread
# (as before the helper existed), so no save ever waits behind another save's hash.
_hasher_free = threading.Semaphore(1)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_ahead(data: bytes) -> Future | None:
    """The SHA-256 of ``data``, being computed on this process's helper thread; None when the
    helper is busy with another save's payload (the caller then hashes it itself)."""
    global _hasher, _hasher_pid
    if not _hasher_free.acquire(blocking=False):
        return None
    try:
        if _hasher is None or _hasher_pid != os.getpid():  # a forked child starts its own thread
            with _hasher_lock:
                if _hasher is None or _hasher_pid != os.getpid():
                    _hasher = ThreadPoolExecutor(1, thread_name_prefix="storage_guard-hash")
                    _hasher_pid = os.getpid()
        future = _hasher.submit(_sha256_hex, data)
    except BaseException:
        _hasher_free.release()
        raise
    future.add_done_callback(lambda _: _hasher_free.release())
    return future


def _after_fork() -> None:
    global _hasher, _hasher_lock, _hasher_free
    # the parent's thread did not come along, nor did a hash it was running
    _hasher, _hasher_lock, _hasher_free = None, threading.Lock(), threading.Semaphore(1)


os.register_at_fork(after_in_child=_after_fork)


def _small_bytes(content, most: int) -> bytes | None:
    """The bytes of a ``ContentFile`` of bytes of at most ``most`` bytes, read as
    ``from_content`` reads any content (from the first byte, leaving the file at its end);
    None for any other content, which takes the general path."""
    file = content.file if type(content) is ContentFile else None
    if type(file) is not io.BytesIO:
        return None
    data = file.getvalue()
    if len(data) > most:
        return None
    file.seek(0, os.SEEK_END)
    return data


class Payload:
    """Rewindable content with its size and SHA-256.

    Small content (up to ``memory_limit``) is held as ``bytes`` so a retry re-sends exactly the
    same object and ``put_object`` gets a body it can checksum without seeking. Larger content
    that is not seekable is copied once into a spooled temporary file, so a retry can rewind it.
    """

    def __init__(self, *, data: bytes | None = None, file=None, size: int, sha256: str = "",
                 digest: Future | None = None):
        self.data = data
        self.file = file
        self.size = size
        self._sha256 = sha256
        self._digest = digest  # the hash still being computed on the helper thread

    @property
    def sha256(self) -> str:
        """The content's SHA-256 (hex); waits for the helper thread's hash if it is running."""
        if self._digest is not None:
            self._sha256 = self._digest.result()
            self._digest = None
        elif not self._sha256:
            self._sha256 = _sha256_hex(self.data)
        return self._sha256

    def adopt_sha256(self, signed: str | None) -> None:
        """Take the SHA-256 a request was signed with (``signed_hash.take()``) as this content's,
        unless it is already known or being computed (then ``signed`` is ignored)."""
        if signed and not self._sha256 and self._digest is None and self.data is not None:
            self._sha256 = signed

    @classmethod
    def from_bytes(cls, data: bytes) -> Payload:
        return cls(data=data, size=len(data), sha256=hashlib.sha256(data).hexdigest())

    @classmethod
    def from_content(cls, content, *, memory_limit: int, signed=None) -> Payload:
        """Read ``content`` (a Django File, a file object, or a ``str`` stream) once.

        ``signed(size)`` says whether the request that sends ``size`` bytes will be signed with
        their SHA-256 (``signed_hash.signs_payload``): then nothing is hashed ahead, the PUT's
        hash is adopted (``adopt_sha256``), and the bytes are hashed only if it never comes.
        """
        small = _small_bytes(content, min(memory_limit, HASH_AHEAD_BYTES - 1))
        if small is not None:
            return cls(data=small, size=len(small))
        source = ReadBytesWrapper(content)
        if is_seekable(content):
            content.seek(0, os.SEEK_SET)
        head = source.read(memory_limit + 1)
        if len(head) > memory_limit:
            return cls._spool(head, source)
        if len(head) >= HASH_AHEAD_BYTES and not (signed and signed(len(head))):
            digest = hash_ahead(head)
            if digest is not None:
                return cls(data=head, size=len(head), digest=digest)
        return cls(data=head, size=len(head))  # hashed when first needed (or adopted)

    @classmethod
    def _spool(cls, head: bytes, source) -> Payload:
        digest = hashlib.sha256(head)
        spool = tempfile.SpooledTemporaryFile(
            max_size=0, suffix=".storage_guard", dir=getattr(settings, "FILE_UPLOAD_TEMP_DIR", None)
        )
        spool.write(head)
        size = len(head)
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            spool.write(chunk)
            size += len(chunk)
        spool.seek(0)
        return cls(file=spool, size=size, sha256=digest.hexdigest())

    def body(self):
        """The content from its first byte: ``bytes``, or the rewound spool file."""
        if self.data is not None:
            return self.data
        self.file.seek(0)
        return self.file

    def stream(self):
        """A fresh binary file object over the content."""
        if self.data is not None:
            return io.BytesIO(self.data)
        self.file.seek(0)
        return self.file

    def read_range(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (one multipart part), without reading the rest."""
        if self.data is not None:
            return self.data[offset:offset + length]
        self.file.seek(offset)
        return self.file.read(length)

    def read_all(self) -> bytes:
        if self.data is not None:
            return self.data
        self.file.seek(0)
        return self.file.read()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
