"""The same settings on the local PostgreSQL server (concurrency and transaction tests)."""

import os

from tests.settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "NAME": os.environ.get("PGDATABASE", "test"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
    }
}

# Tests run inside a transaction per test; records written through a second connection would be
# invisible to it. The tests of the independent connection itself (tests/test_rollback_pg.py)
# switch it back on with transaction=True and databases="__all__".
STORAGE_GUARD = {**STORAGE_GUARD, "INDEPENDENT_CONNECTION": False}  # noqa: F405
