"""Checks of the options: ``settings.STORAGE_GUARD`` and each guarded storage's OPTIONS
(E002-E011, E014; project-wide only ``BREAKER_REFRESH``: E002, E003), and the success-record
settings (E002, E003, E006; ``RECORD_LINGER``: E002, E003).

The rules themselves are in ``storage_guard/options.py``; this module reports what they find,
each problem as the Error of its id, naming the option where it is set.
"""

from __future__ import annotations

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from storage_guard import conf
from storage_guard import options as rules
from storage_guard.checks.codes import error, where
from storage_guard.saving import presets
from storage_guard.storage import is_guarded

# The settings of the success records (project-wide only), in the order they are reported.
RECORD_SETTINGS = ("RECORD_SUCCESSES", "RECORD_WRITER", "RECORD_QUEUE_SIZE",
                   "RECORD_BATCH_SIZE", "RECORD_SAMPLE_RATE", "RECORD_LINGER")
# Other project-wide-only settings held to a rule of storage_guard/options.py, checked with the
# project-wide values of the storage options.
PROJECT_SETTINGS = ("BREAKER_REFRESH",)


def check_options(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every option of ``settings.STORAGE_GUARD`` and of each guarded storage's OPTIONS."""
    found = unknown_presets()
    if found:
        return found
    try:
        defaults = conf.storage_defaults()
        project = {name.lower(): conf.get(name) for name in PROJECT_SETTINGS}
    except ImproperlyConfigured as exc:
        return [error("SETTINGS_INVALID", error=exc)]
    found = option_errors({**defaults, **project}, overridden=None, alias=None)
    for alias, options in guarded_storage_options():
        merged = conf.storage_options(options)
        found += option_errors(merged, overridden=set(options), alias=alias)
    return found


def check_record_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """E006 for the record modes, E002/E003 for the sample rate and the writer's sizes."""
    try:
        config = conf.get_config()
    except ImproperlyConfigured:
        return []  # reported by check_options
    return [error(problem.name, **problem.fields)
            for name in RECORD_SETTINGS
            for problem in rules.problems({name.lower(): config[name]},
                                          lambda key: where(key, None))]


def unknown_presets() -> list[checks.CheckMessage]:
    """E014 for each preset name, project-wide or a storage's, that is not a preset."""
    user = getattr(settings, "STORAGE_GUARD", None) or {}
    named = [(where("preset", None), user["PRESET"])] if "PRESET" in user else []
    named += [(where("preset", alias), options["preset"])
              for alias, options in guarded_storage_options() if "preset" in options]
    return [error("PRESET_UNKNOWN", where=at, value=value, names=sorted(presets.PRESETS))
            for at, value in named if value not in presets.PRESETS]


def guarded_storage_options():
    """``(alias, options)`` for each guarded storage: the storage options its OPTIONS set."""
    known = {name.lower() for name in conf.STORAGE_OPTIONS}
    for alias, spec in getattr(settings, "STORAGES", {}).items():
        if is_guarded(spec.get("BACKEND", "")):
            options = spec.get("OPTIONS") or {}
            yield alias, {k: v for k, v in options.items() if k in known}


def option_errors(options: dict, *, overridden: set | None, alias: str | None) -> list:
    """Rule violations; for a storage, only those involving an option it sets itself."""
    return [error(problem.name, **problem.fields)
            for problem in rules.problems(options, lambda key: where(key, alias))
            if overridden is None or overridden & set(problem.keys)]
