"""Text from outside, made safe for where it goes: header values, keys, log lines and rows.

A file name, a content type or a metadata value comes from whoever uploaded the file. Three
places cannot take everything a Python ``str`` can hold:

* **HTTP headers** refuse CR, LF and NUL (``http.client`` raises before sending), S3 takes only
  ASCII in user metadata, and a control character in a header is never what anyone meant. The
  headers module refuses such values with ``InvalidHeader`` before any request; ``find_unsafe``
  names the first offending character.
* **Log lines** must not be forged: a key containing ``\\n`` would start a second line that looks
  like a real one. ``escape_controls`` writes control characters, lone surrogates and bidi
  overrides as escapes (``\\n``, ``\\x00``, ``\\u202e``).
* **Database rows**: PostgreSQL text refuses NUL, and neither database driver can encode a lone
  surrogate. ``storable`` escapes both and cuts the text to its column, so a record can always be
  written; ``storable_json`` does the same inside JSON values.
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata

__all__ = [
    "ESCAPED",
    "EscapingFilter",
    "describe_char",
    "escape_controls",
    "find_unsafe",
    "install_log_escaping",
    "is_control",
    "preview_key",
    "redact",
    "storable",
    "storable_fields",
    "storable_json",
    "storable_text",
]

# Bidirectional embeddings, overrides and isolates: they reorder how a line reads on screen.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMES = {"\x00": "NUL", "\t": "tab", "\n": "line feed", "\r": "carriage return",
          "\x7f": "DEL"}
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SECRET_PARAM = re.compile(
    r"(?i)\b(x-amz-signature|x-amz-credential|x-amz-security-token|signature|"
    r"awsaccesskeyid|credential)=([^&\s,\"'<>]+)")
MESSAGE_CHARS = 500
# How many characters of a key a message shows (log lines have their own setting, LOG_KEY_CHARS).
PREVIEW_CHARS = 80


def redact(text: str) -> str:
    """``text`` with signature, credential and token values replaced, cut to a sane length."""
    text = _SECRET_PARAM.sub(r"\1=[redacted]", text)
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 1] + "…"


def preview_key(key: str | None, limit: int = PREVIEW_CHARS) -> str:
    """``key`` shortened for display to at most ``limit`` characters: its head, ``…``, and its
    last third (the file name), so both where it lives and what it is stay visible.

    A key within ``limit`` characters is returned unchanged; ``None`` is shown as ``""``; a
    ``limit`` under 1 counts as 1 (a misconfigured length must not break the log line that
    shows it). Counts characters, not bytes: this is for people reading; S3's byte limits are
    enforced in ``storage_guard.keys``.
    """
    limit = max(int(limit), 1)
    key = key or ""
    if len(key) <= limit:
        return key
    tail = (limit - 1) // 3
    return key[:limit - 1 - tail] + "…" + (key[-tail:] if tail else "")


def is_control(char: str) -> bool:
    """C0 and C1 control characters and DEL (what ``unicodedata`` calls category ``Cc``)."""
    return unicodedata.category(char) == "Cc"


def is_surrogate(char: str) -> bool:
    return "\ud800" <= char <= "\udfff"


def describe_char(char: str) -> str:
    """``'line feed (U+000A)'``: a character named so a person can find it."""
    name = _NAMES.get(char) or ("lone surrogate" if is_surrogate(char) else None)
    if name is None:
        name = unicodedata.name(char, "control character" if is_control(char) else "character")
    return f"{name} (U+{ord(char):04X})"


def find_unsafe(text: str, *, ascii_only: bool = False, allow_tab: bool = True
                ) -> tuple[int, str] | None:
    """``(index, why)`` of the first character that cannot go into a header, or None."""
    if text.isascii() and text.isprintable():
        return None  # the common case, checked in C: no control, surrogate or non-ASCII char
    for index, char in enumerate(text):
        if char == "\t" and allow_tab:
            continue
        if is_control(char) or is_surrogate(char):
            return index, describe_char(char)
        if ascii_only and ord(char) > 0x7E:
            return index, f"non-ASCII {describe_char(char)}"
    return None


def _escape_char(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with control characters, lone surrogates and bidi overrides as escapes."""
    if text.isprintable() and (text.isascii() or not BIDI_CONTROLS.intersection(text)):
        return text  # the common case: nothing to do, no copy
    return "".join(_escape_char(c) if is_control(c) or is_surrogate(c) or c in BIDI_CONTROLS
                   else c for c in text)


def storable(value, max_length: int | None = None) -> str:
    """``value`` as text any database column takes: NUL and lone surrogates escaped, cut."""
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and "\x00" not in text:
        return text if max_length is None else text[:max_length]  # the common case
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if max_length is None else text[:max_length]


def storable_text(value, max_length: int | None = None):
    """A text column's value made storable: bytes become a placeholder (never the bytes
    themselves), text goes through ``storable``; anything else is returned as it is (the
    column's own preparation turns it into text)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        return storable(value, max_length)
    return value


def storable_json(value):
    """A JSON value (dicts, lists, scalars) whose every string, keys included, is storable."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(k) if isinstance(k, str) else k: storable_json(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"  # never the bytes themselves
    return value


def storable_fields(model, fields: dict) -> dict:
    """``fields`` of a ``model`` row with every text and JSON value made storable.

    Text goes through ``storable`` (cut to the column's ``max_length``), bytes become a
    placeholder (never stored as text), JSON values through ``storable_json``; numbers, dates,
    ``None`` and query expressions pass unchanged.
    """
    kinds = _column_kinds(model)
    safe = {}
    for name, value in fields.items():
        kind = kinds.get(name)
        if kind == "json":
            value = storable_json(value)
        elif kind is not None:
            value = storable_text(value, kind[1])
        safe[name] = value
    return safe


@functools.cache
def _column_kinds(model) -> dict:
    """Field name -> ``"json"``, or ``("text", max_length)`` (None: unlimited)."""
    from django.db import models

    kinds = {}
    for field in model._meta.concrete_fields:
        if isinstance(field, models.JSONField):
            kinds[field.name] = kinds[field.attname] = "json"
        elif isinstance(field, models.CharField | models.TextField):
            kinds[field.name] = kinds[field.attname] = ("text", field.max_length)
    return kinds


# --------------------------------------------------------------------- log forging

_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime"}


# An extra field that marks a line whose message, arguments and fields were all escaped by the
# code that logs it (telemetry's success line): the filter removes it and leaves the line alone.
ESCAPED = "_storage_guard_escaped"


class EscapingFilter(logging.Filter):
    """Escapes control characters in a record's message, its arguments and its extra fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.pop(ESCAPED, False):
            return True
        if isinstance(record.msg, str):
            record.msg = escape_controls(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_escaped(arg) for arg in record.args)
        attrs = record.__dict__
        for name in attrs.keys() - _STANDARD_ATTRS:  # the extra fields (set difference in C)
            value = attrs[name]
            if type(value) not in _PLAIN:
                attrs[name] = _escaped(value)
        return True


# Values that never need escaping: checked by exact type, the common case on every line.
_PLAIN = frozenset({int, float, bool, type(None)})


def _escaped(value):
    if isinstance(value, str):
        return escape_controls(value)
    if isinstance(value, BaseException):
        return escape_controls(str(value))
    if isinstance(value, list | tuple) and any(isinstance(v, str) for v in value):
        return type(value)(escape_controls(v) if isinstance(v, str) else v for v in value)
    return value


_FILTER = EscapingFilter()


def install_log_escaping(logger: logging.Logger) -> logging.Logger:
    """Add the escaping filter to ``logger`` (once) and return it."""
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
