"""Settings for the test suite: SQLite (the embedded default) and a local-memory cache.

The S3 endpoint is only known once the session's SeaweedFS server and fault proxy are up, so
``tests/conftest.py`` fills ``STORAGES["default"]["OPTIONS"]["endpoint_url"]`` then.
"""

import os
import tempfile

from storage_guard.integrations import task_framework

SECRET_KEY = "storage-guard-tests-only"  # not a secret: tests only
DEBUG = False
USE_TZ = True
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "storage_guard",
    "tests.testapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

REDIS_URL = os.environ.get("STORAGE_GUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

TEST_BUCKET = "storage-guard-default"

STORAGES = {
    "default": {
        "BACKEND": "storage_guard.storage.GuardedS3Storage",
        "OPTIONS": {
            "bucket_name": TEST_BUCKET,
            "endpoint_url": None,  # set by tests/conftest.py
            "access_key": "storage-guard-test",
            "secret_key": "storage-guard-test",
            "region_name": "us-east-1",
            "alias": "default",
        },
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    # Where large stashes go in tests: a directory every test process can reach.
    "stash": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": tempfile.mkdtemp(prefix="storage-guard-stash-")},
    },
}

STATIC_URL = "/static/"

STORAGE_GUARD = {
    # The last-resort spool of this test session only (the default is per user and database).
    "LAST_RESORT_DIR": tempfile.mkdtemp(prefix="storage-guard-spool-"),
    "CONNECT_TIMEOUT": 1.0,
    "READ_TIMEOUT": 2.0,
    "RETRY_DEADLINE": 10.0,
    "BACKOFF_BASE": 0.01,
    "BACKOFF_CAP": 0.05,
    # Success records written by the save itself, so a test reads them right after it (the
    # background writer has its own tests, tests/test_record_writer.py).
    "RECORD_WRITER": "inline",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"storage_guard": {"level": "DEBUG"}},
}

# Retry tasks (storage_guard.tasks): the ORM backend, whose `db_worker` command the task tests run.
# RETRY_WITH_TASKS stays off unless a test turns it on. The framework is whichever is installed,
# as storage_guard picks it: Django 6's django.tasks (not an app), else the django_tasks backport.
TASK_FRAMEWORK = task_framework.module_name()
if TASK_FRAMEWORK is None:
    raise ImportError("the tests need a task framework: Django 6, or the django-tasks backport "
                      '(pip install -e ".[test]" installs it)')
INSTALLED_APPS += [*(["django_tasks"] if TASK_FRAMEWORK == "django_tasks" else []),
                   "django_tasks_db"]
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
# The framework's own backend that runs a task at once (and so cannot defer), for the tests.
IMMEDIATE_TASK_BACKEND = f"{TASK_FRAMEWORK}.backends.immediate.ImmediateBackend"

# The fast hasher: admin_client and admin_user set a password per test, and the default
# (PBKDF2, a million rounds or more) costs a third of a second each time. Tests only.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
