"""The example project's views through Django's test client, on the test SeaweedFS and proxy."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import storages
from django.core.management import call_command

from example_project import embedded, faults
from storage_guard.contrib.generated.responses import TOKEN_SALT
from storage_guard.models import SaveAttempt, Status
from storage_guard.saving import stash
from storage_guard.saving.records import record_alias

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("example_project.urls")]


@pytest.fixture
def example_app(settings, fault_proxy):
    """The example's pages on the test storage, its fault switch on the test proxy."""
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "example_project"]
    storages["default"].breaker.reset()
    embedded.use_proxy(fault_proxy)
    yield fault_proxy
    embedded.use_proxy(None)
    faults._active["name"] = "off"
    storages["default"].breaker.reset()


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # 127.0.0.1 only
        return response.read()


def switch_faults(client, preset: str):
    return client.post("/faults/", {"preset": preset, "next": "/generate/"})


def generate(client, label="test picture") -> dict:
    response = client.post("/api/generate/", {"label": label})
    assert response.status_code == 200
    return response.json()


# ----------------------------------------------------------------------- pages


def test_index_lists_recent_saves(client, example_app):
    outcome = generate(client, "listed")

    page = client.get("/").content.decode()

    assert outcome["name"][:60] in page and "succeeded" in page
    assert 'id="fault-switch"' in page


def test_generate_page_has_the_form_and_the_fault_switch(client, example_app):
    page = client.get("/generate/").content.decode()

    assert 'id="generate-form"' in page and 'action="/api/generate/"' in page
    for key in faults.PRESETS:
        assert f'value="{key}"' in page


# ----------------------------------------------------------------------- the JSON endpoint


def test_generated_image_is_saved(client, example_app, s3, settings):
    outcome = generate(client)

    assert outcome["saved"] is True and outcome["partial"] is False
    assert outcome["name"].startswith("generated/year=") and outcome["name"].endswith(".png")
    stored = s3.get_object(Bucket=settings.TEST_BUCKET, Key=outcome["name"])["Body"].read()
    assert stored.startswith(PNG_MAGIC)
    assert fetch(outcome["url"]) == stored


def test_outage_gives_partial_then_retry_command_delivers(client, example_app, s3, settings):
    assert switch_faults(client, "outage").status_code == 302

    outcome = generate(client, "during the outage")

    assert outcome["partial"] is True and outcome["saved"] is False
    inline = base64.b64decode(outcome["content_base64"])
    assert inline.startswith(PNG_MAGIC)
    record = SaveAttempt.objects.using(record_alias()).get(pk=outcome["attempt_id"])
    assert record.status == Status.FAILED and stash.read(record) == inline
    assert outcome["error_code"] == "ServiceUnavailable"
    assert outcome["error_code"] not in outcome["message"]
    status = client.get(f"/api/saves/{outcome['status_token']}/").json()
    assert status["delivered"] is False and status["retry_scheduled"] is True
    assert [a["code"] for a in status["attempt_log"]] == ["ServiceUnavailable"] * record.attempts

    switch_faults(client, "off")
    storages["default"].breaker.reset()
    call_command("retry_failed_saves")

    status = client.get(f"/api/saves/{outcome['status_token']}/").json()
    assert status["delivered"] is True and status["status"] == Status.RECOVERED
    assert s3.get_object(Bucket=settings.TEST_BUCKET, Key=outcome["name"])["Body"].read() == inline
    assert fetch(status["url"]) == inline


def test_each_preset_sets_the_proxy_policy(client, example_app):
    switch_faults(client, "throttled")
    assert generate(client)["error_code"] == "TooManyRequests"
    storages["default"].breaker.reset()

    switch_faults(client, "network")
    assert generate(client)["error_code"] in {"ConnectionClosed", "ConnectionReset"}
    assert example_app.counts["reset"] >= 1
    storages["default"].breaker.reset()

    switch_faults(client, "off")
    assert generate(client)["saved"] is True


def test_generate_refuses_get(client, example_app):
    assert client.get("/api/generate/").status_code == 405


def test_unknown_attempt_is_404(client, example_app):
    assert client.get("/api/saves/999999/").status_code == 404


