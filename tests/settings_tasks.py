"""Settings for the worker subprocesses the concurrency and task tests start.

They run ``manage.py``-style commands (``retry_failed_saves``, ``db_worker``) against the test
database of the pytest process, so what differs from ``tests.settings_postgres`` comes from the
environment the test passes: the database name pytest-django created, the fault proxy's URL
and the storage_guard settings the test uses.
"""

import json
import os

from tests.settings_postgres import *  # noqa: F403
from tests.settings_postgres import DATABASES, STORAGE_GUARD, STORAGES

DATABASES["default"]["NAME"] = os.environ.get("STORAGE_GUARD_TEST_DB_NAME",
                                              DATABASES["default"]["NAME"])
STORAGES["default"]["OPTIONS"]["endpoint_url"] = os.environ.get("STORAGE_GUARD_TEST_ENDPOINT")
STORAGE_GUARD = {**STORAGE_GUARD,
                 **json.loads(os.environ.get("STORAGE_GUARD_TEST_OVERRIDES", "{}"))}
if os.environ.get("STORAGE_GUARD_TEST_CACHE"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": os.environ["STORAGE_GUARD_TEST_CACHE"]}}
