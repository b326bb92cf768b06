"""The bytes of one save, hashed once and readable from the start as often as retries need.

A large in-memory payload is hashed on a helper thread while its PUT is on the wire (hashlib
releases the GIL for large buffers, so the hash runs on another core): the SHA-256 of 1 MB
costs about as much CPU as the rest of the save, and the record needs it only afterwards.
Reading ``Payload.sha256`` waits for that hash; small payloads are hashed at once.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from django.conf import settings
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
        return self._sha256

    @classmethod
    def from_bytes(cls, data: bytes) -> Payload:
        return cls(data=data, size=len(data), sha256=hashlib.sha256(data).hexdigest())

    @classmethod
    def from_content(cls, content, *, memory_limit: int) -> Payload:
        """Read ``content`` (a Django File, a file object, or a ``str`` stream) once."""
        source = ReadBytesWrapper(content)
        if is_seekable(content):
            content.seek(0, os.SEEK_SET)
        head = source.read(memory_limit + 1)
        if len(head) <= memory_limit:
            digest = hash_ahead(head) if len(head) >= HASH_AHEAD_BYTES else None
            if digest is not None:
                return cls(data=head, size=len(head), digest=digest)
            return cls.from_bytes(head)
        return cls._spool(head, source)

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
