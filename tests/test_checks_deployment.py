"""Deployment checks: deadline vs read timeout, SQLite with ATOMIC_REQUESTS, stash location."""

import pytest
from django.test import override_settings

from storage_guard import checks
from storage_guard.checks import Codes

GUARDED = "storage_guard.storage.GuardedS3Storage"


def found(**overrides):
    with override_settings(**overrides):
        return [(m.id, m.msg) for m in checks.check_deployment()]


def storages(**options):
    return {
        "default": {"BACKEND": GUARDED, "OPTIONS": {"bucket_name": "media",
                                                    "endpoint_url": "http://s3", **options}},
        "same": {"BACKEND": GUARDED, "OPTIONS": {"bucket_name": "media",
                                                 "endpoint_url": "http://s3"}},
        "volume": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    }


def test_quiet_on_the_test_project():
    assert checks.check_deployment() == []


def test_deadline_shorter_than_read_timeout():
    assert found(STORAGE_GUARD={"RETRY_DEADLINE": 5.0, "READ_TIMEOUT": 10.0}) == [(
        Codes.DEADLINE_BELOW_READ_TIMEOUT,
        "STORAGE_GUARD['RETRY_DEADLINE'] (5.0s) is shorter than read_timeout (10.0s): a single "
        "stalled attempt outlasts the deadline and no retry can start.")]


def test_deadline_set_on_one_storage():
    assert found(STORAGES=storages(retry_deadline=1.0), STORAGE_GUARD={}) == [(
        Codes.DEADLINE_BELOW_READ_TIMEOUT,
        "STORAGES['default']['OPTIONS']['retry_deadline'] (1.0s) is shorter than read_timeout "
        "(10.0s): a single stalled attempt outlasts the deadline and no retry can start.")]


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_sqlite_with_atomic_requests():
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:",
                             "ATOMIC_REQUESTS": True}}
    assert found(DATABASES=databases) == [(
        Codes.SQLITE_ATOMIC_REQUESTS,
        "DATABASES['default'] is SQLite with ATOMIC_REQUESTS on: a request that fails after a "
        "failed save rolls back its SaveAttempt record and stash.")]


def test_unknown_stash_storage():
    assert found(STORAGES=storages(stash_storage="nowhere"), STORAGE_GUARD={}) == [(
        Codes.STASH_STORAGE_UNKNOWN,
        "STORAGES['default']['OPTIONS']['stash_storage'] is 'nowhere', which is not an alias in "
        "settings.STORAGES.")]


def test_stash_in_the_same_bucket():
    assert found(STORAGES=storages(stash_storage="same"), STORAGE_GUARD={}) == [(
        Codes.STASH_STORAGE_SAME_BUCKET,
        "STORAGES['default']['OPTIONS']['stash_storage'] is 'same', which writes to the same "
        "endpoint and bucket as the storage it protects: when that bucket fails, so does the "
        "stash.")]


def test_stash_on_a_shared_volume_is_fine():
    assert found(STORAGES=storages(stash_storage="volume"), STORAGE_GUARD={}) == []
