"""The circuit breaker: opens after consecutive transient failures, fails fast, probes, closes."""

import time

import pytest
from django.core.cache import caches
from django.core.files.base import ContentFile

from storage_guard.breaker import CircuitBreaker
from storage_guard.errors import SaveFailed
from storage_guard.models import SaveAttempt, Status

pytestmark = pytest.mark.django_db

REDIS_CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "shared": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
               "LOCATION": "redis://127.0.0.1:6379/15"},
}


def fail_saves(storage, n):
    for i in range(n):
        with pytest.raises(SaveFailed):
            storage.save(f"cb/{i}.bin", ContentFile(b"x"))


def test_opens_fails_fast_without_requests_then_probe_closes(guarded_storage_factory,
                                                              fault_proxy, read_object):
    storage = guarded_storage_factory(max_attempts=1, breaker_threshold=3, breaker_cooldown=1)
    with fault_proxy.outage_window("reset"):
        fail_saves(storage, 3)
        assert storage.breaker.state() == "open"
        sent = fault_proxy.counts["requests"]

        with pytest.raises(SaveFailed) as caught:
            storage.save("cb/fast.bin", ContentFile(b"fast"))

    assert caught.value.code == "CircuitOpen"
    assert fault_proxy.counts["requests"] == sent  # nothing touched the network
    record = SaveAttempt.objects.get(pk=caught.value.record_id)
    assert record.status == Status.FAILED and record.has_stash

    time.sleep(1.05)
    assert storage.breaker.state() == "half-open"
    name = storage.save("cb/probe.bin", ContentFile(b"probe"))
    assert read_object(name) == b"probe"
    assert storage.breaker.state() == "closed"


def test_failed_probe_reopens(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory(max_attempts=1, breaker_threshold=2, breaker_cooldown=0.5)
    with fault_proxy.outage_window("internal"):
        fail_saves(storage, 2)
        time.sleep(0.55)
        fail_saves(storage, 1)  # the probe
        assert storage.breaker.state() == "open"


def test_permanent_errors_do_not_open_the_circuit(guarded_storage_factory, fault_proxy):
    from tests.testbed.faultproxy import error

    storage = guarded_storage_factory(max_attempts=1, breaker_threshold=2)
    with fault_proxy.outage_window(error(403, "AccessDenied", "no")):
        fail_saves(storage, 4)
    assert storage.breaker.state() == "closed"


def test_success_resets_the_consecutive_count(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory(max_attempts=1, breaker_threshold=2)
    fault_proxy.script(["reset"])
    fail_saves(storage, 1)
    storage.save("cb/ok.bin", ContentFile(b"ok"))
    fault_proxy.script(["reset"])
    fail_saves(storage, 1)
    assert storage.breaker.state() == "closed"


def test_only_one_caller_probes_when_half_open():
    breaker = CircuitBreaker("test|probe", threshold=1, cooldown=0.01)
    breaker.open(1)
    time.sleep(0.02)
    breaker.before_attempt()  # this caller probes
    from storage_guard.errors import CircuitOpen

    with pytest.raises(CircuitOpen, match="half-open"):
        breaker.before_attempt()
    breaker.reset()


def test_state_is_shared_through_redis(guarded_storage_factory, fault_proxy, settings):
    """Two storage instances (as in two processes) agree through the shared cache."""
    settings.CACHES = REDIS_CACHES
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "BREAKER_CACHE": "shared"}
    caches["shared"].clear()
    web = guarded_storage_factory(max_attempts=1, breaker_threshold=2, breaker_cooldown=30)
    worker = guarded_storage_factory(max_attempts=1, breaker_threshold=2, breaker_cooldown=30)
    with fault_proxy.outage_window("reset"):
        fail_saves(web, 2)
    sent = fault_proxy.counts["requests"]
    assert worker.breaker.state() == "open"
    with pytest.raises(SaveFailed) as caught:
        worker.save("cb/worker.bin", ContentFile(b"w"))
    assert caught.value.code == "CircuitOpen"
    assert fault_proxy.counts["requests"] == sent
    caches["shared"].clear()


def test_a_healthy_save_costs_one_cache_read(guarded_storage_factory, fault_proxy, settings):
    from tests.counting_cache import CALLS

    settings.CACHES = {**settings.CACHES, "counting": {
        "BACKEND": "tests.counting_cache.CountingLocMemCache", "LOCATION": "breaker-cost"}}
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "BREAKER_CACHE": "counting"}
    storage = guarded_storage_factory(max_attempts=2, breaker_threshold=5)
    CALLS.clear()
    storage.save("cost/ok.bin", ContentFile(b"ok"))
    assert CALLS == {"get_many": 1}

    fault_proxy.script(["reset"])  # a retried save clears the count it left behind
    storage.save("cost/retried.bin", ContentFile(b"ok"))
    assert CALLS["delete_many"] == 1
    assert storage.breaker._read() == (0, None)
