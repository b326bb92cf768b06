"""Prometheus metrics: scraped from the example project's real ``/metrics``, after real saves
through the fault proxy; several real processes counting into one multi-process directory; and
storage_guard without prometheus-client installed at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from storage_guard.errors import SaveFailed
from storage_guard.models import SaveAttempt
from tests.test_replay import stash_failed_saves

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.django_db, pytest.mark.urls("example_project.urls")]


def samples(text: str) -> dict[tuple, float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus text exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(client) -> dict[tuple, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    return samples(response.content.decode())


def value(scraped: dict, name: str, **labels) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def saves(scraped, status: str, code: str = "", operation: str = "save") -> float:
    return value(scraped, "storage_guard_saves_total", storage="default", operation=operation,
                 status=status, error_code=code)


def test_saves_are_counted_by_status_code_duration_and_attempts(client, fault_proxy):
    before = scrape(client)
    storage = storages["default"]
    storage.save(f"metrics-{uuid.uuid4().hex[:8]}.txt", ContentFile(b"fine"))
    with pytest.raises(SaveFailed) as caught, fault_proxy.outage_window(action="reset"):
        storage.save(f"metrics-{uuid.uuid4().hex[:8]}.txt", ContentFile(b"lost? no: stashed"))
    failed = SaveAttempt.objects.get(pk=caught.value.record_id)
    storage.breaker.open(storage.breaker.threshold)  # as a longer outage leaves it
    try:
        after = scrape(client)
        breaker = storage.breaker.snapshot()
    finally:
        storage.breaker.reset()

    assert saves(after, "succeeded") - saves(before, "succeeded") == 1
    assert saves(after, "failed", failed.error_code) - saves(before, "failed",
                                                             failed.error_code) == 1
    duration = {"storage": "default", "operation": "save", "status": "failed"}
    assert value(after, "storage_guard_save_duration_seconds_count", **duration) \
        - value(before, "storage_guard_save_duration_seconds_count", **duration) == 1
    attempts = {"storage": "default", "operation": "save"}
    assert value(after, "storage_guard_save_attempts_sum", **attempts) \
        - value(before, "storage_guard_save_attempts_sum", **attempts) == 1 + failed.attempts
    # The open breaker is scraped from the shared breaker state, one-hot.
    assert breaker.state == "open"
    states = {state: value(after, "storage_guard_breaker_state", storage="default",
                           breaker=breaker.name, state=state)
              for state in ("closed", "open", "half-open", "unknown")}
    assert states == {"closed": 0, "open": 1, "half-open": 0, "unknown": 0}
    assert value(after, "storage_guard_unresolved_saves", status="failed") == 1
    assert value(after, "storage_guard_stashed_saves") == 1
    assert value(after, "storage_guard_stashed_bytes") == failed.size
    assert value(after, "storage_guard_unresolved_oldest_age_seconds") > 0
    assert value(after, "storage_guard_records_up") == 1


def test_a_counter_that_fails_never_fails_the_save_and_the_signal_still_goes_out(
        client, fault_proxy, caplog):
    """Metrics are counted by a direct call, not through ``save_finished``: a receiver of your
    own still gets every save's end, and a counter that raises is logged, not raised."""
    from storage_guard.integrations import metrics
    from storage_guard.saving import telemetry
    from storage_guard.signals import save_finished

    heard = []

    def receiver(sender, **kwargs):
        heard.append((kwargs["status"], kwargs["attempts"], kwargs["trace"].key))

    def broken(*args):
        raise RuntimeError("counter down")

    save_finished.connect(receiver)
    telemetry.count_saves(broken)
    name = f"metrics-broken-{uuid.uuid4().hex[:8]}.txt"
    try:
        assert storages["default"].save(name, ContentFile(b"fine")) == name
    finally:
        telemetry.count_saves(metrics.count_save)
        save_finished.disconnect(receiver)
    assert heard == [("succeeded", 1, name)]
    assert [r.event for r in caplog.records if r.name == "storage_guard"
            and getattr(r, "event", "") == "metrics_failed"] == ["metrics_failed"]
    assert SaveAttempt.objects.filter(name=name, status="succeeded").exists()


