"""System checks (``manage.py check``) for guarded storages, their options and their fields.

Every id lives in ``Codes`` with its message in ``Messages`` and its hint in ``Hints``; each is
documented in ``docs/checks.md``. Ids are never reused: a retired id stays reserved here.
The checks register when this module is imported, which ``StorageGuardConfig.ready()`` does.
"""

from __future__ import annotations

import datetime
from numbers import Real

from django.apps import apps as global_apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.utils.module_loading import import_string

from storage_guard import conf
from storage_guard.keys import HASH_CHARS, MIN_NAME_CHARS, SluggedUploadTo, full_key, utf8_len
from storage_guard.saving import presets

TAG = "storage_guard"
# A date whose strftime output is as long as any: a Wednesday in September.
WIDEST_DATE = datetime.datetime(2000, 9, 27, 23, 59, 59)
MAX_KEY_BYTES_RANGE = (16, 1024)
MIN_SEGMENT_BYTES = 16
MIN_SLUG_LENGTH = HASH_CHARS + 2


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
    TASK_FRAMEWORK_MISSING = ("On Django 5.2 install the backport (pip install "
                              "\"django-storage-guard[tasks]\") and add \"django_tasks\" to "
                              "INSTALLED_APPS; or upgrade to Django 6; or turn RETRY_WITH_TASKS "
                              "off.")


# Options that must be whole numbers of at least this much.
# (breaker_threshold 0 turns the breaker off.)
MINIMUMS = {"max_attempts": 1, "breaker_threshold": 0, "max_metadata_bytes": 1,
            "max_header_bytes": 1, "stash_db_max_bytes": 0, "spool_max_memory": 0}
# Durations in seconds that must be greater than zero.
POSITIVE = ("connect_timeout", "read_timeout", "retry_deadline", "put_timeout_floor",
            "put_timeout_ceiling")
# Rates in bytes per second that must be greater than zero.
RATES = ("put_timeout_rate",)
# Durations in seconds that may be zero (no backoff, no cool-down) but not negative.
NON_NEGATIVE = ("backoff_base", "backoff_cap", "breaker_cooldown", "breaker_window",
                "breaker_initial_cooldown")
INTEGERS = (*MINIMUMS, "max_key_bytes", "max_segment_bytes", "max_slug_length")


# --- Options ---------------------------------------------------------------------------------


