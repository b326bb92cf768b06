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
