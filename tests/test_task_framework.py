"""The task framework: Django 6's built-in where it exists, the backport where it does not, and
a system-check error (E013), never an import crash, where there is neither."""

import sys

import django
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from storage_guard import checks, task_framework
from storage_guard.checks import Codes

NO_FRAMEWORK = (
    "RETRY_WITH_TASKS is on but no task framework is installed (neither Django 6's django.tasks "
    "nor the django_tasks backport), so no retry would ever be enqueued.")


@pytest.fixture
def no_task_framework(monkeypatch):
    """Imports of both frameworks fail, as on Django 5.2 without the backport."""
    for name in task_framework.CANDIDATES:
        monkeypatch.setitem(sys.modules, name, None)


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
        found = [(m.id, m.msg) for m in checks.check_deployment()]
        with pytest.raises(SystemCheckError, match=r"storage_guard\.E013"):
            call_command("check")
    assert found == [(Codes.TASK_BACKEND_CANNOT_DEFER, NO_FRAMEWORK)]


def test_without_a_framework_and_retries_as_tasks_off_there_is_nothing_to_report(
        no_task_framework):
    assert checks.check_deployment() == []
    call_command("check")


def test_loading_a_missing_framework_says_what_to_install(no_task_framework):
    with pytest.raises(ImproperlyConfigured, match=r"django-storage-guard\[tasks\]"):
        task_framework.load()
