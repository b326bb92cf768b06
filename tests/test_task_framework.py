"""The task framework: Django 6's built-in where it exists, the backport where it does not, and
a system-check error (E013), never an import crash, where there is neither."""

import sys

import django
import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from storage_guard import checks
from storage_guard.checks import Codes
from storage_guard.integrations import task_framework

NO_FRAMEWORK = (
    "RETRY_WITH_TASKS is on but no task framework is installed (neither Django 6's django.tasks "
    "nor the django_tasks backport), so no retry would ever be enqueued.")


@pytest.fixture
def no_task_framework(monkeypatch):
    """Django 5.2 without the backport: importing ``django_tasks`` fails. On Django 6 the built-in
    always exists (Django's own checks import it), so there only the backport is looked for."""
    if django.VERSION >= (6, 0):
        monkeypatch.setattr(task_framework, "CANDIDATES", ("django_tasks",))
    monkeypatch.setitem(sys.modules, "django_tasks", None)


def storage_guard_checks() -> list[tuple[str, str]]:
    """What ``manage.py check`` reports of storage_guard's checks (it used to crash here)."""
    return [(m.id, m.msg) for m in run_checks(tags=[checks.TAG])]


def test_the_built_in_framework_is_used_where_django_has_one():
    from storage_guard import tasks

    expected = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
    assert task_framework.module_name() == expected
    assert settings.TASK_FRAMEWORK == expected
    assert tasks.task_backends is sys.modules[expected].task_backends
    assert type(tasks.retry_save).__module__.startswith(expected)


def test_without_a_framework_retries_as_tasks_are_check_error_e013(no_task_framework):
    assert task_framework.module_name() is None
    with override_settings(STORAGE_GUARD={"RETRY_WITH_TASKS": True}):
        found = storage_guard_checks()
    assert found == [(Codes.TASK_BACKEND_CANNOT_DEFER, NO_FRAMEWORK)]


def test_without_a_framework_and_retries_as_tasks_off_there_is_nothing_to_report(
        no_task_framework):
    assert storage_guard_checks() == []


def test_loading_a_missing_framework_says_what_to_install(no_task_framework):
    with pytest.raises(ImproperlyConfigured, match=r"django-storage-guard\[tasks\]"):
        task_framework.load()
