"""The breaker fails open: with its cache (Redis) down or blackholed, S3 work goes on as plain
django-storages would do it, and a silent cache costs one timeout per back-off period.

A TCP gate (``tests/testbed/tcpgate.py``) sits between Django's ``RedisCache`` and the real
Redis; the cache's socket timeouts are bounded the way the docs tell users to bound them.
"""

from __future__ import annotations

import logging
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.management import call_command
from django.test import override_settings

from storage_guard.models import SaveAttempt, Status
from storage_guard.saving.breaker import cache_health
from tests.test_replay import read_default, stash_failed_saves
from tests.testbed.tcpgate import TcpGate

pytestmark = pytest.mark.django_db(transaction=True)

CACHE_TIMEOUTS = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}


@pytest.fixture
def redis_gate():
    target = urlparse(settings.REDIS_URL)
    gate = TcpGate(target.hostname, target.port or 6379).start()
    yield gate
    gate.stop()


@pytest.fixture
def gated_default_storage(redis_gate):
    """``storages["default"]`` with its breaker state in a Redis behind ``redis_gate``."""
    db = urlparse(settings.REDIS_URL).path.lstrip("/") or "0"
    gated = {"BACKEND": "django.core.cache.backends.redis.RedisCache",
             "LOCATION": f"redis://127.0.0.1:{redis_gate.port}/{db}", "OPTIONS": CACHE_TIMEOUTS}
    with override_settings(CACHES={**settings.CACHES, "gated": gated},
                           STORAGE_GUARD={**settings.STORAGE_GUARD, "BREAKER_CACHE": "gated"}):
        cache_health.reset()
        storages._storages = {}
        try:
            yield storages["default"]
        finally:
            storages._storages = {}
            cache_health.reset()
            caches["gated"].close()


@pytest.mark.parametrize("fault", ["down", "blackhole"])
def test_saves_reads_and_replays_go_on_when_the_breaker_cache_fails(
        fault, gated_default_storage, redis_gate, fault_proxy, caplog, s3):
    storage = gated_default_storage
    stashed = stash_failed_saves(fault_proxy, 3, storage=storage)  # while the cache works
    assert storage.breaker.state() == "closed"
    caplog.set_level(logging.INFO, logger="storage_guard")
    getattr(redis_gate, fault)()
    connections_before = redis_gate.connections
    fault_proxy.reset_counters()

    names = [storage.save(f"cache-{fault}/{i}.bin", ContentFile(f"body {i}".encode()))
             for i in range(10)]
    assert fault_proxy.counts["PUT"] == 10  # S3 got every save
    assert SaveAttempt.objects.filter(name__in=names, status=Status.SUCCEEDED).count() == 10
    assert storage.exists(names[0]) is True
    with storage.open(names[1]) as handle:
        assert handle.read() == b"body 1"
    assert storage.breaker.state() == "unknown"

    call_command("retry_failed_saves")  # raises CommandError if anything is left
    for record_id, key, payload in stashed:
        assert SaveAttempt.objects.get(pk=record_id).status == Status.RECOVERED
        assert read_default(s3, key) == payload

    unavailable = [r for r in caplog.records if getattr(r, "event", "") == "breaker_unavailable"]
    assert len(unavailable) == 1  # one warning for the whole back-off period
    assert "treated as closed" in unavailable[0].getMessage()
    # One timeout per period, not one per call: after the first failure nothing asks the cache.
    assert redis_gate.connections - connections_before <= 1


def test_after_the_back_off_the_cache_is_asked_again_and_guards_again(
        gated_default_storage, redis_gate, fault_proxy, caplog):
    with override_settings(STORAGE_GUARD={**settings.STORAGE_GUARD, "BREAKER_CACHE": "gated",
                                          "BREAKER_CACHE_BACKOFF": 0.0}):
        storages._storages = {}
        storage = storages["default"]
        caplog.set_level(logging.INFO, logger="storage_guard")
        storage.save("cache-back/before.bin", ContentFile(b"x"))
        redis_gate.down()
        storage.save("cache-back/down.bin", ContentFile(b"x"))  # fails open
        assert storage.breaker.state() == "unknown"
        redis_gate.open()
        storage.save("cache-back/after.bin", ContentFile(b"x"))
        assert storage.breaker.state() == "closed"
    events = [r.event for r in caplog.records if getattr(r, "event", "").startswith("breaker_")]
    assert events[-1] == "breaker_available" and set(events[:-1]) == {"breaker_unavailable"}
    assert fault_proxy.counts["PUT"] == 3
