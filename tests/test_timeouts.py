"""Timeouts that fit the payload: a stalled small PUT gives up fast, a slow large one is not cut.

Faults and slow links come from the real fault proxy in front of the real SeaweedFS server.
The assertions are on what was recorded and counted, never on wall-clock time (the speed
targets are in benchmarks/transfer_benchmark.py).
"""

from __future__ import annotations

import os

import pytest
from django.core.files.base import ContentFile
from django.template.loader import render_to_string

from storage_guard.models import SaveAttempt, Status
from storage_guard.saving import presets
from storage_guard.saving.timeouts import AttemptTimeouts, TimeoutRule, timeout_class

pytestmark = pytest.mark.django_db

KB, MB = 1024, 1024 * 1024
STANDARD = presets.PRESETS["standard"]


def standard_storage(factory, **options):
    """A storage with the default preset's numbers, whatever the test settings say."""
    return factory(**{"preset": "standard", "breaker_threshold": 0, **options})


# ----------------------------------------------------------------- the rule itself
def test_the_rule_has_a_floor_a_rate_and_a_ceiling():
    rule = TimeoutRule(floor=1.5, rate=256 * KB, ceiling=30.0)
    assert rule.seconds(2 * KB) == pytest.approx(1.5 + 2 / 256)
    assert rule.seconds(1 * MB) == pytest.approx(5.5)
    assert rule.seconds(100 * MB) == 30.0
    assert rule.seconds(2 * KB, timeouts_before=1) == pytest.approx(2 * (1.5 + 2 / 256))


def test_timeouts_fall_into_a_few_classes():
    assert [timeout_class(s) for s in (1.5, 1.52, 1.7, 2.5, 5.5, 33.5)] == [
        1.5, 1.5, 2.0, 3.0, 6.0, 32.0]
    assert timeout_class(5.5, up=False) == 4.0
    assert len({timeout_class(n / 10) for n in range(10, 600)}) == 13


def test_a_try_never_waits_past_the_deadline():
    now = [100.0]
    timeouts = AttemptTimeouts(TimeoutRule(1.5, 256 * KB, 30.0), 8 * MB, ends_at=107.0,
                               clock=lambda: now[0])
    assert timeouts.start(1) == 6.0  # 33.5 s wanted, 7 s left: the class below
    now[0] = 106.0
    assert timeouts.start(2) == 1.0


# ----------------------------------------------------------------- against the server
def test_a_stalled_small_put_gives_up_within_two_seconds_and_the_retry_succeeds(
        guarded_storage_factory, fault_proxy, read_object):
    storage = standard_storage(guarded_storage_factory)
    fault_proxy.configure(methods={"PUT"}, stall_seconds=30)
    fault_proxy.script(["stall"])
    body = os.urandom(2 * KB)

    name = storage.save("stall/small.bin", ContentFile(body))

    assert read_object(name) == body
    assert fault_proxy.counts["PUT"] == 2 and fault_proxy.counts["stall"] == 1
    record = SaveAttempt.objects.get()
    assert record.status == Status.SUCCEEDED and record.attempts == 2
    first, second = record.attempt_log
    assert first["code"] == "ReadTimeout" and first["timeout_s"] <= 2.0
    assert second["code"] == "OK"
    table = render_to_string("storage_guard/attempt_table.html", {"attempts": record.attempt_log})
    assert "<th>Timeout</th>" in table and f"<td>{first['timeout_s']} s</td>" in table


def test_a_retry_after_a_timeout_waits_longer(guarded_storage_factory, fault_proxy, read_object):
    storage = standard_storage(guarded_storage_factory, retry_deadline=30.0)  # room for 6 s
    fault_proxy.configure(methods={"PUT"}, stall_seconds=30)
    fault_proxy.script(["stall", "stall"])

    name = storage.save("stall/twice.bin", ContentFile(b"x" * 2048))

    assert read_object(name) == b"x" * 2048
    timeouts = [entry["timeout_s"] for entry in SaveAttempt.objects.get().attempt_log]
    assert timeouts == [1.5, 3.0, 6.0]


