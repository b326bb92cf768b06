"""``preview_key``: the one way a long key is shortened for a person to read."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.contrib import admin
from hypothesis import given, settings
from hypothesis import strategies as st

from storage_guard.errors import HeadersTooLarge, InvalidKey, KeyTooLong
from storage_guard.keys import KeyLimits, fit_name
from storage_guard.models import SaveAttempt
from storage_guard.saving import telemetry
from storage_guard.saving.headers import check_headers
from storage_guard.saving.safetext import PREVIEW_CHARS, escape_controls, preview_key

LONG = "media/" + "a" * 100 + "/" + "b" * 40 + "/the-file-name.pdf"


def test_a_key_within_the_limit_is_unchanged():
    assert preview_key("short", 10) == "short"
    assert preview_key("exactly-10", 10) == "exactly-10"
    assert preview_key(None) == ""
    assert preview_key("x" * PREVIEW_CHARS) == "x" * PREVIEW_CHARS


def test_a_long_key_keeps_its_head_and_its_last_third():
    assert preview_key("abcdefghijklmnopqrstuvwxyz", 10) == "abcdef…xyz"
    shown = preview_key(LONG)
    assert len(shown) == PREVIEW_CHARS == 80
    assert shown == LONG[:53] + "…" + LONG[-26:]
    assert shown.endswith("/the-file-name.pdf")


@pytest.mark.parametrize(("limit", "expected"), [(1, "…"), (2, "a…"), (4, "ab…z"),
                                                 (0, "…"), (-5, "…")])
def test_tiny_limits_still_give_at_most_one_character_past_the_ellipsis(limit, expected):
    assert preview_key("abcdefghijklmnopqrstuvwxyz", limit) == expected


@settings(max_examples=300, deadline=None)
@given(key=st.text(max_size=300), limit=st.integers(1, 200))
def test_never_longer_than_the_limit_and_made_of_the_key(key, limit):
    shown = preview_key(key, limit)
    if len(key) <= limit:
        assert shown == key
        return
    assert len(shown) == limit
    # Split by position, not at the first "…": the key may hold one of its own.
    tail_chars = (limit - 1) // 3
    head, marker = shown[:limit - 1 - tail_chars], shown[limit - 1 - tail_chars]
    tail = shown[limit - tail_chars:]
    assert marker == "…"
    assert key.startswith(head) and key.endswith(tail) and len(tail) == tail_chars


def test_the_log_line_the_admin_column_and_the_error_messages_all_use_it():
    assert telemetry.cut_key is preview_key  # the old name, imported by operations.report

    column = admin.site._registry[SaveAttempt].short_key(SimpleNamespace(key=LONG))
    assert f">{preview_key(LONG, 48)}</span>" in column

    with pytest.raises(KeyTooLong) as too_long:
        fit_name(LONG, location="", limits=KeyLimits(max_key_bytes=100, policy="reject"))
    assert f"for key {preview_key(LONG)!r}" in str(too_long.value)

    with pytest.raises(InvalidKey) as invalid:
        fit_name(LONG + "\x00", location="", limits=KeyLimits())
    assert f"{escape_controls(preview_key(LONG + chr(0)))!r}" in str(invalid.value)

    with pytest.raises(HeadersTooLarge) as headers_too_large:
        check_headers(LONG, {"Metadata": {"a": "x" * 3000}}, max_metadata_bytes=2048,
                      max_header_bytes=8192)
    assert f"for key {preview_key(LONG)!r}" in str(headers_too_large.value)
