"""The rules the options are held to: each one's type, range and choices, in one place.

Options are keyed in lower case, as in ``STORAGES[alias]["OPTIONS"]`` (a project-wide
``STORAGE_GUARD`` key is its lower-cased name). ``problems(values)`` returns every rule a set of
options breaks, each a ``Problem`` naming the system check it maps to (``Problem.name``, the
attribute of ``storage_guard.checks.Codes``; ``Problem.check_id``, its id). Three callers:

- the system checks (``storage_guard/checks/options.py``) turn each problem into its Error
  (E002-E009, and E006 for the record settings);
- ``GuardedS3Storage`` refuses, when it is built, an option outside its choices
  (``storage_problem``);
- ``KeyLimits`` refuses a policy outside its choices and a limit under one byte
  (``key_limits_problem``).

The storage and ``KeyLimits`` raise ``ImproperlyConfigured`` in their own words (unchanged since
0.1); the other rules are the checks' to report, so that ``manage.py check`` lists them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from numbers import Real

from storage_guard import conf
from storage_guard.keys import HASH_CHARS, POLICIES

# Whole numbers of at least this much (breaker_threshold 0 turns the breaker off).
MINIMUMS = {"max_attempts": 1, "breaker_threshold": 0, "max_metadata_bytes": 1,
            "max_header_bytes": 1, "stash_db_max_bytes": 0, "spool_max_memory": 0,
            "record_queue_size": 1, "record_batch_size": 1, "expect_continue_bytes": 0}
# Durations in seconds that must be greater than zero.
POSITIVE = ("connect_timeout", "read_timeout", "retry_deadline", "put_timeout_floor",
            "put_timeout_ceiling")
# Rates in bytes per second that must be greater than zero.
RATES = ("put_timeout_rate",)
# Durations in seconds that may be zero (no backoff, no cool-down) but not negative.
NON_NEGATIVE = ("backoff_base", "backoff_cap", "breaker_cooldown", "breaker_window",
                "breaker_initial_cooldown", "breaker_refresh", "record_linger")
# Fractions: numbers from 0 to 1 (a value outside is reported as the wrong kind of value).
FRACTIONS = ("record_sample_rate",)
INTEGERS = (*MINIMUMS, "max_key_bytes", "max_segment_bytes", "max_slug_length")
CHOICES = {"on_failure": ("raise", "defer"), "key_policy": POLICIES,
           "record_successes": ("all", "sample", "none"),
           "record_writer": ("background", "inline")}
# Each key limit fits inside the next: a slug is one segment, a segment is part of a key.
MAX_KEY_BYTES_RANGE = (16, 1024)
MIN_SEGMENT_BYTES = 16
MIN_SLUG_LENGTH = HASH_CHARS + 2
# KeyLimits (a key fitted outside the checks' reach) only needs limits of a byte or more.
MIN_LIMIT_BYTES = 1


@dataclass(frozen=True)
class Problem:
    """A broken rule: the check it maps to, the options it involves (the one at fault first),
    and the fields its message (``storage_guard.checks.Messages``) is formatted with."""

    name: str
    keys: tuple[str, ...]
    fields: dict = field(default_factory=dict)

    @property
    def check_id(self) -> str:
        from storage_guard.checks.codes import Codes  # the checks import this module

        return getattr(Codes, self.name)

    @property
    def key(self) -> str:
        return self.keys[0]


def problems(values: dict, where: Callable[[str], str] = lambda key: key) -> list[Problem]:
    """The rules ``values`` breaks, in a fixed order: types, ranges, choices, key limits.

    Only the options present are held to their rules, and a value of the wrong type is not
    compared again. ``where(key)`` names an option in the messages (``fields["where"]``).
    """
    found = list(_type_problems(values, where))
    checked = {k: v for k, v in values.items() if k not in {p.key for p in found}}
    found += _range_problems(checked, where)
    found += _choice_problems(checked, where)
    found += _key_problems(checked, where)
    return found


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def storage_problem(storage) -> str | None:
    """Why a ``GuardedS3Storage`` cannot be built (an option outside its choices), or None."""
    own = {key: getattr(storage, key) for key in CHOICES if key.upper() in conf.STORAGE_OPTIONS}
    for problem in problems(own):
        return (f"GuardedS3Storage option {problem.key}={problem.fields['value']!r} must be "
                f"one of {CHOICES[problem.key]}")
    return None


def key_limits_problem(limits) -> str | None:
    """Why a ``KeyLimits`` cannot fit any key (a policy outside its choices, a limit under one
    byte), or None."""
    if problems({"key_policy": limits.policy}):
        return f"key_policy must be one of {CHOICES['key_policy']}, not {limits.policy!r}"
    if min(limits.max_key_bytes, limits.max_segment_bytes) < MIN_LIMIT_BYTES:
        return "max_key_bytes and max_segment_bytes must be positive"
    return None


def _type_problems(values, where) -> Iterator[Problem]:
    kinds = {**dict.fromkeys(INTEGERS, "a whole number"),
             **dict.fromkeys((*POSITIVE, *NON_NEGATIVE), "a number of seconds"),
             **dict.fromkeys(RATES, "a number of bytes per second"),
             **dict.fromkeys(FRACTIONS, "a number between 0 and 1")}
    for key, kind in kinds.items():
        if key not in values:
            continue
        value = values[key]
        fits = is_int(value) if key in INTEGERS else is_number(value)
        if fits and key in FRACTIONS:
            fits = 0 <= value <= 1
        if not fits:
            yield Problem("OPTION_TYPE", (key,), {"where": where(key), "value": value,
                                                  "kind": kind})


def _range_problems(values, where) -> Iterator[Problem]:
    def below(key, minimum):
        return Problem("OPTION_MINIMUM", (key,), {"where": where(key), "value": values[key],
                                                  "minimum": minimum})

    for key, minimum in MINIMUMS.items():
        if key in values and values[key] < minimum:
            yield below(key, minimum)
    for key in (*POSITIVE, *RATES):
        if key in values and values[key] <= 0:
            yield Problem("OPTION_NOT_POSITIVE", (key,), {"where": where(key),
                                                          "value": values[key]})
    for key in NON_NEGATIVE:
        if key in values and values[key] < 0:
            yield below(key, 0)
    base, cap = values.get("backoff_base"), values.get("backoff_cap")
    if base is not None and cap is not None and cap < base:
        yield Problem("BACKOFF_ORDER", ("backoff_base", "backoff_cap"), {
            "where_cap": where("backoff_cap"), "cap": cap,
            "where_base": where("backoff_base"), "base": base})


def _choice_problems(values, where) -> Iterator[Problem]:
    for key, choices in CHOICES.items():
        if key in values and values[key] not in choices:
            yield Problem("OPTION_CHOICE", (key,), {"where": where(key), "value": values[key],
                                                    "choices": list(choices)})


def _key_problems(values, where) -> Iterator[Problem]:
    """Each limit must fit inside the next; a limit already reported is not compared again."""
    low, high = MAX_KEY_BYTES_RANGE
    key_bytes = values.get("max_key_bytes")
    if key_bytes is not None and not low <= key_bytes <= high:
        yield Problem("KEY_BYTES_RANGE", ("max_key_bytes",), {
            "where": where("max_key_bytes"), "value": key_bytes, "low": low, "high": high})
        return
    segment = values.get("max_segment_bytes")
    if segment is not None and key_bytes is not None \
            and not MIN_SEGMENT_BYTES <= segment <= key_bytes:
        yield Problem("SEGMENT_BYTES_RANGE", ("max_segment_bytes", "max_key_bytes"), {
            "where": where("max_segment_bytes"), "value": segment, "low": MIN_SEGMENT_BYTES,
            "high": key_bytes})
        return
    slug = values.get("max_slug_length")
    if slug is not None and segment is not None and not MIN_SLUG_LENGTH <= slug <= segment:
        yield Problem("SLUG_LENGTH_RANGE", ("max_slug_length", "max_segment_bytes"), {
            "where": where("max_slug_length"), "value": slug, "low": MIN_SLUG_LENGTH,
            "high": segment})