@checks.register(TAG)
def check_options(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every option of ``settings.STORAGE_GUARD`` and of each guarded storage's OPTIONS."""
    found = _unknown_presets()
    if found:
        return found
    try:
        defaults = conf.storage_defaults()
    except ImproperlyConfigured as exc:
        return [_error("SETTINGS_INVALID", error=exc)]
    found = list(_option_errors(defaults, overridden=None, alias=None))
    for alias, options in _guarded_storage_options():
        merged = conf.storage_options(options)
        found += _option_errors(merged, overridden=set(options), alias=alias)
    return found


def _unknown_presets() -> list[checks.CheckMessage]:
    user = getattr(settings, "STORAGE_GUARD", None) or {}
    named = [(_where("preset", None), user["PRESET"])] if "PRESET" in user else []
    named += [(_where("preset", alias), options["preset"])
              for alias, options in _guarded_storage_options() if "preset" in options]
    return [_error("PRESET_UNKNOWN", where=where, value=value, names=sorted(presets.PRESETS))
            for where, value in named if value not in presets.PRESETS]


def _guarded_storage_options():
    known = {name.lower() for name in conf.STORAGE_OPTIONS}
    for alias, spec in getattr(settings, "STORAGES", {}).items():
        if _is_guarded_class(spec.get("BACKEND", "")):
            options = spec.get("OPTIONS") or {}
            yield alias, {k: v for k, v in options.items() if k in known}


def _option_errors(options: dict, *, overridden: set | None, alias: str | None):
    """Rule violations; for a storage, only those involving an option it sets itself."""
    for keys, message in _rules(options, alias):
        if overridden is None or overridden & set(keys):
            yield message


def _rules(options: dict, alias: str | None):
    def where(key):
        return _where(key, alias)

    bad_type = set()
    for key in INTEGERS:
        if key in options and not _is_int(options[key]):
            bad_type.add(key)
            yield (key,), _error("OPTION_TYPE", where=where(key), value=options[key],
                                 kind="a whole number")
    for key in (*POSITIVE, *NON_NEGATIVE, *RATES):
        if key in options and not _is_number(options[key]):
            bad_type.add(key)
            yield (key,), _error("OPTION_TYPE", where=where(key), value=options[key],
                                 kind="a number of bytes per second" if key in RATES
                                 else "a number of seconds")
    values = {k: v for k, v in options.items() if k not in bad_type}
    yield from _range_rules(values, where)
    yield from _choice_rules(values, where)
    yield from _key_rules(values, where)


def _range_rules(values, where):
    for key, minimum in MINIMUMS.items():
        if key in values and values[key] < minimum:
            yield (key,), _error("OPTION_MINIMUM", where=where(key), value=values[key],
                                 minimum=minimum)
    for key in (*POSITIVE, *RATES):
        if key in values and values[key] <= 0:
            yield (key,), _error("OPTION_NOT_POSITIVE", where=where(key), value=values[key])
    for key in NON_NEGATIVE:
        if key in values and values[key] < 0:
            yield (key,), _error("OPTION_MINIMUM", where=where(key), value=values[key],
                                 minimum=0)
    base, cap = values.get("backoff_base"), values.get("backoff_cap")
    if base is not None and cap is not None and cap < base:
        yield ("backoff_base", "backoff_cap"), _error(
            "BACKOFF_ORDER", where_cap=where("backoff_cap"), cap=cap,
            where_base=where("backoff_base"), base=base)


def _choice_rules(values, where):
    for name, choices in conf.CHOICES.items():
        key = name.lower()
        if key in values and values[key] not in choices:
            yield (key,), _error("OPTION_CHOICE", where=where(key), value=values[key],
                                 choices=list(choices))


def _key_rules(values, where):
    """Each limit must fit inside the next; a limit already reported is not compared again."""
    low, high = MAX_KEY_BYTES_RANGE
    key_bytes = values.get("max_key_bytes")
    if key_bytes is not None and not low <= key_bytes <= high:
        yield ("max_key_bytes",), _error("KEY_BYTES_RANGE", where=where("max_key_bytes"),
                                         value=key_bytes, low=low, high=high)
        return
    segment = values.get("max_segment_bytes")
    if segment is not None and key_bytes is not None \
            and not MIN_SEGMENT_BYTES <= segment <= key_bytes:
        yield ("max_segment_bytes", "max_key_bytes"), _error(
            "SEGMENT_BYTES_RANGE", where=where("max_segment_bytes"), value=segment,
            low=MIN_SEGMENT_BYTES, high=key_bytes)
        return
    slug = values.get("max_slug_length")
    if slug is not None and segment is not None and not MIN_SLUG_LENGTH <= slug <= segment:
        yield ("max_slug_length", "max_segment_bytes"), _error(
            "SLUG_LENGTH_RANGE", where=where("max_slug_length"), value=slug,
            low=MIN_SLUG_LENGTH, high=segment)


def _where(key: str, alias: str | None) -> str:
    if alias is None:
        return f"STORAGE_GUARD[{key.upper()!r}]"
    return f"STORAGES[{alias!r}]['OPTIONS'][{key!r}]"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


# --- Models and fields -----------------------------------------------------------------------


@checks.register(checks.Tags.models, TAG)
def check_models(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """File fields on guarded storages, and slug fields on the models that have them."""
    found: list[checks.CheckMessage] = []
    for model in _models(app_configs):
        guarded = [f for f in model._meta.local_concrete_fields
                   if isinstance(f, models.FileField) and _is_guarded(f.storage)]
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
        found.append(_error("FIELD_MAX_LENGTH", obj=field, hint_args={"required": required},
                            field=label, max_length=field.max_length, prefix=prefix,
                            prefix_length=len(prefix), min_name=MIN_NAME_CHARS))
    problem = _prefix_problem(field.storage, prefix)
    if problem:
        found.append(_error("PREFIX_TOO_LONG", obj=field, field=label, **problem))
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
    shown = _preview(key_prefix)
    if utf8_len(key_prefix) + MIN_NAME_CHARS > max_key:
        return {"prefix": shown, "limit_name": "max_key_bytes", "limit": max_key,
                "problem": f"{utf8_len(key_prefix)} bytes"}
    for segment in key_prefix.split("/"):
        if utf8_len(segment) > max_segment:
            return {"prefix": shown, "limit_name": "max_segment_bytes", "limit": max_segment,
                    "problem": f"{utf8_len(segment)} bytes in one segment"}
    return None


def _preview(text: str, chars: int = 60) -> str:
    return text if len(text) <= chars else f"{text[:chars]}…"


def _check_slug_fields(model, guarded) -> list[checks.CheckMessage]:
    max_slug = min(int(getattr(f.storage, "max_slug_length", conf.get("MAX_SLUG_LENGTH")))
                   for f in guarded)
    return [
        checks.Warning(
            Messages.SLUG_FIELD_TOO_LONG.format(field=_label(field), max_length=field.max_length,
                                                max_slug_length=max_slug,
                                                model=model._meta.label),
            hint=Hints.SLUG_FIELD_TOO_LONG.format(max_slug_length=max_slug),
            obj=field, id=Codes.SLUG_FIELD_TOO_LONG)
        for field in model._meta.local_concrete_fields
        if isinstance(field, models.SlugField) and (field.max_length or 0) > max_slug
    ]


# --- Helpers ---------------------------------------------------------------------------------


def _is_guarded(storage) -> bool:
    try:
        from storage_guard.storage import GuardedS3Storage
    except ImportError:  # pragma: no cover - the storage module is part of the app
        return False
    try:
        return isinstance(storage, GuardedS3Storage)
    except ImproperlyConfigured:  # a lazy default storage that cannot be built: E002-E011 say why
        return False


def _is_guarded_class(path: str) -> bool:
    try:
        from storage_guard.storage import GuardedS3Storage

        backend = import_string(path)
    except ImportError:
        return False
    return isinstance(backend, type) and issubclass(backend, GuardedS3Storage)


def _label(field) -> str:
    return f"{field.model._meta.label}.{field.name}"


def _error(name: str, *, obj=None, hint_args: dict | None = None, **fields) -> checks.Error:
    hint_args = {**fields, **(hint_args or {})}
    return checks.Error(getattr(Messages, name).format(**fields),
                        hint=getattr(Hints, name).format(**hint_args),
                        obj=obj, id=getattr(Codes, name))


# --- Deployment ------------------------------------------------------------------------------


@checks.register(TAG)
def check_deployment(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Settings that work but defeat a promise: deadline, rollback survival, stash location."""
    try:
        defaults = conf.storage_defaults()
        database_alias = conf.get("DATABASE_ALIAS")
    except ImproperlyConfigured:
        return []  # reported by check_options
    if _unknown_presets():
        return []  # reported by check_options
    found = _sqlite_atomic_requests(database_alias) + _task_backend() + _last_resort_dir()
    found += _deadline_warnings(defaults, alias=None)
    for alias, options in _guarded_storage_options():
        if {"retry_deadline", "read_timeout", "preset"} & set(options):
            found += _deadline_warnings(conf.storage_options(options), alias=alias)
        found += _stash_problems(alias, {**defaults, **options})
    return found


# A gunicorn worker's default timeout, and the time a request keeps for its own work.
WORKER_TIMEOUT = 30.0
REQUEST_MARGIN = 5.0
# Presets meant for saves inside a request (see docs/configuration.md, "Fitting in a request").
REQUEST_PRESETS = ("interactive", "standard")


def _deadline_warnings(values: dict, *, alias: str | None) -> list[checks.CheckMessage]:
    deadline, read_timeout = values.get("retry_deadline"), values.get("read_timeout")
    if not (_is_number(deadline) and _is_number(read_timeout)):
        return []
    if deadline < read_timeout:
        return [_warning("DEADLINE_BELOW_READ_TIMEOUT", where=_where("retry_deadline", alias),
                         deadline=deadline, read_timeout=read_timeout)]
    connect, database = values.get("connect_timeout"), record_database_budget()
    if values.get("preset") not in REQUEST_PRESETS or not _is_number(connect):
        return []
    total = round(deadline + connect + database, 3)
    if total <= WORKER_TIMEOUT - REQUEST_MARGIN:
        return []
    return [_warning("DEADLINE_OVER_REQUEST_BUDGET", where=_where("retry_deadline", alias),
                     deadline=deadline, preset=values["preset"], connect=connect,
                     database=database, total=total, worker=WORKER_TIMEOUT,
                     suggested=round(WORKER_TIMEOUT - REQUEST_MARGIN - connect - database, 3))]


def record_database_budget() -> float:
    """The longest the record and stash writes of a failed save can take: one connect and
    two statements (stash, then record), bounded by the record connection's timeouts."""
    config = conf.get_config()
    connect = config.get("RECORD_CONNECT_TIMEOUT", conf.ASSUMED_RECORD_TIMEOUTS[0])
    statement = config.get("RECORD_STATEMENT_TIMEOUT", conf.ASSUMED_RECORD_TIMEOUTS[1])
    return float(connect + 2 * statement)


def _sqlite_atomic_requests(alias: str) -> list[checks.CheckMessage]:
    database = settings.DATABASES.get(alias, {})
    if "sqlite" in database.get("ENGINE", "") and database.get("ATOMIC_REQUESTS"):
        return [_warning("SQLITE_ATOMIC_REQUESTS", alias=alias)]
    return []


def _stash_problems(alias: str, values: dict) -> list[checks.CheckMessage]:
    stash_alias = values.get("stash_storage")
    if not stash_alias:
        return []
    where = _where("stash_storage", alias)
    stash_spec = settings.STORAGES.get(stash_alias)
    if stash_spec is None:
        return [_error("STASH_STORAGE_UNKNOWN", where=where, value=stash_alias)]
    own = settings.STORAGES[alias].get("OPTIONS") or {}
    other = stash_spec.get("OPTIONS") or {}
    same = [own.get(k) for k in ("endpoint_url", "bucket_name")] == \
        [other.get(k) for k in ("endpoint_url", "bucket_name")]
    if same and stash_spec.get("BACKEND", "").endswith("S3Storage"):
        return [_warning("STASH_STORAGE_SAME_BUCKET", where=where, value=stash_alias)]
    return []


def _warning(name: str, **fields) -> checks.Warning:
    return checks.Warning(getattr(Messages, name).format(**fields),
                          hint=getattr(Hints, name).format(**fields), id=getattr(Codes, name))


@checks.register(TAG, deploy=True)
def check_breaker_cache(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """``manage.py check --deploy``: a per-process breaker is fine in development only."""
    try:
        alias = conf.get("BREAKER_CACHE")
    except ImproperlyConfigured:
        return []
    backend = settings.CACHES.get(alias, {}).get("BACKEND", "")
    if backend.endswith("DummyCache"):
        kind, effect = "dummy", "it keeps nothing, so the circuit breaker can never open"
    elif backend.endswith("LocMemCache"):
        kind, effect = "local-memory", "every process has its own circuit breaker"
    else:
        return []
    return [_warning("BREAKER_CACHE_PER_PROCESS", alias=alias, kind=kind, effect=effect)]


def _task_backend() -> list[checks.CheckMessage]:
    if not conf.get("RETRY_WITH_TASKS"):
        return []
    from storage_guard.integrations import task_framework

    alias = conf.get("TASK_BACKEND")
    if task_framework.module_name() is None:  # E013 too: no framework, so nothing can defer
        return [checks.Error(Messages.TASK_FRAMEWORK_MISSING, hint=Hints.TASK_FRAMEWORK_MISSING,
                             id=Codes.TASK_BACKEND_CANNOT_DEFER)]
    try:
        can_defer = task_framework.load().task_backends[alias].supports_defer
    except Exception:  # noqa: BLE001 - an unknown alias is also a backend that cannot defer
        can_defer = False
    if can_defer:
        return []
    return [_error("TASK_BACKEND_CANNOT_DEFER", alias=alias)]


def _last_resort_dir() -> list[checks.CheckMessage]:
    from storage_guard.saving import spool

    if spool.directory() is None:
        return []  # turned off on purpose (documented)
    reason = spool.problem()
    return [_warning("LAST_RESORT_DIR_UNUSABLE", reason=reason)] if reason else []


# --- Success records (record_writer) ---------------------------------------------------------

RECORD_CHOICES = {"RECORD_SUCCESSES": ("all", "sample", "none"),
                  "RECORD_WRITER": ("background", "inline")}
RECORD_MINIMUMS = {"RECORD_QUEUE_SIZE": 1, "RECORD_BATCH_SIZE": 1}


@checks.register(TAG)
def check_record_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """E006 for the record modes, E002/E003 for the sample rate and the writer's sizes."""
    try:
        config = conf.get_config()
    except ImproperlyConfigured:
        return []  # reported by check_options
    found = [_error("OPTION_CHOICE", where=_where(key.lower(), None), value=config[key],
                    choices=list(choices))
             for key, choices in RECORD_CHOICES.items() if config[key] not in choices]
    for key, minimum in RECORD_MINIMUMS.items():
        if not _is_int(config[key]):
            found.append(_error("OPTION_TYPE", where=_where(key.lower(), None),
                                value=config[key], kind="a whole number"))
        elif config[key] < minimum:
            found.append(_error("OPTION_MINIMUM", where=_where(key.lower(), None),
                                value=config[key], minimum=minimum))
    rate = config["RECORD_SAMPLE_RATE"]
    if not _is_number(rate) or not 0 <= rate <= 1:
        found.append(_error("OPTION_TYPE", where=_where("record_sample_rate", None), value=rate,
                            kind="a number between 0 and 1"))
    return found
