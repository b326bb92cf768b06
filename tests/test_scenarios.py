"""The issue's numbers, as outcomes: many saves under realistic faults, zero bytes lost."""

import hashlib
import os
import random
import threading
import time

import pytest
from django.core.files.base import ContentFile

from storage_guard import stash
from storage_guard.errors import SaveFailed
from storage_guard.models import SaveAttempt, Status

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

SIZES = [2 * 1024, 60 * 1024, 1024 * 1024]


def mixed_payloads(n, seed=7):
    rng = random.Random(seed)
    return [(f"mixed/{i:04d}.bin", rng.randbytes(SIZES[i % 3])) for i in range(n)]


def test_300_saves_at_20_percent_resets_all_arrive(guarded_storage_factory, fault_proxy,
                                                   read_object):
    storage = guarded_storage_factory(max_attempts=5, breaker_threshold=0)
    fault_proxy.configure(reset=0.2, methods={"PUT"}, seed=20)
    payloads = mixed_payloads(300)

    names = [storage.save(name, ContentFile(body)) for name, body in payloads]

    assert fault_proxy.counts["reset"] > 30  # the faults really happened
    for name, (_, body) in zip(names, payloads, strict=True):
        assert read_object(name) == body
    statuses = set(SaveAttempt.objects.values_list("status", flat=True))
    assert statuses == {Status.SUCCEEDED}
    extra_attempts = sum(a - 1 for a in SaveAttempt.objects.values_list("attempts", flat=True))
    assert extra_attempts == fault_proxy.counts["reset"]  # every reset cost exactly one retry


def test_5_percent_stalls_never_hang(guarded_storage_factory, fault_proxy, read_object):
    deadline = 4.0
    storage = guarded_storage_factory(read_timeout=1, retry_deadline=deadline, max_attempts=5,
                                      breaker_threshold=0)
    fault_proxy.configure(stall=0.05, methods={"PUT"}, seed=5, stall_seconds=30)
    payloads = mixed_payloads(60, seed=5)

    for name, body in payloads:
        try:
            storage.save(name, ContentFile(body))
        except SaveFailed:
            pass

    assert fault_proxy.counts["stall"] >= 1
    # Every stall was cut by the client's read timeout (its time is in benchmarks/).
    timeouts = [a for log in SaveAttempt.objects.values_list("attempt_log", flat=True)
                for a in log if a["code"] == "ReadTimeout"]
    assert len(timeouts) == fault_proxy.counts["stall"]
    for name, body in payloads:
        record = SaveAttempt.objects.for_key(name).get()
        if record.status == Status.SUCCEEDED:
            assert read_object(name) == body
        else:
            assert stash.read(record) == body


def test_10_second_outage_loses_nothing(guarded_storage_factory, fault_proxy, read_object):
    storage = guarded_storage_factory(max_attempts=3, breaker_threshold=5, breaker_cooldown=2,
                                      retry_deadline=5)
    timer = threading.Timer(2.0, fault_proxy.outage, kwargs={"seconds": 10, "action": "reset"})
    saved, failed, fast_failures = run_through_outage(storage, timer, fault_proxy)

    assert failed, "the outage must have caused failures"
    # Fail-fast: no request reached the proxy (its latency is in benchmarks/).
    assert len(fast_failures) > 10 and set(fast_failures) == {0}
    failed_names = SaveAttempt.objects.filter(pk__in=failed).values_list("name", flat=True)
    assert max(saved) > max(failed_names)  # saves after the outage went through
    for name, body in saved.items():
        assert read_object(name) == body
    for record_id, body in failed.items():
        record = SaveAttempt.objects.get(pk=record_id)
        assert record.status == Status.FAILED
        assert hashlib.sha256(stash.read(record)).hexdigest() == record.sha256
        assert stash.read(record) == body
    assert SaveAttempt.objects.count() == len(saved) + len(failed)


def run_through_outage(storage, timer, proxy):
    """Save small files for 16 s while ``timer`` starts a 10 s outage; sort the outcomes."""
    timer.start()
    saved, failed, fast_failures = {}, {}, []
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < 16:
        name, body = f"outage/{i:05d}.bin", os.urandom(2048 + i)
        sent = proxy.counts["requests"]
        try:
            saved[storage.save(name, ContentFile(body))] = body
        except SaveFailed as exc:
            sent = proxy.counts["requests"] - sent
            failed[exc.record_id] = body
            codes = {a["code"] for a in SaveAttempt.objects.get(pk=exc.record_id).attempt_log}
            if codes == {"CircuitOpen"}:  # not a probe: no request was sent at all
                fast_failures.append(sent)
        i += 1
        time.sleep(0.02)
    timer.join()

    return saved, failed, fast_failures
