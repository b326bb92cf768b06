"""The length limits every object key is held to, and ``fit_name``, the gate that enforces them.

``fit_name`` is the one gate every save path goes through (the storage calls it from
``generate_filename``, ``get_available_name`` and ``_save``). Names that already fit are returned
unchanged; names that do not are shortened (policy ``"shorten"``) or refused with
``KeyTooLong`` (policy ``"reject"``). ``docs/keys.md`` gives the reason for every number here.
Slugs are in ``keys.slugs``, the ``upload_to`` builder and date-partitioned keys in
``keys.builders``; import them all from ``storage_guard.keys``.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from storage_guard import conf
from storage_guard.errors import InvalidKey, KeyTooLong
from storage_guard.saving.safetext import escape_controls, find_unsafe, preview_key

POLICIES = ("shorten", "reject")  # what a key that does not fit gets (options.CHOICES uses this)
# 12 hex digits = 48 bits: a collision needs ~16 million long names that also share the cut text.
HASH_CHARS = 12
# The shortest name a shortened key can end in: the hash plus an extension such as ".tar.gz".
MIN_NAME_CHARS = HASH_CHARS + 8
# A suffix longer than this (or containing whitespace) is part of the stem, not an extension.
MAX_EXTENSION_CHARS = 16
# Suffixes that wrap another one, so "archive.tar.gz" keeps ".tar.gz" whole.
WRAPPER_SUFFIXES = frozenset({".gz", ".bz2", ".xz", ".zst", ".br", ".lz", ".lz4", ".lzma", ".z"})
# Characters a shortened stem must not end with (a dangling mark, joiner or separator).
_DANGLING = " \t._-\u200c\u200d"


def utf8_len(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes (lone surrogates counted as S3 would see them escaped)."""
    return len(text.encode("utf-8", "surrogatepass"))


def short_hash(text: str, length: int = HASH_CHARS) -> str:
    """A short, stable digest of ``text``: the first ``length`` hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def full_key(location: str, name: str) -> str:
    """The object key S3 sees: the storage's ``location`` prefix joined to ``name``."""
    location = (location or "").strip("/")
    return f"{location}/{name}" if location else name


@dataclass(frozen=True)
class KeyLimits:
    """The byte limits a key is held to, and what to do with a key over them."""

    max_key_bytes: int = 1024
    max_segment_bytes: int = 255
    policy: str = "shorten"

    def __post_init__(self):
        from storage_guard import options  # the rules module imports this one

        problem = options.key_limits_problem(self)
        if problem:
            raise ImproperlyConfigured(problem)

    @classmethod
    def from_settings(cls) -> KeyLimits:
        """The project-wide limits from ``settings.STORAGE_GUARD``."""
        return cls(int(conf.get("MAX_KEY_BYTES")), int(conf.get("MAX_SEGMENT_BYTES")),
                   str(conf.get("KEY_POLICY")))

    @classmethod
    def for_storage(cls, storage) -> KeyLimits:
        """The limits of a guarded storage (any other storage gets the project-wide ones)."""
        own = (getattr(storage, "max_key_bytes", None), getattr(storage, "max_segment_bytes", None),
               getattr(storage, "key_policy", None))
        if None in own:
            defaults = cls.from_settings()
            own = (defaults.max_key_bytes if own[0] is None else own[0],
                   defaults.max_segment_bytes if own[1] is None else own[1],
                   defaults.policy if own[2] is None else own[2])
        return _limits(int(own[0]), int(own[1]), str(own[2]))


@functools.lru_cache(maxsize=64)
def _limits(max_key_bytes: int, max_segment_bytes: int, policy: str) -> KeyLimits:
    return KeyLimits(max_key_bytes, max_segment_bytes, policy)  # frozen: one per value


# --- Fitting names into the limits -----------------------------------------------------------


def split_extension(filename: str) -> tuple[str, str]:
    """Split the last path segment into ``(stem, extension)``; the extension keeps its dot.

    An extension is the last ``.suffix`` of at most ``MAX_EXTENSION_CHARS`` characters with no
    whitespace, plus the suffix before it when the last is a compression suffix (``.tar.gz``).
    A leading dot (``.env``) starts a stem, not an extension.
    """
    stem, ext = _one_suffix(filename)
    if ext and ext.lower() in WRAPPER_SUFFIXES:
        inner_stem, inner_ext = _one_suffix(stem)
        if inner_ext:
            stem, ext = inner_stem, inner_ext + ext
    return stem, ext


def _one_suffix(filename: str) -> tuple[str, str]:
    dot = filename.rfind(".")
    if dot <= 0 or not filename[:dot].strip("."):
        return filename, ""
    ext = filename[dot:]
    if len(ext) < 2 or len(ext) > MAX_EXTENSION_CHARS or any(c.isspace() for c in ext):
        return filename, ""
    return filename[:dot], ext


