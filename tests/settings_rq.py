"""Settings for the RQ worker processes of ``tests/test_tasks_rq.py``: retries as tasks on
``django_tasks_rq`` (Redis), records on the pytest-django PostgreSQL test database.

The Redis database comes from ``STORAGE_GUARD_TEST_REDIS_URL`` and the queue name from
``STORAGE_GUARD_TEST_RQ_QUEUE`` (one per test run, so nothing a crashed run left behind is taken).
"""

import os

from tests.settings_tasks import *  # noqa: F403
from tests.settings_tasks import INSTALLED_APPS, REDIS_URL, STORAGE_GUARD

RQ_QUEUE = os.environ.get("STORAGE_GUARD_TEST_RQ_QUEUE", "storage-guard")
INSTALLED_APPS = [*INSTALLED_APPS, "django_rq", "django_tasks_rq"]
RQ_QUEUES = {RQ_QUEUE: {"URL": REDIS_URL}}
TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": [RQ_QUEUE]}}
STORAGE_GUARD = {**STORAGE_GUARD, "TASK_QUEUE": RQ_QUEUE}
