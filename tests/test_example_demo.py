"""The example keeps its promises (issue 13): a retry worker delivers partial results, a reload
shows the real state, every page's fault switch works, one clock and one cache for all processes.
"""

from __future__ import annotations

import json

import pytest
from django.core.files.storage import storages

from example_project import faults
from example_project.worker import RetryWorker
from storage_guard.models import SaveAttempt, Status
from storage_guard.saving import stash
from storage_guard.saving.records import record_alias
from tests.test_example_project import (  # noqa: F401 - example_app is a fixture
    PNG_MAGIC,
    example_app,
    example_env,
    fetch,
    generate,
    run_manage,
    switch_faults,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("example_project.urls")]


def partial_during_outage(client) -> dict:
    assert switch_faults(client, "outage").status_code == 302
    outcome = generate(client, "during the outage")
    assert outcome["partial"] is True
    switch_faults(client, "off")
    storages["default"].breaker.reset()
    return outcome


def test_retry_worker_round_delivers_a_partial_result(client, example_app):  # noqa: F811
    outcome = partial_during_outage(client)

    result = RetryWorker(interval=60).round()

    assert result.delivered == 1
    status = client.get(f"/api/saves/{outcome['status_token']}/").json()
    assert status["delivered"] is True and status["status"] == Status.RECOVERED


def test_reload_shows_the_stash_then_the_stored_object(client, example_app):  # noqa: F811
    outcome = partial_during_outage(client)
    attempt = outcome["attempt_id"]
    record = SaveAttempt.objects.using(record_alias()).get(pk=attempt)

    page = client.get(f"/generate/?attempt={attempt}").content.decode()

    assert 'data-state="partial"' in page and "the retry worker will store it" in page
    assert f'src="/saves/{attempt}/content/"' in page
    assert f'href="/saves/{attempt}/content/?download=1"' in page
    pending = client.get(f"/saves/{attempt}/content/")
    assert pending.status_code == 200 and pending["Content-Type"] == "image/png"
    assert b"".join(pending.streaming_content) == stash.read(record)

    RetryWorker(interval=60).round()

    page = client.get(f"/generate/?attempt={attempt}").content.decode()
    assert 'data-state="saved"' in page and "Stored in S3." in page
    image = page.split('id="image"')[1].split(">")[0]
    assert f"/saves/{attempt}/content/" not in image
    assert record.name.rsplit("/", 1)[-1] in image and "Signature=" in image  # from S3
    delivered = client.get(f"/saves/{attempt}/content/")
    assert delivered.status_code == 302
    stored = fetch(delivered["Location"])
    assert stored.startswith(PNG_MAGIC)
    assert stored == pending_bytes_of(outcome)


def pending_bytes_of(outcome: dict) -> bytes:
    import base64

    return base64.b64decode(outcome["content_base64"])


def test_another_visitor_gets_neither_state_nor_bytes(client, example_app):  # noqa: F811
    from django.test import Client

    outcome = partial_during_outage(client)
    stranger = Client()

    page = stranger.get(f"/generate/?attempt={outcome['attempt_id']}").content.decode()

    assert 'id="result" hidden' in page and "will store it" not in page
    assert stranger.get(f"/saves/{outcome['attempt_id']}/content/").status_code == 404


def test_documents_page_fault_switch_has_every_preset_and_works(client, example_app):  # noqa: F811
    page = client.get("/documents/").content.decode()
    for key, preset in faults.PRESETS.items():
        assert f'<option value="{key}"' in page and preset.label in page

    response = client.post("/faults/", {"preset": "outage", "next": "/documents/"})

    assert response.status_code == 302 and response["Location"] == "/documents/"
    assert faults.active() == "outage"
    assert "faults: outage" in client.get("/documents/").content.decode()


def test_no_preset_chosen_is_a_sentence_not_a_python_list(client, example_app):  # noqa: F811
    response = client.post("/faults/", {"preset": ""})

    assert response.status_code == 400
    error = response.content.decode().split('id="fault-error">')[1].split("</p>")[0]
    assert error.startswith("No fault preset chosen. Choose one of: Off (off), Flaky (flaky)")
    assert "[" not in error and "'" not in error


SHOW_CLOCK = ("from django.conf import settings as s; from django.core.cache import cache; "
              "import json; cache.set('sg-probe', 1); print(json.dumps({'tz': s.TIME_ZONE, "
              "'cache': s.CACHES['default']['BACKEND'], 'where': s.CACHES['default']"
              "['LOCATION']}))")


def test_example_runs_in_utc_with_one_cache_file_for_every_process(tmp_path):
    env = example_env(tmp_path)

    first = run_manage("shell", "-c", SHOW_CLOCK, env=env)
    second = run_manage("shell", "-c", "from django.core.cache import cache; "
                        "print(cache.get('sg-probe'))", env=env)

    assert first.returncode == 0, first.stderr
    shown = json.loads(first.stdout.strip().splitlines()[-1])
    assert shown["tz"] == "UTC" and shown["cache"].endswith("FileBasedCache")
    assert shown["where"].startswith(str(tmp_path / "var"))
    assert second.stdout.strip().splitlines()[-1] == "1"  # another process sees the same cache
