"""Checks of the models: each FileField on a guarded storage (E001, E010) and the SlugFields
of its model (W001)."""

from __future__ import annotations

import datetime

from django.apps import apps as global_apps
from django.core import checks
from django.db import models

from storage_guard import conf
from storage_guard.checks.codes import error, warning
from storage_guard.keys import MIN_NAME_CHARS, SluggedUploadTo, full_key, utf8_len
from storage_guard.saving.safetext import preview_key
from storage_guard.storage import is_guarded

# A date whose strftime output is as long as any: a Wednesday in September.
WIDEST_DATE = datetime.datetime(2000, 9, 27, 23, 59, 59)


def check_models(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """File fields on guarded storages, and slug fields on the models that have them."""
    found: list[checks.CheckMessage] = []
    for model in _models(app_configs):
        guarded = [f for f in model._meta.local_concrete_fields
                   if isinstance(f, models.FileField) and is_guarded(f.storage)]
        for field in guarded:
            found += check_file_field(field)
        if guarded:
            found += _check_slug_fields(model, guarded)
    return found


def _models(app_configs):
    if app_configs is None:
        return global_apps.get_models()
    return [model for config in app_configs for model in config.get_models()]


def check_file_field(field) -> list[checks.CheckMessage]:
    """E001 and E010 for one FileField (or ImageField) whose storage is guarded."""
    prefix = upload_to_prefix(field.upload_to)
    label = _label(field)
    found = []
    required = len(prefix) + MIN_NAME_CHARS
    if field.max_length is not None and field.max_length < required:
        found.append(error("FIELD_MAX_LENGTH", obj=field, hint_args={"required": required},
                           field=label, max_length=field.max_length, prefix=prefix,
                           prefix_length=len(prefix), min_name=MIN_NAME_CHARS))
    problem = _prefix_problem(field.storage, prefix)
    if problem:
        found.append(error("PREFIX_TOO_LONG", obj=field, field=label, **problem))
    return found


def upload_to_prefix(upload_to) -> str:
    """The directory an ``upload_to`` puts names in, at its longest for a strftime pattern."""
    if isinstance(upload_to, SluggedUploadTo):
        return upload_to.example_prefix()
    if callable(upload_to) or not upload_to:
        return ""
    prefix = WIDEST_DATE.strftime(str(upload_to))
    return prefix if prefix.endswith("/") else f"{prefix}/"


def _prefix_problem(storage, prefix: str) -> dict | None:
    key_prefix = full_key(getattr(storage, "location", "") or "", prefix)
    max_key = int(getattr(storage, "max_key_bytes", conf.get("MAX_KEY_BYTES")))
    max_segment = int(getattr(storage, "max_segment_bytes", conf.get("MAX_SEGMENT_BYTES")))
    shown = preview_key(key_prefix)
    if utf8_len(key_prefix) + MIN_NAME_CHARS > max_key:
        return {"prefix": shown, "limit_name": "max_key_bytes", "limit": max_key,
                "problem": f"{utf8_len(key_prefix)} bytes"}
    for segment in key_prefix.split("/"):
        if utf8_len(segment) > max_segment:
            return {"prefix": shown, "limit_name": "max_segment_bytes", "limit": max_segment,
                    "problem": f"{utf8_len(segment)} bytes in one segment"}
    return None


def _check_slug_fields(model, guarded) -> list[checks.CheckMessage]:
    max_slug = min(int(getattr(f.storage, "max_slug_length", conf.get("MAX_SLUG_LENGTH")))
                   for f in guarded)
    return [
        warning("SLUG_FIELD_TOO_LONG", obj=field, field=_label(field),
                max_length=field.max_length, max_slug_length=max_slug, model=model._meta.label)
        for field in model._meta.local_concrete_fields
        if isinstance(field, models.SlugField) and (field.max_length or 0) > max_slug
    ]


def _label(field) -> str:
    return f"{field.model._meta.label}.{field.name}"
