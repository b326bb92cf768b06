"""Slugs: any text (a title, a customer name, a file name) made into a safe key segment.

A slug is ASCII ``[a-z0-9]`` runs joined by single hyphens, never empty, and never longer than
its limit: a long one ends in a hash of the whole original, so two titles never share a slug.
"""

from __future__ import annotations

import re
import unicodedata

from text_unidecode import unidecode

from storage_guard import conf
from storage_guard.keys.limits import HASH_CHARS, short_hash

_SLUG_JUNK = re.compile(r"[^a-z0-9]+")


def slugify_segment(value, max_length: int | None = None) -> str:
    """A key segment made from any text: ASCII ``[a-z0-9]`` runs joined by single hyphens.

    The text is NFKC-normalised, transliterated to ASCII with ``text-unidecode``, lower-cased,
    and every run of other characters becomes one ``-``. A slug longer than ``max_length``
    (default: the ``MAX_SLUG_LENGTH`` setting) is cut and ends in ``-`` plus a hash of the whole
    (NFC-normalised) original, so two different long titles never share a slug. Text with
    nothing to transliterate (only emoji, say) becomes its hash: the result is never empty.
    """
    if max_length is None:
        max_length = int(conf.get("MAX_SLUG_LENGTH"))
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    original = unicodedata.normalize("NFC", str(value))
    slug = _SLUG_JUNK.sub("-", _ascii_lower(original)).strip("-")
    if not slug:
        return short_hash(original, min(HASH_CHARS, max_length))
    if len(slug) <= max_length:
        return slug
    return _cut_slug(slug, original, max_length)


def slugify_extension(ext: str) -> str:
    """``.PDF`` -> ``.pdf``, ``.tar.GZ`` -> ``.tar.gz``; an extension with no ASCII letters goes."""
    parts = (_SLUG_JUNK.sub("", _ascii_lower(p)) for p in ext.split(".")[1:])
    return "".join(f".{p}" for p in parts if p)


def _ascii_lower(text: str) -> str:
    return unidecode(unicodedata.normalize("NFKC", text)).lower()


def _cut_slug(slug: str, original: str, max_length: int) -> str:
    digest = short_hash(original, min(HASH_CHARS, max_length))
    room = max_length - len(digest) - 1
    head = slug[:room].rstrip("-") if room > 0 else ""
    return f"{head}-{digest}" if head else digest
