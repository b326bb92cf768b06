"""Argument types shared by the management commands: bad input names the option and the limit."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable

from django.utils import timezone

from storage_guard.operations.durations import is_age, parse_age

DEFAULT_SINCE = "24h"  # storage_guard_report --since
MAX_SINCE = dt.timedelta(days=3650)


def checked(parse: Callable):
    """An argparse type from a parser that raises ``ValueError`` with a readable message."""

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


age = checked(parse_age)


def whole_number(option: str, low: int, high: int | None = None):
    """An argparse type for ``option``: a whole number from ``low`` (to ``high``)."""
    limits = f"from {low} to {high}" if high is not None else f"of at least {low}"

    def convert(text: str) -> int:
        value = int(text) if text.strip().isdigit() else None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{option} must be a whole number {limits}, not {text!r}")
        return value

    return convert


def parse_since(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """``24h``, ``30m``, ``7d``, ``2w``, ``90s`` ago, or an ISO date / date-time."""
    now = now or timezone.now()
    if is_age(text):
        delta = parse_age(text)
        if not dt.timedelta(0) < delta <= MAX_SINCE:
            raise ValueError(f"--since {text!r} is out of range: give more than 0 and at most "
                             f"{MAX_SINCE.days}d")
        return now - delta
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r} is not understood: give a duration such as 90s, "
                         f"30m, 24h, 7d or 2w (at most {MAX_SINCE.days}d), or an ISO date such "
                         f"as 2024-05-01 or 2024-05-01T12:00") from None
    if timezone.is_naive(when):
        when = timezone.make_aware(when, dt.UTC)
    if when > now:
        raise ValueError(f"--since {text!r} is in the future (now is {now.isoformat()})")
    return when
