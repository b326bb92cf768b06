"""Shared fixtures: a real SeaweedFS S3 server, a fault proxy in front of it, guarded storages.

No real credentials can leak in: every ``AWS_*`` variable is removed and botocore's config and
credentials files are pointed at nothing before any client is built.
"""

from __future__ import annotations

import os
import uuid

import pytest

for _name in [n for n in os.environ if n.startswith("AWS_") and n != "AWS_CA_BUNDLE"]:
    del os.environ[_name]
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

from tests.testbed.faultproxy import FaultProxy  # noqa: E402
from tests.testbed.seaweed import SeaweedServer  # noqa: E402

TEST_KEY = "storage-guard-test"


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


@pytest.fixture(scope="session", autouse=True)
def _s3_settings(request, django_db_blocker):
    """Point STORAGES["default"] at the proxy once the session's server is up."""
    from django.conf import settings
    from django.core.files.storage import storages

    request.getfixturevalue("django_db_setup")
    from django.db import connection

    if connection.vendor != "sqlite":
        from storage_guard.recording import register_alias

        register_alias("default")  # after the test database exists, so it points there
    proxy = request.getfixturevalue("_session_proxy")
    seaweed = request.getfixturevalue("seaweed")
    seaweed.create_bucket(settings.TEST_BUCKET)
    settings.STORAGES["default"]["OPTIONS"]["endpoint_url"] = proxy.endpoint_url
    storages._storages = {}
    yield
    from storage_guard.recording import close_independent_connections

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
