"""Deployment checks: deadline vs read timeout, SQLite with ATOMIC_REQUESTS, stash location."""

import pytest
from django.conf import settings
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
        "(5.0s): a single stalled attempt outlasts the deadline and no retry can start.")]


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


LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
DUMMY = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
REDIS = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                     "LOCATION": "redis://127.0.0.1:6379/15"}}


@pytest.mark.parametrize(("caches", "expected"), [
    (LOCMEM, ["STORAGE_GUARD['BREAKER_CACHE'] is 'default', a local-memory cache: every process "
              "has its own circuit breaker."]),
    (DUMMY, ["STORAGE_GUARD['BREAKER_CACHE'] is 'default', a dummy cache: it keeps nothing, so "
             "the circuit breaker can never open."]),
    (REDIS, []),
])
def test_breaker_cache_is_a_deployment_check(caches, expected):
    with override_settings(CACHES=caches):
        messages = checks.check_breaker_cache()
    assert [m.msg for m in messages] == expected
    assert {m.id for m in messages} <= {Codes.BREAKER_CACHE_PER_PROCESS}


def test_breaker_cache_check_runs_only_with_deploy():
    from django.core import checks as django_checks

    ids = {m.id for m in django_checks.run_checks(tags=[checks.TAG])}
    assert Codes.BREAKER_CACHE_PER_PROCESS not in ids
    ids = {m.id for m in django_checks.run_checks(tags=[checks.TAG],
                                                  include_deployment_checks=True)}
    assert Codes.BREAKER_CACHE_PER_PROCESS in ids  # the test settings use a local-memory cache


W008 = ("STORAGE_GUARD['BREAKER_REFRESH'] ({refresh}s) is at least half of {where} ({window}s): "
        "a run of failures started in another process may be ended by this process's "
        "successes only that late, so a flaky but healthy endpoint's runs might survive the "
        "window and open the circuit.")


@pytest.mark.parametrize(("refresh", "window"), [(0.5, 1.0), (2.0, 1.0), (0.1, 0.2)])
def test_a_breaker_refresh_of_half_the_window_or_more(refresh, window):
    messages = [(m.id, m.msg, m.hint) for m in django_checks_of(
        STORAGE_GUARD={"BREAKER_REFRESH": refresh, "BREAKER_WINDOW": window})]
    assert messages == [(
        Codes.BREAKER_REFRESH_OVER_WINDOW,
        W008.format(refresh=refresh, where="STORAGE_GUARD['BREAKER_WINDOW']", window=window),
        "Keep BREAKER_REFRESH well under breaker_window (the defaults are 0.1 s and 1 s), or set "
        "it to 0 to read the breaker's cache before every attempt.")]


def test_a_breaker_refresh_against_one_storages_window():
    assert found(STORAGES=storages(breaker_window=0.15), STORAGE_GUARD={}) == [(
        Codes.BREAKER_REFRESH_OVER_WINDOW,
        W008.format(refresh=0.1, where="STORAGES['default']['OPTIONS']['breaker_window']",
                    window=0.15))]


@pytest.mark.parametrize("storage_guard", [
    {},  # the defaults: 0.1 s against 1 s
    {"BREAKER_REFRESH": 0.49},
    {"BREAKER_REFRESH": 0, "BREAKER_WINDOW": 0.1},  # reads before every attempt
    {"BREAKER_WINDOW": 0},  # opens on the count alone: no window to survive
    {"BREAKER_REFRESH": 5.0, "BREAKER_THRESHOLD": 0},  # no breaker
    {"BREAKER_REFRESH": "0.5"},  # E002's (check_options), not this check's
])
def test_the_breaker_refresh_check_is_quiet(storage_guard):
    assert found(STORAGE_GUARD=storage_guard) == []
    assert found(STORAGES=storages(breaker_window=2.0), STORAGE_GUARD=storage_guard) == []


def django_checks_of(**overrides):
    with override_settings(**overrides):
        return checks.check_deployment()


def test_task_retries_need_a_backend_that_can_defer():
    immediate = {"default": {"BACKEND": settings.IMMEDIATE_TASK_BACKEND}}
    with override_settings(TASKS=immediate, STORAGE_GUARD={"RETRY_WITH_TASKS": True}):
        assert found() == [(
            Codes.TASK_BACKEND_CANNOT_DEFER,
            "RETRY_WITH_TASKS is on but the task backend 'default' cannot run a task later (no "
            "run_after support), so no retry would ever be enqueued.")]
    with override_settings(STORAGE_GUARD={"RETRY_WITH_TASKS": True}):
        assert found() == []  # the test settings' django_tasks_db backend can
