"""One parser for ages, shared by retry_failed_saves, purge_save_attempts and the report."""

from datetime import timedelta

import pytest

from storage_guard.operations.durations import is_age, parse_age


@pytest.mark.parametrize(("text", "expected"), [
    ("90s", timedelta(seconds=90)), ("10m", timedelta(minutes=10)), (" 12h ", timedelta(hours=12)),
    ("30D", timedelta(days=30)), ("2w", timedelta(weeks=2)), ("0s", timedelta(0)),
])
def test_ages(text, expected):
    assert is_age(text)
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["", "10", "m", "1.5h", "-3d", "10x", "2024-05-01"])
def test_not_ages(text):
    assert not is_age(text)
    with pytest.raises(ValueError, match="is not an age: use a whole number and one of s, m, h"):
        parse_age(text)