def fit_name(name: str, *, location: str, limits: KeyLimits,
             max_length: int | None = None) -> str:
    """Return ``name`` such that its full key, every segment and its length fit the limits.

    ``location + "/" + name`` must be within ``limits.max_key_bytes`` UTF-8 bytes, every
    ``/``-separated segment within ``limits.max_segment_bytes`` bytes, and ``len(name)`` within
    ``max_length`` characters (Django's ``FileField.max_length``). A name that fits is returned
    unchanged. Otherwise policy ``"shorten"`` cuts only the file stem and appends ``-`` plus a
    hash of the whole original name, keeping the directory and the extension; policy
    ``"reject"``, or a name whose directory or extension alone is too long, raises KeyTooLong.
    A name with a character no key can hold raises InvalidKey (``check_key_characters``).
    """
    check_key_characters(full_key(location, name))
    problem = _first_violation(name, location, limits, max_length)
    if problem is None:
        return name
    if limits.policy == "reject":
        raise _key_too_long(name, location, limits, problem, shortened=False)
    shortened = _shorten(name, location, limits, max_length)
    if shortened is None:
        raise _key_too_long(name, location, limits, problem, shortened=True)
    return shortened


def check_key_characters(key: str) -> None:
    """Raise InvalidKey for NUL, another control character or a lone surrogate in ``key``.

    S3 lists ASCII 0-31 and 127 among the characters to avoid (XML listings cannot carry them),
    a lone surrogate cannot be encoded as UTF-8 at all, and none of them is ever intended.
    """
    if key.isprintable():
        return  # the common case, checked in C
    found = find_unsafe(key, allow_tab=False)
    if found is None:
        return  # printable in S3's sense: spaces other than " ", format characters
    position, why = found
    raise InvalidKey(f"key has {why} at position {position}: "
                     f"{escape_controls(preview_key(key))!r}; "
                     "S3 keys cannot hold control characters or lone surrogates",
                     key=key, position=position)


@dataclass(frozen=True)
class _Violation:
    limit_name: str
    limit: int
    actual: int
    unit: str = "bytes"
    segment: str | None = None
    segment_index: int | None = None


def _first_violation(name, location, limits, max_length) -> _Violation | None:
    key = full_key(location, name)
    if 4 * len(key) <= min(limits.max_key_bytes, limits.max_segment_bytes) and (
            max_length is None or len(name) <= max_length):
        return None  # the common case: no character takes more than 4 bytes in UTF-8
    key_bytes = utf8_len(key)
    if key_bytes > limits.max_key_bytes:
        return _Violation("max_key_bytes", limits.max_key_bytes, key_bytes)
    for index, segment in enumerate(key.split("/")):
        segment_bytes = utf8_len(segment)
        if segment_bytes > limits.max_segment_bytes:
            return _Violation("max_segment_bytes", limits.max_segment_bytes, segment_bytes,
                              segment=segment, segment_index=index)
    if max_length is not None and len(name) > max_length:
        return _Violation("max_length", max_length, len(name), unit="characters")
    return None


def _shorten(name: str, location: str, limits: KeyLimits, max_length: int | None) -> str | None:
    """The shortened name, or None when even an empty stem would not fit."""
    directory, _, filename = name.rpartition("/")
    prefix = f"{directory}/" if directory else ""
    stem, ext = split_extension(filename)
    tail = f"{short_hash(name)}{ext}"
    fixed_bytes = utf8_len(full_key(location, prefix + tail))
    byte_room = min(limits.max_key_bytes - fixed_bytes,
                    limits.max_segment_bytes - utf8_len(tail)) - 1
    char_room = (max_length - len(prefix) - len(tail) - 1) if max_length is not None else len(stem)
    head = _cut(stem, max_chars=char_room, max_bytes=byte_room)
    candidate = f"{prefix}{head}-{tail}" if head else f"{prefix}{tail}"
    if _first_violation(candidate, location, limits, max_length) is not None:
        return None
    return candidate


def _cut(text: str, *, max_chars: int, max_bytes: int) -> str:
    """The longest prefix of ``text`` within both budgets, not ending in a dangling mark."""
    if max_chars <= 0 or max_bytes <= 0:
        return ""
    used = 0
    end = 0
    for char in text[:max_chars]:
        used += utf8_len(char)
        if used > max_bytes:
            break
        end += 1
    head = text[:_cluster_start(text, end)]
    while head and (head[-1] in _DANGLING
                    or unicodedata.category(head[-1]) in ("Cf", "Cc", "Zs")):
        head = head[:-1]
    return head


def _cluster_start(text: str, end: int) -> int:
    """Move a cut at ``end`` back so it does not split a character from its marks or joiner."""
    while 0 < end < len(text) and (_is_mark(text[end]) or text[end] in "\u200d\ufe0f"
                                   or text[end - 1] == "\u200d"):
        end -= 1
    return end


def _is_mark(char: str) -> bool:
    return bool(unicodedata.combining(char)) or unicodedata.category(char) in ("Mn", "Me", "Mc")


def _key_too_long(name, location, limits, problem: _Violation, *, shortened: bool) -> KeyTooLong:
    key = full_key(location, name)
    where = (f"segment {problem.segment_index} ({preview_key(problem.segment)!r}) is "
             if problem.segment is not None else
             "name is " if problem.limit_name == "max_length" else "key is ")
    message = (f"{where}{problem.actual} {problem.unit}, over {problem.limit_name}="
               f"{problem.limit} for key {preview_key(key)!r}")
    if shortened:
        message += ("; shortening the file name cannot fit it because the directory, location "
                    "or extension alone is too long")
    return KeyTooLong(
        message, key=key, key_bytes=utf8_len(key), limit=problem.limit,
        limit_name=problem.limit_name, actual=problem.actual, unit=problem.unit,
        segment=problem.segment, segment_index=problem.segment_index, policy=limits.policy,
    )
