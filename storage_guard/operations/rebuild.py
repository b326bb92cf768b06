"""Finding the storage that can deliver a stashed save again, in whatever process replays it.

A storage in ``settings.STORAGES`` is named by its alias, and replay takes ``storages[alias]``.
A storage built in code (``FileField(storage=GuardedS3Storage(bucket_name=...))``) has no
alias; its records carry a ``storage_spec`` instead: the class's dotted path and the options it
was built with, minus credentials. Replay builds the storage again from it; the credentials
come from where django-storages looks when they are not passed (``AWS_S3_ACCESS_KEY_ID`` and
friends in settings, the environment, an instance role). An option that cannot be written down
as JSON (a ``botocore`` ``Config``, a callable) makes such a storage refuse to be built, with
``ImproperlyConfigured``: its saves could be stashed but never delivered.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import InvalidStorageError, storages
from django.utils.module_loading import import_string

# Options never written into a record: credentials, whatever their spelling.
SECRET_WORDS = ("secret", "password", "token", "credential")
SECRET_OPTIONS = frozenset({"access_key", "secret_key", "security_token"})

_rebuilt: dict[str, object] = {}


def configured_alias(storage_cls: type, options: dict) -> str:
    """The ``STORAGES`` alias whose backend and options are exactly these, or ""."""
    path = f"{storage_cls.__module__}.{storage_cls.__qualname__}"
    for alias, spec in settings.STORAGES.items():
        if spec.get("BACKEND") == path and (spec.get("OPTIONS") or {}) == options:
            return alias
    return ""


def is_secret(option: str) -> bool:
    return option in SECRET_OPTIONS or any(word in option for word in SECRET_WORDS)


def describe(storage_cls: type, options: dict) -> dict:
    """What replay needs to build this storage again; refuses options JSON cannot hold."""
    kept = {name: value for name, value in options.items() if not is_secret(name)}
    unwritable = sorted(name for name, value in kept.items() if not _is_json(value))
    if unwritable:
        raise ImproperlyConfigured(
            f"{storage_cls.__name__} built outside settings.STORAGES with option(s) "
            f"{', '.join(unwritable)} that cannot be recorded for a later retry, so its failed "
            f"saves could never be delivered. Declare it in settings.STORAGES and use "
            f"storages[alias] (or pass alias=...).")
    return {"backend": f"{storage_cls.__module__}.{storage_cls.__qualname__}", "options": kept}


def _is_json(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def storage_for(record):
    """The storage that delivers ``record``; raises ``InvalidStorageError`` when none can."""
    if record.storage_alias:
        return storages[record.storage_alias]
    spec = record.storage_spec
    if not spec:
        raise InvalidStorageError(
            "the save has no storage alias and no storage_spec (its storage was not in "
            "settings.STORAGES when it was recorded)")
    cache_key = json.dumps(spec, sort_keys=True)
    if cache_key not in _rebuilt:
        try:
            _rebuilt[cache_key] = import_string(spec["backend"])(**spec["options"])
        except (ImportError, TypeError, ImproperlyConfigured) as exc:
            raise InvalidStorageError(f"cannot rebuild {spec['backend']}: {exc}") from exc
    return _rebuilt[cache_key]
