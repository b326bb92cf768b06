"""Which task framework retries as tasks use: Django's ``django.tasks`` (Django 6 and later) or,
on Django 5.2, the ``django_tasks`` backport (``pip install "django-storage-guard[tasks]"``).

Nothing here imports a framework at import time, so a project without one still starts, and
``RETRY_WITH_TASKS`` without one is system-check error ``storage_guard.E013`` (``checks.py``)
rather than an ``ImportError`` on the first failed save.
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec
from types import ModuleType

from django.core.exceptions import ImproperlyConfigured

# In order of preference: the built-in first, so the backport installed next to Django 6 is unused.
CANDIDATES = ("django.tasks", "django_tasks")
MISSING = ("RETRY_WITH_TASKS needs a task framework: Django 6's django.tasks, or on Django 5.2 "
           "the django-tasks backport (pip install \"django-storage-guard[tasks]\").")


def module_name() -> str | None:
    """The import name of the installed task framework, or None when there is none."""
    for name in CANDIDATES:
        try:
            if find_spec(name) is not None:
                return name
        except (ImportError, ValueError):  # a parent package missing, or a blocked module
            continue
    return None


def load() -> ModuleType:
    """The task framework module (``task``, ``task_backends``); ImproperlyConfigured if none."""
    name = module_name()
    if name is None:
        raise ImproperlyConfigured(MISSING)
    return import_module(name)
