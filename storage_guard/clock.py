"""One way to show a time to a person: Django's date formatting, in the current time zone, with
the zone's name and without microseconds (admin, commands, report, logs).

Stored times stay what they are (aware datetimes, or ISO strings inside ``attempt_log``);
only their display goes through here.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.utils import dateformat, timezone

FORMAT = "Y-m-d H:i:s T"  # 2026-11-27 03:24:31 UTC
TIME_FORMAT = "H:i:s T"


def when(value, fmt: str = FORMAT) -> str:
    """``value`` (aware datetime, Unix timestamp or ISO string) in the current zone; '' if None."""
    moment = as_datetime(value)
    if moment is None:
        return "" if value in (None, "") else str(value)
    return dateformat.format(timezone.localtime(moment), fmt)


def as_datetime(value) -> dt.datetime | None:
    """An aware datetime from a datetime, a Unix timestamp or an ISO string; None otherwise."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
    elif isinstance(value, str) and value:
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return timezone.make_aware(moment, dt.UTC) if timezone.is_naive(moment) else moment


class ZonedFormatter(logging.Formatter):
    """A ``logging.Formatter`` whose ``%(asctime)s`` is ``when()``: the zone named, no
    milliseconds, the same text as the admin and the commands. Use it in ``LOGGING``."""

    def formatTime(self, record, datefmt=None):
        from django.conf import settings

        if not settings.configured:
            return super().formatTime(record, datefmt)
        return when(record.created)
