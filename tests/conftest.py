"""Shared fixtures: a real SeaweedFS S3 server, a fault proxy in front of it, guarded storages.

S3 is opt-in. The session's SeaweedFS server, fault proxy and test database start (once) only
for a test that needs them, by this rule (``needs_s3`` below):

* it uses the database (``@pytest.mark.django_db``, or a fixture such as ``db``,
  ``transactional_db``, ``admin_client`` or ``live_server``), because a save records a
  ``SaveAttempt`` and the default storage is the guarded one; or
* it uses an S3 fixture (``seaweed``, ``fault_proxy``, ``s3``, ``bucket``,
  ``guarded_storage_factory``, ``read_object``); or
* it is marked ``@pytest.mark.s3`` (S3 through ``storages["default"]`` without the database).

Everything else (``tests/test_keys.py``, ``tests/test_durations.py``, ...) runs without a server.

No real credentials can leak in: every ``AWS_*`` variable is removed and botocore's config and
credentials files are pointed at nothing before any client is built.

With ``STORAGE_GUARD_TEST_INSTALLED=1`` (set by ``noxfile.py``) the suite refuses to run unless
``storage_guard`` is imported from an installed wheel (site-packages), not from a source tree.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

for _name in [n for n in os.environ if n.startswith("AWS_") and n != "AWS_CA_BUNDLE"]:
    del os.environ[_name]
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

from tests.testbed.faultproxy import FaultProxy  # noqa: E402
from tests.testbed.seaweed import SeaweedServer  # noqa: E402

TEST_KEY = "storage-guard-test"
S3_FIXTURES = frozenset({
    "seaweed", "_session_proxy", "fault_proxy", "s3", "bucket", "guarded_storage_factory",
    "read_object", "db", "transactional_db", "live_server",
})


def pytest_configure(config):
    if os.environ.get("STORAGE_GUARD_TEST_INSTALLED") == "1":
        _refuse_a_source_tree()
    _use_the_quick_flush()


def _refuse_a_source_tree():
    """Wheel mode: the package under test must be the installed one, never this checkout's."""
    import storage_guard

    where = Path(storage_guard.__file__).resolve()
    if "site-packages" not in where.parts:
        sys.exit(f"STORAGE_GUARD_TEST_INSTALLED=1 but storage_guard was imported from {where}, "
                 "not from an installed wheel: run the tests from a copy outside the source tree "
                 "(noxfile.py does) or unset the variable.")


def _flush_all_but_content_types(self):
    """``TransactionTestCase``'s teardown, without throwing away what migrate made once.

    Django's own empties every table, then sends ``post_migrate`` so that contenttypes and auth
    write every content type and permission again; on PostgreSQL it empties them with one
    ``TRUNCATE`` of every table, which makes new files for each table and index. Together
    about a third of a second per transactional test on PostgreSQL (measured: the flush a third,
    ``post_migrate`` two thirds on an idle machine; the ``TRUNCATE`` grows most under load).

    This empties every table but those two (no test writes them) and sends nothing, so the next
    test starts from the same rows as after Django's: no data, every content type and
    permission (with the same ids, so ``ContentType``'s cache stays right). On PostgreSQL it
    deletes the rows (a few per table) in one transaction instead of truncating; Django's
    foreign keys are deferred there, so the order does not matter. Same rows, same sequences
    (neither resets them).
    """
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType
    from django.core.management.color import no_style
    from django.db import connections

    kept = {ContentType._meta.db_table, Permission._meta.db_table}
    for alias in self._databases_names(include_mirrors=False):
        connection = connections[alias]
        tables = [table for table in connection.introspection.django_table_names(
            only_existing=True, include_views=False) if table not in kept]
        if connection.vendor == "postgresql":
            quote = connection.ops.quote_name
            statements = [f"DELETE FROM {quote(table)}" for table in tables]
        else:
            statements = connection.ops.sql_flush(no_style(), tables, reset_sequences=False,
                                                  allow_cascade=False)
        connection.ops.execute_sql_flush(statements)


def _use_the_quick_flush():
    from django.test import TransactionTestCase

    TransactionTestCase._fixture_teardown = _flush_all_but_content_types


def pytest_sessionfinish(session, exitstatus):
    """Exit 5 (no tests ran) is a failure, except where a runner narrowed the selection on
    purpose and said so with STORAGE_GUARD_TEST_ALLOW_EMPTY=1 (noxfile.py, scripts/test)."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and \
            os.environ.get("STORAGE_GUARD_TEST_ALLOW_EMPTY") == "1":
        session.exitstatus = pytest.ExitCode.OK


def needs_s3(item) -> bool:
    """The rule in this module's docstring: database, an S3 fixture, or the ``s3`` marker."""
    return bool(item.get_closest_marker("django_db") or item.get_closest_marker("s3")
                or S3_FIXTURES.intersection(item.fixturenames))


def pytest_collection_modifyitems(items):
    for item in items:
        if needs_s3(item):
            item.fixturenames.insert(0, "_s3_settings")  # first, before the test's database


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _session_proxy(seaweed):
    proxy = FaultProxy(seaweed.host, seaweed.port, seed=0)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def _s3_settings(request, django_db_blocker):
    """Point STORAGES["default"] at the proxy once the session's server is up (see ``needs_s3``)."""
    from django.conf import settings
    from django.core.files.storage import storages

    request.getfixturevalue("django_db_setup")
    from django.db import connection

    if connection.vendor != "sqlite":
        from storage_guard.saving.records import register_alias

        register_alias("default")  # after the test database exists, so it points there
    proxy = request.getfixturevalue("_session_proxy")
    seaweed = request.getfixturevalue("seaweed")
    seaweed.create_bucket(settings.TEST_BUCKET)
    settings.STORAGES["default"]["OPTIONS"]["endpoint_url"] = proxy.endpoint_url
    storages._storages = {}
    yield
    from storage_guard.saving.records import close_independent_connections

    with django_db_blocker.unblock():
        close_independent_connections()


@pytest.fixture
def fault_proxy(_session_proxy):
    """The session's proxy, passing everything, counters at zero; cleared again afterwards."""
    _session_proxy.clear()
    _session_proxy.reset_counters()
    yield _session_proxy
    _session_proxy.end_outage()
    _session_proxy.clear()


@pytest.fixture
def s3(seaweed):
    """A boto3 client straight to SeaweedFS (no proxy): the ground truth for assertions."""
    return seaweed.client()


@pytest.fixture
def bucket(seaweed):
    name = f"sg-{uuid.uuid4().hex[:16]}"
    seaweed.create_bucket(name)
    return name


@pytest.fixture
def guarded_storage_factory(fault_proxy, bucket):
    """Build a ``GuardedS3Storage`` on the proxy and a fresh bucket; options override defaults."""
    from storage_guard.storage import GuardedS3Storage

    def build(**options):
        settings = {
            "bucket_name": bucket, "endpoint_url": fault_proxy.endpoint_url,
            "access_key": TEST_KEY, "secret_key": TEST_KEY, "region_name": "us-east-1",
            "alias": "default", "file_overwrite": True, **options,
        }
        return GuardedS3Storage(**settings)

    return build


@pytest.fixture
def read_object(s3, bucket):
    """Read an object's bytes straight from SeaweedFS."""

    def read(key: str, in_bucket: str | None = None) -> bytes:
        return s3.get_object(Bucket=in_bucket or bucket, Key=key)["Body"].read()

    return read
