"""Payload hashing: a large payload's SHA-256 on the helper thread, never a wait behind another."""

from __future__ import annotations

import hashlib
import io
import os

from storage_guard.saving import payload
from storage_guard.saving.payload import HASH_AHEAD_BYTES, Payload

LIMIT = 8 * 1024 * 1024


def test_a_large_payload_is_hashed_on_the_helper_thread_and_frees_it():
    data = os.urandom(HASH_AHEAD_BYTES)
    item = Payload.from_content(io.BytesIO(data), memory_limit=LIMIT)
    assert item._digest is not None  # handed to the helper
    assert item.sha256 == hashlib.sha256(data).hexdigest()
    item._digest = None
    # the helper is free again once its hash is done: the next large payload gets it too
    assert payload._hasher_free.acquire(blocking=False)
    payload._hasher_free.release()


def test_a_save_that_finds_the_helper_busy_hashes_its_own_payload():
    data = os.urandom(HASH_AHEAD_BYTES * 2)
    assert payload._hasher_free.acquire(blocking=False)  # another save's hash is running
    try:
        item = Payload.from_content(io.BytesIO(data), memory_limit=LIMIT)
    finally:
        payload._hasher_free.release()
    assert item._digest is None  # hashed here, not queued behind the other one
    assert item.sha256 == hashlib.sha256(data).hexdigest()


def test_a_small_payload_is_hashed_at_once():
    data = b"x" * (HASH_AHEAD_BYTES - 1)
    item = Payload.from_content(io.BytesIO(data), memory_limit=LIMIT)
    assert item._digest is None
    assert item.sha256 == hashlib.sha256(data).hexdigest()


def test_a_small_content_file_of_bytes_is_read_as_any_content_is():
    """``ContentFile`` of bytes skips the wrapper: same bytes, same size, file left at its end,
    even when it was read half-way before; anything else takes the general path."""
    from django.core.files.base import ContentFile

    data = os.urandom(2048)
    content = ContentFile(data)
    content.read(100)
    item = Payload.from_content(content, memory_limit=LIMIT)
    assert (item.data, item.size, item.file) == (data, 2048, None)
    assert content.file.tell() == 2048
    assert item.sha256 == hashlib.sha256(data).hexdigest()

    class Shouting(ContentFile):
        def read(self, *args):
            return super().read(*args).upper()

    assert Payload.from_content(Shouting(b"quiet"), memory_limit=LIMIT).data == b"QUIET"
    assert Payload.from_content(ContentFile("text é"), memory_limit=LIMIT).data == \
        "text é".encode()


def test_a_content_file_over_the_memory_limit_or_hashed_ahead_takes_the_general_path():
    from django.core.files.base import ContentFile

    data = os.urandom(4096)
    spooled = Payload.from_content(ContentFile(data), memory_limit=1024)
    try:
        assert spooled.data is None and spooled.read_all() == data
    finally:
        spooled.close()
    large = Payload.from_content(ContentFile(os.urandom(HASH_AHEAD_BYTES)), memory_limit=LIMIT)
    assert large._digest is not None  # hashed ahead on the helper, as any large payload is
    assert large.sha256 == hashlib.sha256(large.data).hexdigest()
