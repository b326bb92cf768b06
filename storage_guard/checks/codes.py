"""The catalogue of storage_guard's system checks: each id in ``Codes``, its message in
``Messages`` and its hint in ``Hints``, under one name (the axes pattern: ``error("NAME", ...)``
builds the Error with ``Codes.NAME``, ``Messages.NAME`` and ``Hints.NAME``).

Every id is documented in ``docs/checks.md``. Ids are never reused: a retired id stays reserved.
"""

from __future__ import annotations

from django.core import checks

TAG = "storage_guard"


class Codes:
    FIELD_MAX_LENGTH = "storage_guard.E001"
    OPTION_TYPE = "storage_guard.E002"
    OPTION_MINIMUM = "storage_guard.E003"
    OPTION_NOT_POSITIVE = "storage_guard.E004"
    BACKOFF_ORDER = "storage_guard.E005"
    OPTION_CHOICE = "storage_guard.E006"
    KEY_BYTES_RANGE = "storage_guard.E007"
    SEGMENT_BYTES_RANGE = "storage_guard.E008"
    SLUG_LENGTH_RANGE = "storage_guard.E009"
    PREFIX_TOO_LONG = "storage_guard.E010"
    SETTINGS_INVALID = "storage_guard.E011"
    SLUG_FIELD_TOO_LONG = "storage_guard.W001"
    DEADLINE_BELOW_READ_TIMEOUT = "storage_guard.W002"
    SQLITE_ATOMIC_REQUESTS = "storage_guard.W003"
    STASH_STORAGE_UNKNOWN = "storage_guard.E012"
    STASH_STORAGE_SAME_BUCKET = "storage_guard.W004"
    BREAKER_CACHE_PER_PROCESS = "storage_guard.W005"
    TASK_BACKEND_CANNOT_DEFER = "storage_guard.E013"
    PRESET_UNKNOWN = "storage_guard.E014"
    DEADLINE_OVER_REQUEST_BUDGET = "storage_guard.W006"
    LAST_RESORT_DIR_UNUSABLE = "storage_guard.W007"
    BREAKER_REFRESH_OVER_WINDOW = "storage_guard.W008"


class Messages:
    FIELD_MAX_LENGTH = (
        "{field} has max_length={max_length}, too small for its upload_to prefix {prefix!r} "
        "({prefix_length} characters) plus a minimal name of {min_name} characters.")
    OPTION_TYPE = "{where} is {value!r}; it must be {kind}."
    OPTION_MINIMUM = "{where} is {value!r}; it must be at least {minimum}."
    OPTION_NOT_POSITIVE = "{where} is {value!r}; it must be greater than 0."
    BACKOFF_ORDER = "{where_cap} ({cap!r}) is less than {where_base} ({base!r})."
    OPTION_CHOICE = "{where} is {value!r}; it must be one of {choices}."
    KEY_BYTES_RANGE = "{where} is {value!r}; it must be between {low} and {high}."
    SEGMENT_BYTES_RANGE = (
        "{where} is {value!r}; it must be between {low} and max_key_bytes ({high}).")
    SLUG_LENGTH_RANGE = (
        "{where} is {value!r}; it must be between {low} and max_segment_bytes ({high}).")
    PREFIX_TOO_LONG = (
        "{field}: the key prefix {prefix!r} is {problem}, leaving no room for a name under "
        "{limit_name}={limit}.")
    SETTINGS_INVALID = "settings.STORAGE_GUARD is invalid: {error}"
    SLUG_FIELD_TOO_LONG = (
        "{field} has max_length={max_length}, longer than max_slug_length={max_slug_length} "
        "of the guarded storage used by {model}.")
    DEADLINE_BELOW_READ_TIMEOUT = (
        "{where} ({deadline!r}s) is shorter than read_timeout ({read_timeout!r}s): a single "
        "stalled attempt outlasts the deadline and no retry can start.")
    SQLITE_ATOMIC_REQUESTS = (
        "DATABASES[{alias!r}] is SQLite with ATOMIC_REQUESTS on: a request that fails after a "
        "failed save rolls back its SaveAttempt record and stash.")
    STASH_STORAGE_UNKNOWN = "{where} is {value!r}, which is not an alias in settings.STORAGES."
    STASH_STORAGE_SAME_BUCKET = (
        "{where} is {value!r}, which writes to the same endpoint and bucket as the storage it "
        "protects: when that bucket fails, so does the stash.")
    BREAKER_CACHE_PER_PROCESS = (
        "STORAGE_GUARD['BREAKER_CACHE'] is {alias!r}, a {kind} cache: {effect}.")
    TASK_BACKEND_CANNOT_DEFER = (
        "RETRY_WITH_TASKS is on but the task backend {alias!r} cannot run a task later "
        "(no run_after support), so no retry would ever be enqueued.")
    PRESET_UNKNOWN = "{where} is {value!r}, which is not a preset; the presets are {names}."
    DEADLINE_OVER_REQUEST_BUDGET = (
        "{where} ({deadline!r}s) with the {preset!r} preset, plus {connect!r}s for a last "
        "connect and {database!r}s of record database timeouts, is {total!r}s: a failing save "
        "inside a request would not end well under a {worker!r}s worker timeout.")
    LAST_RESORT_DIR_UNUSABLE = (
        "The last-resort spool cannot take entries: {reason}. A failed save whose record "
        "cannot be written (database down) would lose its bytes.")
    BREAKER_REFRESH_OVER_WINDOW = (
        "STORAGE_GUARD['BREAKER_REFRESH'] ({refresh!r}s) is at least half of {where} "
        "({window!r}s): a run of failures started in another process may be ended by this "
        "process's successes only that late, so a flaky but healthy endpoint's runs might "
        "survive the window and open the circuit.")
    TASK_FRAMEWORK_MISSING = (
        "RETRY_WITH_TASKS is on but no task framework is installed (neither Django 6's "
        "django.tasks nor the django_tasks backport), so no retry would ever be enqueued.")


