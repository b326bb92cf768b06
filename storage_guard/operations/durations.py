"""Ages such as ``90s``, ``10m``, ``12h``, ``30d``, ``2w``: one parser for every command."""

from __future__ import annotations

import re
from datetime import timedelta

AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_age(text: str) -> timedelta:
    """``"10m"`` to ``timedelta(minutes=10)``; a clear ``ValueError`` for anything else."""
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an age: use a whole number and one of "
                         f"{', '.join(AGE_UNITS)} (seconds, minutes, hours, days, weeks), "
                         f"e.g. 10m or 30d")
    return timedelta(seconds=int(match[1]) * AGE_UNITS[match[2].lower()])


def is_age(text: str) -> bool:
    return _AGE.match(text) is not None
