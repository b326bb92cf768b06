"""The real ``manage.py demo`` (embedded SeaweedFS, fault proxy, server and retry worker in one
process) driven by headless Chromium as a new visitor: fault on, a partial result, fault off,
and the page turns to "saved" by itself, because the demo's retry worker delivered the kept copy.
No command is run by hand. Every page's fault switch is used.

Screenshots: artifacts/screens/demo-*.png.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.test_example_project import ROOT, _wait_for, example_env, free_port, run_manage

pytestmark = [pytest.mark.browser]

POLL_TIMEOUT = 90_000  # ms; generous: the shared machine may be slow, nothing is timed


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``manage.py demo`` on a free port, its retry worker replaying every second."""
    tmp_path = tmp_path_factory.mktemp("demo")
    env = example_env(tmp_path)
    migrated = run_manage("migrate", "--noinput", env=env, timeout=300)
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "demo", f"127.0.0.1:{port}", "--no-admin",
         "--retry-every", "1"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{base}/generate/", process, timeout=120)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert "Retry worker: replays stashed saves every 1s." in output, output


def switch_faults(page, preset: str) -> None:
    page.select_option("#fault-preset", preset)
    page.click("#fault-apply")
    page.wait_for_selector(f"#fault-state:has-text('faults: {preset}')")


def test_partial_turns_saved_without_a_manual_command(page, demo, screenshot):
    page.goto(f"{demo}/")
    screenshot(page, "demo-index")
    page.goto(f"{demo}/generate/")
    switch_faults(page, "outage")
    page.fill("#label", "made during an outage")
    page.click("#generate")
    page.wait_for_selector("#result[data-state=partial]", timeout=POLL_TIMEOUT)
    assert page.inner_text("#retry") == "yes"
    page.wait_for_function("document.getElementById('image').naturalWidth > 0")
    attempt = page.inner_text("#attempt")
    screenshot(page, "demo-generate-partial")

    switch_faults(page, "off")  # back on this result's page: ?attempt=N, drawn by the server
    assert f"attempt={attempt}" in page.url
    page.wait_for_selector("#result[data-state]")
    page.wait_for_function("document.getElementById('image').naturalWidth > 0")
    if page.get_attribute("#result", "data-state") == "partial":  # the worker may be quicker
        assert page.get_attribute("#image", "src") == f"/saves/{attempt}/content/"  # the stash
    screenshot(page, "demo-generate-reloaded")

    page.wait_for_selector("#result[data-state=saved]", timeout=POLL_TIMEOUT)
    page.wait_for_selector("#delivery[data-state=delivered]", timeout=POLL_TIMEOUT)
    assert "partial" not in page.get_attribute("#message", "class")
    assert page.evaluate("getComputedStyle(document.getElementById('message')).borderLeftColor")\
        == "rgb(46, 125, 50)"  # green
    page.wait_for_function("document.getElementById('stored-image').naturalWidth > 0")
    screenshot(page, "demo-generate-saved")

    page.reload()  # the real state again: stored, image from S3
    page.wait_for_selector("#result[data-state=saved]")
    assert page.inner_text("#message") == "Stored in S3."
    page.wait_for_function("document.getElementById('image').naturalWidth > 0")
    source = page.evaluate("document.getElementById('image').currentSrc")
    assert "/storage-guard-example/generated/" in source and "/saves/" not in source  # S3
    screenshot(page, "demo-generate-saved-reloaded")


def test_every_page_has_a_working_fault_switch(page, demo, screenshot):
    for path in ("/", "/generate/", "/documents/", "/faults/"):
        page.goto(f"{demo}{path}")
        options = page.locator("#fault-preset option").all_inner_texts()
        assert options == ["Off", "Flaky", "Throttled", "Outage", "Timeouts", "Network down"], \
            (path, options)
        switch_faults(page, "throttled")
        assert page.url.endswith(path)
        switch_faults(page, "off")
    page.goto(f"{demo}/documents/")
    switch_faults(page, "outage")
    page.click("#save-document")
    page.wait_for_selector("#outcome[data-state=partial]", timeout=POLL_TIMEOUT)
    screenshot(page, "demo-documents-partial")
    switch_faults(page, "off")
    page.goto(f"{demo}/faults/")
    screenshot(page, "demo-faults")
