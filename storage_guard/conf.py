"""The one place where storage_guard reads its settings.

``settings.STORAGE_GUARD`` (a dict with upper-case keys) is merged over ``DEFAULTS``; the result
is cached and the cache is cleared on Django's ``setting_changed`` signal, so
``override_settings`` works. Per-storage ``OPTIONS`` (lower-case keys, see ``STORAGE_OPTIONS``)
override the project-wide value for that storage. Every key is documented, with the reason for
its default, in ``docs/configuration.md``.
"""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MB = 1024 * 1024

DEFAULTS: dict[str, object] = {
    # Retries (per storage operation).
    "MAX_ATTEMPTS": 5,
    "CONNECT_TIMEOUT": 3.0,
    "READ_TIMEOUT": 10.0,
    "RETRY_DEADLINE": 30.0,
    "BACKOFF_BASE": 0.2,
    "BACKOFF_CAP": 5.0,
    "ON_FAILURE": "raise",
    # Circuit breaker.
    "BREAKER_THRESHOLD": 5,
    "BREAKER_COOLDOWN": 30.0,
    "BREAKER_CACHE": "default",
    # Keys and headers.
    "MAX_KEY_BYTES": 1024,
    "MAX_SEGMENT_BYTES": 255,
    "MAX_SLUG_LENGTH": 200,
    "KEY_POLICY": "shorten",
    "MAX_METADATA_BYTES": 2048,
    "MAX_HEADER_BYTES": 8192,
    # Stash and records.
    "STASH_STORAGE": None,
    "STASH_DB_MAX_BYTES": 10 * MB,
    "SPOOL_MAX_MEMORY": 5 * MB,
    "DATABASE_ALIAS": "default",
    "INDEPENDENT_CONNECTION": True,
    "RECORD_SUCCESSES": "all",
    "RECORD_SAMPLE_RATE": 0.01,
    "RECORD_WRITER": "background",
    "RECORD_QUEUE_SIZE": 10_000,
    "RECORD_BATCH_SIZE": 500,
    # Generated content and documents.
    "INLINE_MAX_BYTES": 10 * MB,
    "PRESIGNED_EXPIRY": 3600,
    "DOCUMENT_PREFIX": "documents",
    # Retry workers.
    "RETRY_WITH_TASKS": False,
    "TASK_BACKEND": "default",
    "RETRY_TASK_DELAY": None,
    "RETRY_TASK_CAP": 3600.0,
    "RETRY_TASK_MAX_ROUNDS": 10,
    # Observability.
    "LOG_KEY_CHARS": 120,
}

# Keys a storage may override in STORAGES[alias]["OPTIONS"], lower-cased there.
STORAGE_OPTIONS = (
    "MAX_ATTEMPTS", "CONNECT_TIMEOUT", "READ_TIMEOUT", "RETRY_DEADLINE", "BACKOFF_BASE",
    "BACKOFF_CAP", "ON_FAILURE", "BREAKER_THRESHOLD", "BREAKER_COOLDOWN", "MAX_KEY_BYTES",
    "MAX_SEGMENT_BYTES", "MAX_SLUG_LENGTH", "KEY_POLICY", "MAX_METADATA_BYTES",
    "MAX_HEADER_BYTES", "STASH_STORAGE", "STASH_DB_MAX_BYTES", "SPOOL_MAX_MEMORY",
)

CHOICES = {"ON_FAILURE": ("raise", "defer"), "KEY_POLICY": ("shorten", "reject")}


@cache
def get_config() -> dict[str, object]:
    user = getattr(settings, "STORAGE_GUARD", None) or {}
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(
            f"STORAGE_GUARD has unknown key(s) {unknown}; valid keys are {sorted(DEFAULTS)}"
        )
    return {**DEFAULTS, **user}


def get(name: str):
    return get_config()[name]


def storage_defaults() -> dict[str, object]:
    """Project-wide values for the per-storage options, keyed as in OPTIONS (lower case)."""
    config = get_config()
    return {key.lower(): config[key] for key in STORAGE_OPTIONS}


def reset_cache(*, setting: str, **kwargs) -> None:
    """Receiver for ``setting_changed`` (connected in ``AppConfig.ready``)."""
    if setting == "STORAGE_GUARD":
        get_config.cache_clear()
