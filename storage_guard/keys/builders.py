"""Key builders: ``SluggedUploadTo`` (an ``upload_to`` callable) and ``date_partitioned_key``.

Both only compose names; what a name may be is decided in ``keys.limits`` (``fit_name``) and
``keys.slugs``.
"""

from __future__ import annotations

import datetime
import unicodedata

from django.utils import timezone
from django.utils.deconstruct import deconstructible

from storage_guard import conf
from storage_guard.keys.limits import (
    MIN_NAME_CHARS,
    KeyLimits,
    fit_name,
    full_key,
    short_hash,
    split_extension,
    utf8_len,
)
from storage_guard.keys.slugs import slugify_extension, slugify_segment


def date_partitioned_key(prefix: str, name: str, when=None) -> str:
    """``prefix/year=YYYY/month=MM/day=DD/name``: the Hive-style layout query engines read.

    ``when`` is a date or datetime (default: now). Aware datetimes are partitioned by their
    UTC date so that every server agrees; naive datetimes and dates are used as given.
    """
    day = _partition_date(when)
    parts = [prefix.strip("/")] if prefix and prefix.strip("/") else []
    parts.append(f"year={day.year:04d}/month={day.month:02d}/day={day.day:02d}")
    parts.append(name.lstrip("/"))
    return "/".join(parts)


def _partition_date(when) -> datetime.date:
    if when is None:
        when = timezone.now()
    if isinstance(when, datetime.datetime):
        if timezone.is_aware(when):
            when = when.astimezone(datetime.UTC)
        return when.date()
    return when


@deconstructible(path="storage_guard.keys.SluggedUploadTo")
class SluggedUploadTo:
    """An ``upload_to`` callable: a fixed prefix, slugged field values, the file name, fitted.

    ``SluggedUploadTo("invoices", fields=["customer.name"], date_partitioned=True)`` files an
    upload ``Rechnung März.PDF`` as ``invoices/acme-gmbh/year=2025/month=03/day=14/
    rechnung-marz.pdf``. Each value in ``fields`` (a dotted attribute path on the instance)
    becomes one slugged segment. The result is passed through ``fit_name`` with the limits,
    ``location`` and ``max_slug_length`` of the field's storage and the field's ``max_length``,
    so an over-long name is shortened or refused here, before any request.
    """

    def __init__(self, prefix: str = "", *, fields=(), date_partitioned: bool = False,
                 slug_filename: bool = True):
        self.prefix = prefix.strip("/")
        self.fields = tuple(fields)
        self.date_partitioned = date_partitioned
        self.slug_filename = slug_filename
        if self.prefix and any(part in ("", ".", "..") for part in self.prefix.split("/")):
            raise ValueError(f"upload_to prefix {prefix!r} has an empty, '.' or '..' segment")

    def __call__(self, instance, filename: str) -> str:
        field = self._field_of(instance)
        storage = getattr(field, "storage", None)
        max_length = getattr(field, "max_length", None)
        location = getattr(storage, "location", "") or ""
        limits = KeyLimits.for_storage(storage)
        slug_length = int(getattr(storage, "max_slug_length", conf.get("MAX_SLUG_LENGTH")))
        segment_length = self._segment_length(slug_length, location, limits, max_length)
        segments = [slugify_segment(_resolve(instance, path), segment_length)
                    for path in self.fields]
        name = self._join(segments, self._clean_filename(filename, slug_length))
        return fit_name(name, location=location, limits=limits, max_length=max_length)

    def __eq__(self, other):
        # Equal when built alike, so makemigrations sees no change between runs.
        if not isinstance(other, SluggedUploadTo):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self):
        return hash(self._identity())

    def _identity(self) -> tuple:
        return self.prefix, self.fields, self.date_partitioned, self.slug_filename

    def example_prefix(self) -> str:
        """The shortest directory this produces (one character per field segment)."""
        parts = [p for p in (self.prefix, *("x" for _ in self.fields)) if p]
        if self.date_partitioned:
            parts.append("year=2000/month=01/day=01")
        return "".join(f"{p}/" for p in parts)

    def _join(self, segments: list[str], filename: str) -> str:
        directory = "/".join(s for s in (self.prefix, *segments) if s)
        if self.date_partitioned:
            return date_partitioned_key(directory, filename)
        return f"{directory}/{filename}" if directory else filename

    def _segment_length(self, slug_length, location, limits, max_length) -> int:
        """``max_slug_length``, lowered so the field segments leave room for a minimal name."""
        if not self.fields:
            return slug_length
        fixed = self.example_prefix()  # one "x" per field segment, which the slugs replace
        count = len(self.fields)
        budgets = [limits.max_key_bytes - utf8_len(full_key(location, fixed)) + count]
        if max_length is not None:
            budgets.append(max_length - len(fixed) + count)
        room = (min(budgets) - MIN_NAME_CHARS) // count
        return max(1, min(slug_length, room))

    def _clean_filename(self, filename: str, slug_length: int) -> str:
        base = str(filename).replace("\\", "/").rsplit("/", 1)[-1]
        if not self.slug_filename:
            cleaned = "".join(c for c in unicodedata.normalize("NFC", base)
                              if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
            return cleaned.strip(" .") or short_hash(base)
        stem, ext = split_extension(base)
        return f"{slugify_segment(stem, slug_length)}{slugify_extension(ext)}"

    def _field_of(self, instance):
        for field in instance._meta.concrete_fields:
            if getattr(field, "upload_to", None) is self:
                return field
        return None


def _resolve(instance, path: str):
    value = instance
    for attr in path.split("."):
        value = getattr(value, attr, None) if value is not None else None
        if callable(value):
            value = value()
    return "" if value is None else value