class Hints:
    FIELD_MAX_LENGTH = ("Set max_length to at least {required} (255 is a good default for "
                        "keys), or shorten upload_to.")
    OPTION_TYPE = "Set it to a number in settings.STORAGE_GUARD or the storage's OPTIONS."
    OPTION_MINIMUM = "Raise it to {minimum} or more."
    OPTION_NOT_POSITIVE = "Use a positive number of seconds."
    BACKOFF_ORDER = "backoff_cap is the longest sleep between attempts; make it >= backoff_base."
    OPTION_CHOICE = "Use one of {choices}."
    KEY_BYTES_RANGE = ("S3 refuses keys over 1024 UTF-8 bytes, and fewer than 16 leaves no room "
                       "for a shortened name.")
    SEGMENT_BYTES_RANGE = ("Use 255 (the file-name limit of the filesystems behind SeaweedFS and "
                           "MinIO) unless your server allows longer segments.")
    SLUG_LENGTH_RANGE = "A slug is one key segment, so it must fit in max_segment_bytes."
    PREFIX_TOO_LONG = "Shorten the storage's location or the field's upload_to."
    SETTINGS_INVALID = "Fix settings.STORAGE_GUARD; see docs/configuration.md."
    SLUG_FIELD_TOO_LONG = ("Slugs longer than max_slug_length are cut (with a hash) when they "
                           "become key segments. Set the SlugField's max_length to "
                           "{max_slug_length} or less, or raise max_slug_length.")
    DEADLINE_BELOW_READ_TIMEOUT = "Make retry_deadline at least two or three read timeouts."
    SQLITE_ATOMIC_REQUESTS = ("Use PostgreSQL or MySQL in production (records then go through "
                              "a second connection), or turn ATOMIC_REQUESTS off.")
    STASH_STORAGE_UNKNOWN = "Add that alias to STORAGES, or set stash_storage to None."
    STASH_STORAGE_SAME_BUCKET = ("Point the stash at a shared volume or a bucket on another "
                                 "endpoint, or set it to None (stash in the database).")
    BREAKER_CACHE_PER_PROCESS = ("Point BREAKER_CACHE at a shared cache (Redis or Memcached) so "
                                 "every process opens and closes the circuit together.")
    TASK_BACKEND_CANNOT_DEFER = ("Use a backend that supports run_after (e.g. django_tasks_db's "
                                 "DatabaseBackend), or set TASK_BACKEND to one.")
    PRESET_UNKNOWN = ("Use one of the presets described in docs/configuration.md, or leave "
                      "preset out and set the numbers one by one.")
    DEADLINE_OVER_REQUEST_BUDGET = (
        "Lower retry_deadline to {suggested!r}s or less, or use preset 'background' for a "
        "storage that only saves outside requests.")
    LAST_RESORT_DIR_UNUSABLE = ("Set STORAGE_GUARD['LAST_RESORT_DIR'] to a directory this "
                                "process owns and can write, on a volume that outlives the "
                                "container (see docs/failure.md).")
    BREAKER_REFRESH_OVER_WINDOW = ("Keep BREAKER_REFRESH well under breaker_window (the "
                                   "defaults are 0.1 s and 1 s), or set it to 0 to read the "
                                   "breaker's cache before every attempt.")
    TASK_FRAMEWORK_MISSING = ("On Django 5.2 install the backport (pip install "
                              "\"django-storage-guard[tasks]\") and add \"django_tasks\" to "
                              "INSTALLED_APPS; or upgrade to Django 6; or turn RETRY_WITH_TASKS "
                              "off.")


def error(name: str, *, obj=None, hint_args: dict | None = None, **fields) -> checks.Error:
    """The Error ``name`` with its message formatted with ``fields`` (and its hint with
    ``fields`` and ``hint_args``)."""
    hint_args = {**fields, **(hint_args or {})}
    return checks.Error(getattr(Messages, name).format(**fields),
                        hint=getattr(Hints, name).format(**hint_args),
                        obj=obj, id=getattr(Codes, name))


def warning(name: str, *, obj=None, **fields) -> checks.Warning:
    """The Warning ``name``, message and hint formatted with ``fields``."""
    return checks.Warning(getattr(Messages, name).format(**fields),
                          hint=getattr(Hints, name).format(**fields), obj=obj,
                          id=getattr(Codes, name))


def where(key: str, alias: str | None) -> str:
    """How a message names an option: project-wide, or in one storage's OPTIONS."""
    if alias is None:
        return f"STORAGE_GUARD[{key.upper()!r}]"
    return f"STORAGES[{alias!r}]['OPTIONS'][{key!r}]"
