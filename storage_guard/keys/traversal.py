"""Django's name safety checks, made with string operations instead of ``pathlib``.

Every save asks three times whether a name could escape the storage's root:
``validate_file_name(name, allow_relative_path=True)`` before and after ``get_available_name``,
and ``get_available_overwrite_name`` (django-storages) inside it. Each parses the name with
``pathlib``, which is most of what a save's name handling costs. For a POSIX path both
questions have exact string answers:

* ``PurePosixPath(s).is_absolute()`` is ``s.startswith("/")``;
* ``".." in PurePosixPath(s).parts`` is ``".." in s.split("/")``: ``pathlib`` drops empty and
  ``.`` components and keeps every other one as it is, ``..`` included.

The functions here raise what Django and django-storages raise, with the same messages.
``tests/test_name_checks.py`` compares them with the originals over every name built from
the characters that matter, and pins the originals' code, so a Django or django-storages
release that changes them fails the suite. Anything but a ``str`` goes to Django's own function.
"""

from __future__ import annotations

import os
import pathlib

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.utils import validate_file_name

# On Windows ``pathlib.PurePath`` is ``PureWindowsPath`` (drives, backslashes): django-storages'
# own check is used there.
POSIX_PATHS = type(pathlib.PurePath()) is pathlib.PurePosixPath
_NO_FILE_NAME = frozenset({"", ".", ".."})


def validate_name(name):
    """``validate_file_name(name, allow_relative_path=True)``: ``name``, or
    ``SuspiciousFileOperation`` for a name with no file name, an absolute one or one with a
    ``..`` segment (backslashes count as slashes)."""
    if type(name) is not str:
        return validate_file_name(name, allow_relative_path=True)
    if os.path.basename(name) in _NO_FILE_NAME:
        raise SuspiciousFileOperation(f"Could not derive file name from '{name}'")
    slashed = name.replace("\\", "/")
    if slashed.startswith("/") or has_parent_segment(slashed):
        raise SuspiciousFileOperation(f"Detected path traversal attempt in '{name}'")
    return name


def has_parent_segment(path: str) -> bool:
    """Whether ``..`` is one of the ``/``-separated segments of ``path``."""
    return ".." in path and ".." in path.split("/")


def overwrite_name(name: str, max_length: int | None) -> str | None:
    """What django-storages' ``get_available_overwrite_name`` returns for a ``name`` that
    needs no truncation (or raises, for a name that could escape the root); None when the
    name must be truncated, or is not a ``str``: then django-storages' own function decides."""
    if type(name) is not str or not POSIX_PATHS or \
            (max_length is not None and len(name) > max_length):
        return None
    dir_name, file_name = os.path.split(name)
    if has_parent_segment(dir_name):
        raise SuspiciousFileOperation(f"Detected path traversal attempt in '{dir_name}'")
    validate_name(file_name)
    return name