def test_a_reset_does_not_lengthen_the_next_timeout(guarded_storage_factory, fault_proxy):
    storage = standard_storage(guarded_storage_factory)
    fault_proxy.configure(methods={"PUT"})
    fault_proxy.script(["reset", "slowdown"])
    storage.save("reset/small.bin", ContentFile(b"x" * 2048))
    assert [e["timeout_s"] for e in SaveAttempt.objects.get().attempt_log] == [1.5, 1.5, 1.5]


def test_every_stall_ends_inside_the_deadline(guarded_storage_factory, fault_proxy):
    storage = standard_storage(guarded_storage_factory, on_failure="defer")
    with fault_proxy.outage_window("stall"):
        fault_proxy.stall_seconds = 60
        storage.save("stall/always.bin", ContentFile(b"x" * 2048))
    record = SaveAttempt.objects.get()
    assert record.status == Status.DEFERRED
    log = record.attempt_log
    assert [e["code"] for e in log] == ["ReadTimeout"] * len(log) and len(log) >= 3
    spent = sum(e["timeout_s"] + e["delay_ms"] / 1000 for e in log)
    assert spent <= STANDARD["RETRY_DEADLINE"]


def test_a_large_put_on_a_slow_link_is_not_cut_off(guarded_storage_factory, fault_proxy,
                                                    read_object):
    """2 MB at 512 KB/s takes 4 s, well past the 1.5 s floor; the rule allows 10 s."""
    storage = standard_storage(guarded_storage_factory)
    fault_proxy.throttle(512 * KB)
    body = os.urandom(2 * MB)

    name = storage.save("slow/two-megabytes.bin", ContentFile(body))

    assert read_object(name) == body
    assert fault_proxy.counts["PUT"] == 1
    assert SaveAttempt.objects.get().attempts == 1


def test_the_same_put_with_a_flat_timeout_is_cut_off(guarded_storage_factory, fault_proxy):
    """The control for the test above: without the rate, the 1.5 s floor cuts every try."""
    storage = standard_storage(guarded_storage_factory, put_timeout_rate=10**12, max_attempts=2,
                               on_failure="defer")
    fault_proxy.throttle(512 * KB)

    storage.save("slow/flat.bin", ContentFile(os.urandom(2 * MB)))

    record = SaveAttempt.objects.get()
    assert record.status == Status.DEFERRED
    assert [e["code"] for e in record.attempt_log] == ["ReadTimeout", "ReadTimeout"]


def test_small_saves_reuse_one_connection(guarded_storage_factory, fault_proxy):
    storage = standard_storage(guarded_storage_factory)
    for number in range(10):
        storage.save(f"reuse/{number}.bin", ContentFile(os.urandom(2 * KB + number)))
    assert fault_proxy.counts["PUT"] == 10
    assert fault_proxy.connections == 1


def test_reads_keep_the_read_timeout(guarded_storage_factory):
    storage = guarded_storage_factory(read_timeout=4.0)
    assert storage.client.meta.config.read_timeout == 4.0
    assert storage.clients.client(1.5).meta.config.read_timeout == 1.5
    assert storage.clients.client(4.0) is storage.client


def test_the_policy_for_a_size_is_worked_out_once_and_the_memo_stays_bounded(
        guarded_storage_factory):
    from storage_guard.storage import POLICY_MEMO_SIZE

    storage = standard_storage(guarded_storage_factory)
    first = storage.policy_for(2 * KB)
    assert storage.policy_for(2 * KB) is first
    assert first.deadline == pytest.approx(
        storage.retry_deadline + 2 * KB / storage.put_timeout_rate)
    for size in range(POLICY_MEMO_SIZE * 2):
        storage.policy_for(size)
    assert 0 < len(storage._policies) <= POLICY_MEMO_SIZE
    assert storage.policy_for(64 * MB).deadline > storage.policy_for(KB).deadline