def test_a_redelivery_is_counted_apart_from_saves(client, fault_proxy):
    [(record_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)
    before = scrape(client)
    from storage_guard.operations import redelivery

    assert redelivery.replay_ids([record_id], via="command").delivered == 1
    after = scrape(client)
    assert saves(after, "succeeded", operation="redeliver") \
        - saves(before, "succeeded", operation="redeliver") == 1
    assert value(after, "storage_guard_unresolved_saves", status="failed") == 0


def test_the_unresolved_count_stops_at_the_limit(client, fault_proxy):
    stash_failed_saves(fault_proxy, 3)
    with override_settings(STORAGE_GUARD={**settings.STORAGE_GUARD, "METRICS_COUNT_LIMIT": 2}):
        scraped = scrape(client)
    assert value(scraped, "storage_guard_unresolved_saves", status="failed") == 2
    assert value(scraped, "storage_guard_stashed_saves") == 2
    assert SaveAttempt.objects.unresolved().count() == 3


@pytest.mark.django_db(transaction=True)
def test_the_live_server_answers_a_scrape(live_server):
    with urllib.request.urlopen(f"{live_server.url}/metrics", timeout=30) as response:
        body = response.read().decode()
        assert response.headers["Content-Type"].startswith("text/plain")
    scraped = samples(body)
    assert value(scraped, "storage_guard_records_up") == 1
    assert any(name == "storage_guard_breaker_state" for name, _labels in scraped)


# ----------------------------------------------------------------------- separate processes

SAVER = """
import json, os, sys
from django.conf import settings
settings.STORAGES["default"]["OPTIONS"]["endpoint_url"] = sys.argv[1]
import django
django.setup()
from django.core.management import call_command
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.test import RequestFactory
from storage_guard.integrations.metrics import metrics_view
call_command("migrate", verbosity=0)
names = [storages["default"].save(f"metrics-mp-{os.getpid()}-{n}.txt", ContentFile(b"x"))
         for n in range(int(sys.argv[2]))]
if os.environ.get("SG_NO_SCRAPE"):  # the process ends without a scrape: atexit applies
    response = None
else:
    response = metrics_view(RequestFactory().get("/metrics"))
print(json.dumps({"saved": len(names), "imported": sys.modules.get("prometheus_client") is not None,
                  "status": response and response.status_code,
                  "body": response and response.content.decode()[:60]}))
"""


def saver(fault_proxy, count: int, env: dict, prelude: str = "") -> subprocess.Popen:
    """A process of its own that saves ``count`` files and then calls the metrics view."""
    return subprocess.Popen(
        [sys.executable, "-c", prelude + SAVER, fault_proxy.endpoint_url, str(count)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT),
                       "DJANGO_SETTINGS_MODULE": "tests.settings", **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome_of(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_several_processes_count_into_one_scrape(client, fault_proxy, tmp_path, monkeypatch):
    """Like gunicorn workers: each process writes its own files, one scrape adds them up."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    writers = [saver(fault_proxy, count, env) for count in (1, 2, 3)]
    assert [outcome_of(w)["saved"] for w in writers] == [1, 2, 3]
    assert len(list(tmp_path.glob("*.db"))) >= 3  # each process wrote its own file

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    scraped = scrape(client)

    assert saves(scraped, "succeeded") == 6  # 1 + 2 + 3, and nothing of this process's own
    assert value(scraped, "storage_guard_save_attempts_count", storage="default",
                 operation="save") == 6
    assert value(scraped, "storage_guard_records_up") == 1  # the scrape-time part is there too


def test_a_process_that_ends_without_a_scrape_still_leaves_its_counts(client, fault_proxy,
                                                                       tmp_path, monkeypatch):
    """Saves are queued and applied later: the queue is applied at exit, so a worker's last
    saves reach its multi-process file even if nothing scraped it."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "SG_NO_SCRAPE": "1"}
    assert outcome_of(saver(fault_proxy, 3, env))["status"] is None
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert saves(scrape(client), "succeeded") == 3


def test_the_applier_thread_counts_saves_without_a_scrape(fault_proxy, monkeypatch):
    from storage_guard.integrations import metrics

    def counted() -> float:  # this metric alone: no collector of storage_guard's runs
        return sum(sample.value for family in metrics.SAVES.collect()
                   for sample in family.samples
                   if sample.name == "storage_guard_saves_total"
                   and sample.labels == {"storage": "default", "operation": "save",
                                         "status": "succeeded", "error_code": ""})

    metrics.apply_pending()
    monkeypatch.setattr(metrics, "APPLY_INTERVAL", 0.05)
    time.sleep(1.1)  # the thread's current sleep (of the old interval) ends
    before = counted()
    storages["default"].save(f"metrics-thread-{uuid.uuid4().hex[:8]}.txt", ContentFile(b"x"))
    deadline = time.monotonic() + 10
    while counted() == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert counted() == before + 1
    assert metrics._applier is not None and metrics._applier.is_alive()


def test_a_forked_child_starts_with_its_own_queue_and_thread():
    from storage_guard.integrations import metrics

    metrics._start_applier()
    metrics._pending.append(("parent", "save", "succeeded", "", 1, 1.0))
    assert metrics._applier is not None
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, json.dumps([len(metrics._pending), metrics._applier is None]).encode())
        os._exit(0)
    os.close(write)
    reported = json.loads(os.read(read, 100))
    os.waitpid(child, 0)
    os.close(read)
    metrics.apply_pending()
    assert reported == [0, True]


def test_storage_guard_works_without_prometheus_client(fault_proxy):
    blocked = "import sys\nsys.modules['prometheus_client'] = None  # as if not installed\n"
    outcome = outcome_of(saver(fault_proxy, 2, {}, prelude=blocked))
    assert outcome == {"saved": 2, "imported": False, "status": 501,
                       "body": "prometheus-client is not installed: pip install 'django-stor"}
