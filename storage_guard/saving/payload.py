"""The bytes of one save, hashed once and readable from the start as often as retries need."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile

from django.conf import settings
from storages.utils import ReadBytesWrapper, is_seekable

CHUNK = 1024 * 1024


class Payload:
    """Rewindable content with its size and SHA-256.

    Small content (up to ``memory_limit``) is held as ``bytes`` so a retry re-sends exactly the
    same object and ``put_object`` gets a body it can checksum without seeking. Larger content
    that is not seekable is copied once into a spooled temporary file, so a retry can rewind it.
    """

    def __init__(self, *, data: bytes | None = None, file=None, size: int, sha256: str):
        self.data = data
        self.file = file
        self.size = size
        self.sha256 = sha256

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
