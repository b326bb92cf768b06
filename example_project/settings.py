"""Settings of the example project, read from the environment with django-environ.

With nothing set, everything is embedded: SQLite in ``var/example.sqlite3``, a file-based cache
in ``var/cache`` (shared by the server, its retry worker and any ``manage.py`` command, so they
all see one circuit breaker), and SeaweedFS behind the fault proxy started by ``manage.py demo``.
Each variable below can point the example at real services instead (``docs/example.md`` lists
them); a ``.env`` file in the project root is read too. Only this file knows about the
environment: storage_guard itself reads ``STORAGE_GUARD`` and ``STORAGES`` as any project
would fill them.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")
EXAMPLE_VAR_DIR = Path(env.str("EXAMPLE_VAR_DIR", default=str(BASE_DIR / "var")))

# A fixed key is fine for a local demo only; set SECRET_KEY anywhere else.
SECRET_KEY = env.str("SECRET_KEY", default="storage-guard-example-insecure-local-demo-only")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
USE_TZ = True
TIME_ZONE = env.str("TIME_ZONE", default="UTC")  # one clock: records, keys, admin and logs
ROOT_URLCONF = "example_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "/static/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "storage_guard",
    "example_project",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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

# --- Database and cache ------------------------------------------------------------------------
if "DATABASE_URL" not in env:
    EXAMPLE_VAR_DIR.mkdir(parents=True, exist_ok=True)  # SQLite needs its directory
DATABASES = {"default": env.db("DATABASE_URL",
                               default=f"sqlite:///{EXAMPLE_VAR_DIR / 'example.sqlite3'}")}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The server's threads and the demo's retry worker write to one file: wait for the lock.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("timeout", 20)
# One cache for every process of the example (server, retry worker, commands): the circuit
# breaker's state lives there. A file-based cache needs no service; CACHE_URL=redis://... for more.
CACHES = {"default": env.cache("CACHE_URL",
                               default=f"filecache://{EXAMPLE_VAR_DIR / 'cache'}")}

# --- S3 ------------------------------------------------------------------------------------------
S3_ENDPOINT_URL = env.str("S3_ENDPOINT_URL", default="")  # empty: the embedded SeaweedFS
EMBEDDED_S3 = not S3_ENDPOINT_URL
S3_BUCKET = env.str("S3_BUCKET", default="storage-guard-example")
# The embedded SeaweedFS checks no credentials; these placeholders only satisfy boto3.
_default_key = "storage-guard-demo" if EMBEDDED_S3 else None

STORAGES = {
    "default": {
        "BACKEND": "example_project.embedded.EmbeddedS3Storage",
        "OPTIONS": {
            "endpoint_url": S3_ENDPOINT_URL or None,
            "bucket_name": S3_BUCKET,
            "access_key": env.str("S3_ACCESS_KEY", default=_default_key),
            "secret_key": env.str("S3_SECRET_KEY", default=_default_key),
            "region_name": env.str("S3_REGION", default="us-east-1"),
            "querystring_auth": env.bool("S3_QUERYSTRING_AUTH", default=True),
            "addressing_style": "path" if EMBEDDED_S3 else env.str("S3_ADDRESSING_STYLE",
                                                                   default=None),
            "alias": "default",
        },
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- storage_guard -------------------------------------------------------------------------------
# Short timeouts so that a visitor sees a partial result within seconds during a fault.
STORAGE_GUARD = {
    "ON_FAILURE": env.str("GUARD_ON_FAILURE", default="raise"),
    "MAX_ATTEMPTS": env.int("GUARD_MAX_ATTEMPTS", default=4),
    "CONNECT_TIMEOUT": env.float("GUARD_CONNECT_TIMEOUT", default=2.0),
    "READ_TIMEOUT": env.float("GUARD_READ_TIMEOUT", default=3.0),
    "RETRY_DEADLINE": env.float("GUARD_RETRY_DEADLINE", default=10.0),
    "BACKOFF_BASE": env.float("GUARD_BACKOFF_BASE", default=0.2),
    "BACKOFF_CAP": env.float("GUARD_BACKOFF_CAP", default=2.0),
    "BREAKER_THRESHOLD": env.int("GUARD_BREAKER_THRESHOLD", default=20),
    "BREAKER_COOLDOWN": env.float("GUARD_BREAKER_COOLDOWN", default=5.0),
    "INLINE_MAX_BYTES": env.int("GUARD_INLINE_MAX_BYTES", default=10 * 1024 * 1024),
    "PRESIGNED_EXPIRY": env.int("GUARD_PRESIGNED_EXPIRY", default=3600),
    "RETRY_WITH_TASKS": env.bool("GUARD_RETRY_WITH_TASKS", default=False),
}

# Retry tasks: with GUARD_RETRY_WITH_TASKS on, run `python manage.py db_worker` next to the server.
if STORAGE_GUARD["RETRY_WITH_TASKS"]:
    from storage_guard.integrations.task_framework import module_name as task_framework

    # django.tasks (Django 6) is not an app; the backport (Django 5.2) is.
    INSTALLED_APPS += [*(["django_tasks"] if task_framework() == "django_tasks" else []),
                       "django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# --- Sentry (off unless SENTRY_DSN is set) ------------------------------------------------------
SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    import sentry_sdk

    sentry_sdk.init(dsn=SENTRY_DSN, environment=env.str("SENTRY_ENVIRONMENT", default="example"),
                    traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"()": "storage_guard.clock.ZonedFormatter",
                             "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "storage_guard": {"handlers": ["console"], "level": env.str("GUARD_LOG_LEVEL",
                                                                    default="INFO")},
        "example_project": {"handlers": ["console"], "level": "INFO"},
    },
}