def test_status_is_polled_by_token_not_by_id(client, example_app):
    """Ids are sequential: an id, or a token with its id changed, shows nothing."""
    outcome = generate(client, "mine")
    assert outcome["saved"] is True and outcome["status_token"]
    mine = client.get(f"/api/saves/{outcome['status_token']}/")
    assert mine.status_code == 200 and mine.json()["name"] == outcome["name"]
    assert mine.json()["url"]

    digest = SaveAttempt.objects.using(record_alias()).get(pk=outcome["attempt_id"]).key_digest
    unsigned = signing.dumps([outcome["attempt_id"], digest[:16]], salt=TOKEN_SALT, key="guess")
    other_record = signing.dumps([outcome["attempt_id"], "0" * 16], salt=TOKEN_SALT)
    for probe in (str(outcome["attempt_id"]), unsigned, other_record, "x" * 500, "%00", "a:b:c"):
        response = client.get(f"/api/saves/{probe}/")
        assert response.status_code == 404, probe
        assert outcome["name"] not in response.content.decode()


# ----------------------------------------------------------------------- the fault switch


def test_unknown_preset_is_refused_naming_the_choices(client, example_app):
    response = client.post("/faults/", {"preset": "meteor"})

    assert response.status_code == 400
    page = response.content.decode()
    assert "Unknown fault preset &#x27;meteor&#x27;. Choose one of: Off (off)," in page
    assert "[" not in page.split('id="fault-error">')[1].split("</p>")[0]  # no Python list


def test_fault_switch_without_proxy_says_why(client, example_app):
    embedded.use_proxy(None)

    response = client.post("/faults/", {"preset": "outage"})

    assert response.status_code == 400
    assert "needs the embedded S3" in response.content.decode()


def test_fault_switch_does_not_redirect_off_site(client, example_app):
    response = client.post("/faults/", {"preset": "off", "next": "https://evil.example/"})

    assert response.status_code == 302 and response["Location"] == "/faults/"


def test_faults_page_shows_proxy_counts(client, example_app):
    generate(client)

    page = client.get("/faults/").content.decode()

    assert 'id="proxy-counts"' in page and "<td>PUT</td>" in page


# ----------------------------------------------------------------------- documents and uploads


def test_document_is_saved_and_read_back(client, example_app, s3, settings):
    response = client.post("/documents/", {"title": "Notes", "document": '{"a": [1, "ü"]}'})

    page = response.content.decode()
    assert 'data-state="saved"' in page
    name = page.split('id="outcome-name">')[1].split("<")[0]
    assert name.startswith("documents/year=") and name.endswith("/notes.json.gz")
    head = s3.head_object(Bucket=settings.TEST_BUCKET, Key=name)
    assert head["ContentEncoding"] == "gzip"
    assert json.loads(page.split('<pre id="read-back">')[1].split("</pre>")[0]
                      .replace("&quot;", '"')) == {"a": [1, "ü"]}


def test_invalid_json_is_refused_clearly(client, example_app):
    page = client.post("/documents/", {"title": "x", "document": "{nope"}).content.decode()

    assert "That is not valid JSON" in page and 'id="outcome"' not in page


