"""System checks (``manage.py check``) for guarded storages, their options and their fields.

One module a job: ``codes`` (every id with its message and hint), ``options`` (the settings and
each storage's OPTIONS, held to the rules of ``storage_guard/options.py``), ``fields`` (FileField
and SlugField lengths) and ``deployment`` (deadline budget, record database, stash, breaker
cache, task framework, spool). Each id is documented in ``docs/checks.md``.

The checks register when this package is imported, which ``StorageGuardConfig.ready()`` does,
in the order below (the order ``manage.py check`` lists their messages in).
"""

from __future__ import annotations

from django.core import checks

from storage_guard.checks.codes import TAG, Codes, Hints, Messages
from storage_guard.checks.deployment import (
    REQUEST_MARGIN,
    REQUEST_PRESETS,
    WORKER_TIMEOUT,
    check_breaker_cache,
    check_deployment,
    record_database_budget,
)
from storage_guard.checks.fields import (
    WIDEST_DATE,
    check_file_field,
    check_models,
    upload_to_prefix,
)
from storage_guard.checks.options import check_options, check_record_settings
from storage_guard.options import (
    MAX_KEY_BYTES_RANGE,
    MIN_SEGMENT_BYTES,
    MIN_SLUG_LENGTH,
    NON_NEGATIVE,
    POSITIVE,
    RATES,
)

__all__ = [
    "MAX_KEY_BYTES_RANGE", "MIN_SEGMENT_BYTES", "MIN_SLUG_LENGTH", "NON_NEGATIVE",
    "POSITIVE", "RATES", "REQUEST_MARGIN", "REQUEST_PRESETS", "TAG", "WIDEST_DATE",
    "WORKER_TIMEOUT", "Codes", "Hints", "Messages", "check_breaker_cache", "check_deployment",
    "check_file_field", "check_models", "check_options", "check_record_settings",
    "record_database_budget", "upload_to_prefix",
]

checks.register(TAG)(check_options)
checks.register(checks.Tags.models, TAG)(check_models)
checks.register(TAG)(check_deployment)
checks.register(TAG, deploy=True)(check_breaker_cache)
checks.register(TAG)(check_record_settings)
