"""Object keys S3 will accept: length limits, slugs and key builders, one module each.

* ``keys.limits``: the byte limits (``KeyLimits``) and ``fit_name``, the gate every save path goes
  through; also the measures they use (``utf8_len``, ``short_hash``, ``full_key``).
* ``keys.slugs``: ``slugify_segment``, any text made into a safe key segment.
* ``keys.builders``: ``SluggedUploadTo`` (an ``upload_to`` callable) and ``date_partitioned_key``.
* ``keys.traversal``: Django's name safety checks (no file name, absolute, ``..``) without
  ``pathlib``, for the save path.

Import from ``storage_guard.keys``; the modules are how the code is laid out, not the API.
``docs/keys.md`` gives the reason for every number.
"""

from __future__ import annotations

import warnings

from storage_guard.keys.builders import SluggedUploadTo, date_partitioned_key
from storage_guard.keys.limits import (
    HASH_CHARS,
    MAX_EXTENSION_CHARS,
    MIN_NAME_CHARS,
    POLICIES,
    WRAPPER_SUFFIXES,
    KeyLimits,
    check_key_characters,
    fit_name,
    full_key,
    short_hash,
    split_extension,
    utf8_len,
)
from storage_guard.keys.slugs import slugify_segment

__all__ = [
    "HASH_CHARS",
    "MAX_EXTENSION_CHARS",
    "MIN_NAME_CHARS",
    "POLICIES",
    "WRAPPER_SUFFIXES",
    "KeyLimits",
    "SluggedUploadTo",
    "check_key_characters",
    "date_partitioned_key",
    "fit_name",
    "full_key",
    "short_hash",
    "slugify_segment",
    "split_extension",
    "utf8_len",
]


def __getattr__(name: str):
    # ``check_headers`` was re-exported here before 0.1.0; it lives with the rest of the save path.
    if name == "check_headers":
        warnings.warn("storage_guard.keys.check_headers moved to "
                      "storage_guard.saving.headers.check_headers; the old import path stops "
                      "working in storage_guard 0.2.0", DeprecationWarning, stacklevel=2)
        from storage_guard.saving.headers import check_headers

        return check_headers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