def test_upload_is_saved(client, example_app, s3, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("Bericht März.txt", b"hello upload", content_type="text/plain")
    page = client.post("/documents/", {"file": upload}).content.decode()

    name = page.split('id="outcome-name">')[1].split("<")[0]
    assert s3.get_object(Bucket=settings.TEST_BUCKET, Key=name)["Body"].read() == b"hello upload"


def test_upload_during_outage_offers_download(client, example_app):
    from django.core.files.uploadedfile import SimpleUploadedFile

    switch_faults(client, "outage")
    upload = SimpleUploadedFile("a.txt", b"keep me", content_type="text/plain")
    page = client.post("/documents/", {"file": upload}).content.decode()

    assert 'data-state="partial"' in page
    assert f'href="data:text/plain;base64,{base64.b64encode(b"keep me").decode()}"' in page


# ----------------------------------------------------------------------- embedded S3 discovery


def test_storage_without_endpoint_or_demo_says_what_to_do(settings, tmp_path):
    settings.EXAMPLE_VAR_DIR = tmp_path

    with pytest.raises(ImproperlyConfigured, match=r"set S3_ENDPOINT_URL.*manage\.py demo"):
        embedded.EmbeddedS3Storage(bucket_name="b", endpoint_url=None)


def test_state_file_of_a_live_demo_is_used_and_of_a_dead_one_ignored(settings, tmp_path):
    settings.EXAMPLE_VAR_DIR = tmp_path
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    state = embedded.state_file()

    state.write_text(json.dumps({"endpoint_url": "http://127.0.0.1:1", "pid": int(dead)}))
    assert embedded.running_endpoint() is None

    state.write_text(json.dumps({"endpoint_url": "http://127.0.0.1:2", "pid": os.getpid()}))
    storage = embedded.EmbeddedS3Storage(bucket_name="b", endpoint_url=None)
    assert storage.endpoint_url == "http://127.0.0.1:2"


# ----------------------------------------------------------------------- settings and the demo


def run_manage(*args, env: dict, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def example_env(tmp_path, **extra) -> dict:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("S3_", "GUARD_", "DATABASE_URL", "CACHE_URL", "SENTRY_"))}
    keep.pop("DJANGO_SETTINGS_MODULE", None)
    return {**keep, "EXAMPLE_VAR_DIR": str(tmp_path / "var"), **extra}


SHOW_SETTINGS = ("from django.conf import settings as s; import json; o = s.STORAGES['default']"
                 "['OPTIONS']; print(json.dumps({'db': str(s.DATABASES['default']['NAME']), "
                 "'engine': s.DATABASES['default']['ENGINE'], 'endpoint': o['endpoint_url'], "
                 "'bucket': o['bucket_name'], 'embedded': s.EMBEDDED_S3, "
                 "'on_failure': s.STORAGE_GUARD['ON_FAILURE'], "
                 "'cache': s.CACHES['default']['BACKEND']}))")


def test_settings_default_to_embedded_services(tmp_path):
    result = run_manage("shell", "-c", SHOW_SETTINGS, env=example_env(tmp_path))

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown["db"] == str(tmp_path / "var" / "example.sqlite3")
    assert shown["embedded"] is True and shown["endpoint"] is None
    assert shown["cache"].endswith("FileBasedCache")  # one cache for server and commands


def test_settings_come_from_the_environment(tmp_path):
    env = example_env(tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:5432/test",
                      S3_ENDPOINT_URL="http://127.0.0.1:9000", S3_BUCKET="photos",
                      GUARD_ON_FAILURE="defer", CACHE_URL="redis://127.0.0.1:6379/3")

    result = run_manage("shell", "-c", SHOW_SETTINGS, env=env)

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown["engine"] == "django.db.backends.postgresql" and shown["db"] == "test"
    assert shown["endpoint"] == "http://127.0.0.1:9000" and shown["bucket"] == "photos"
    assert shown["embedded"] is False and shown["on_failure"] == "defer"
    assert "redis" in shown["cache"].lower()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_demo_command_serves_and_stops_its_embedded_s3(tmp_path):
    env = example_env(tmp_path)
    assert run_manage("migrate", "--noinput", env=env).returncode == 0
    port = free_port()
    demo = subprocess.Popen([sys.executable, "manage.py", "demo", f"127.0.0.1:{port}"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = tmp_path / "var" / "embedded-s3.json"
    try:
        page = _wait_for(f"http://127.0.0.1:{port}/generate/", demo)
        assert b'id="generate-form"' in page
        assert json.loads(state.read_text())["pid"] == demo.pid
    finally:
        demo.send_signal(signal.SIGTERM)
        output = demo.communicate(timeout=30)[0]
    assert "local demo credential" in output
    password = (tmp_path / "var" / "demo-admin-password.txt").read_text().strip()
    assert len(password) >= 12 and password in output
    assert not state.exists()


def _wait_for(url: str, process, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"manage.py demo exited early:\n{process.stdout.read()}")
        try:
            return fetch(url)
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"{url} did not answer within {timeout}s")
