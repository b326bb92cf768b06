"""Named sets of retry and timeout numbers, one per kind of work: the one table of their values.

A storage picks one with the ``preset`` option (the project-wide default is
``STORAGE_GUARD["PRESET"]``); any of these options given explicitly at the same level wins over
the preset's value. ``docs/configuration.md`` explains which preset fits which work, and
``storage_guard_doctor`` shows the numbers each storage ends up with.

The timeout rule (``put_timeout_*``): a request that carries ``n`` bytes may wait
``put_timeout_floor + n / put_timeout_rate`` seconds for S3's answer, at most
``put_timeout_ceiling`` (see ``storage_guard/saving/timeouts.py``).
"""

from __future__ import annotations

KB = 1024

# The options a preset sets, as they are spelled in STORAGE_GUARD (upper case).
PRESET_KEYS = (
    "MAX_ATTEMPTS", "BACKOFF_BASE", "BACKOFF_CAP", "RETRY_DEADLINE", "CONNECT_TIMEOUT",
    "READ_TIMEOUT", "PUT_TIMEOUT_FLOOR", "PUT_TIMEOUT_RATE", "PUT_TIMEOUT_CEILING",
)

# name: (max attempts, backoff base s, backoff cap s, deadline s, connect s, read s,
#        put floor s, put rate bytes/s, put ceiling s)
_TABLE = {
    # A user is waiting on the response (an avatar, a form with an attachment).
    "interactive": (3, 0.25, 1.0, 8.0, 1.0, 3.0, 1.0, 512 * KB, 15.0),
    # The default: a save inside a web request, with room for a database write and a stash.
    "standard": (4, 0.25, 2.0, 12.0, 2.0, 5.0, 1.5, 256 * KB, 30.0),
    # Big files (exports, videos) where finishing matters more than answering fast.
    "large_upload": (4, 1.0, 10.0, 60.0, 3.0, 10.0, 3.0, 128 * KB, 300.0),
    # Task queues, cron jobs, retry workers: nobody waits, so ride out longer trouble.
    "background": (6, 1.0, 20.0, 120.0, 5.0, 20.0, 5.0, 64 * KB, 600.0),
}

PRESETS: dict[str, dict[str, object]] = {
    name: dict(zip(PRESET_KEYS, values, strict=True)) for name, values in _TABLE.items()
}

DEFAULT_PRESET = "standard"


def values(name: str) -> dict[str, object]:
    """The preset's numbers keyed as in STORAGE_GUARD; ``KeyError`` for an unknown name."""
    return dict(PRESETS[name])


def option_values(name: str) -> dict[str, object]:
    """The preset's numbers keyed as in a storage's OPTIONS (lower case)."""
    return {key.lower(): value for key, value in PRESETS[name].items()}


def unknown_preset_message(where: str, value) -> str:
    return f"{where} is {value!r}, which is not a preset; the presets are {sorted(PRESETS)}."
