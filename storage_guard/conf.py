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

from storage_guard.saving import presets

MB = 1024 * 1024

DEFAULTS: dict[str, object] = {
    # Retries and timeouts (per storage operation): the numbers of the default preset
    # (MAX_ATTEMPTS, BACKOFF_*, RETRY_DEADLINE, CONNECT_TIMEOUT, READ_TIMEOUT, PUT_TIMEOUT_*);
    # the one table of their values is storage_guard/saving/presets.py.
    "PRESET": presets.DEFAULT_PRESET,
    **presets.values(presets.DEFAULT_PRESET),
    "ON_FAILURE": "raise",
    # Circuit breaker.
    "BREAKER_THRESHOLD": 5,
    "BREAKER_COOLDOWN": 30.0,
    "BREAKER_CACHE": "default",
    "BREAKER_WINDOW": 1.0,
    "BREAKER_INITIAL_COOLDOWN": 1.0,
    "BREAKER_CACHE_BACKOFF": 30.0,
    "BREAKER_REFRESH": 0.1,
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
    "EXPECT_CONTINUE_BYTES": 2 * MB,
    "DATABASE_ALIAS": "default",
    "INDEPENDENT_CONNECTION": True,
    "RECORD_CONNECT_TIMEOUT": 2.0,
    "RECORD_STATEMENT_TIMEOUT": 3.0,
    "LAST_RESORT_DIR": None,  # None: <temp dir>/storage_guard-spool-<uid>-<db>; "" = off
    "RECORD_SUCCESSES": "all",
    "RECORD_SAMPLE_RATE": 0.01,
    "RECORD_WRITER": "background",
    "RECORD_QUEUE_SIZE": 10_000,
    "RECORD_BATCH_SIZE": 500,
    "RECORD_LINGER": 0.2,
    # Generated content and documents.
    "INLINE_MAX_BYTES": 10 * MB,
    "PRESIGNED_EXPIRY": 3600,
    "STATUS_TOKEN_MAX_AGE": 24 * 3600,
    "DOCUMENT_PREFIX": "documents",
    # Retry workers.
    "RETRY_WITH_TASKS": False,
    "TASK_BACKEND": "default",
    "TASK_QUEUE": "default",
    "RETRY_TASK_DELAY": None,
    "RETRY_TASK_CAP": 3600.0,
    "RETRY_TASK_MAX_ROUNDS": 10,
    # Observability.
    "LOG_KEY_CHARS": 120,
    "METRICS_COUNT_LIMIT": 100_000,
}

# RECORD_CONNECT_TIMEOUT and RECORD_STATEMENT_TIMEOUT (seconds) where DEFAULTS does not have
# them yet: the record connection's bounds that the request-budget arithmetic counts on.
ASSUMED_RECORD_TIMEOUTS = (2.0, 3.0)

# Keys a storage may override in STORAGES[alias]["OPTIONS"], lower-cased there.
STORAGE_OPTIONS = (
    "MAX_ATTEMPTS", "CONNECT_TIMEOUT", "READ_TIMEOUT", "RETRY_DEADLINE", "BACKOFF_BASE",
    "BACKOFF_CAP", "ON_FAILURE", "BREAKER_THRESHOLD", "BREAKER_COOLDOWN", "MAX_KEY_BYTES",
    "MAX_SEGMENT_BYTES", "MAX_SLUG_LENGTH", "KEY_POLICY", "MAX_METADATA_BYTES",
    "MAX_HEADER_BYTES", "STASH_STORAGE", "STASH_DB_MAX_BYTES", "SPOOL_MAX_MEMORY",
    "PRESET", "PUT_TIMEOUT_FLOOR", "PUT_TIMEOUT_RATE", "PUT_TIMEOUT_CEILING",
    "BREAKER_WINDOW", "BREAKER_INITIAL_COOLDOWN", "EXPECT_CONTINUE_BYTES",
)


def __getattr__(name: str):
    # CHOICES moved to storage_guard.options (keyed in lower case there, with every rule);
    # it is looked up late because that module reads this one. Removed in 0.2.0.
    if name == "CHOICES":
        import warnings

        from storage_guard.options import CHOICES

        warnings.warn("storage_guard.conf.CHOICES moved to storage_guard.options.CHOICES",
                      DeprecationWarning, stacklevel=2)
        return {key.upper(): CHOICES[key] for key in ("on_failure", "key_policy")}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def get_config() -> dict[str, object]:
    user = getattr(settings, "STORAGE_GUARD", None) or {}
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(
            f"STORAGE_GUARD has unknown key(s) {unknown}; valid keys are {sorted(DEFAULTS)}"
        )
    preset = user.get("PRESET", DEFAULTS["PRESET"])
    if preset not in presets.PRESETS:
        raise ImproperlyConfigured(
            presets.unknown_preset_message("STORAGE_GUARD['PRESET']", preset))
    return {**DEFAULTS, **presets.values(preset), **user}


def get(name: str):
    return get_config()[name]


def storage_defaults() -> dict[str, object]:
    """Project-wide values for the per-storage options, keyed as in OPTIONS (lower case)."""
    config = get_config()
    return {key.lower(): config[key] for key in STORAGE_OPTIONS}


def storage_options(options: dict) -> dict[str, object]:
    """A storage's effective options: project values, then its own preset, then ``options``.

    An unknown preset name is left for the caller to report (system check
    ``storage_guard.E014``, or ``ImproperlyConfigured`` when the storage is built).
    """
    preset = options.get("preset")
    own = presets.option_values(preset) if preset in presets.PRESETS else {}
    return {**storage_defaults(), **own, **options}


def reset_cache(*, setting: str, **kwargs) -> None:
    """Receiver for ``setting_changed`` (connected in ``AppConfig.ready``)."""
    if setting == "STORAGE_GUARD":
        get_config.cache_clear()
