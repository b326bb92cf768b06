"""A visitor in headless Chromium: faults on, the image still shown and downloadable, the failed
save in the admin, and after ``retry_failed_saves`` the stored object's URL on the same page.

Screenshots: artifacts/screens/example-*.png.
"""

from __future__ import annotations

import urllib.request

import pytest
from django.core.management import call_command

from storage_guard.models import SaveAttempt, Status
from storage_guard.saving import stash
from storage_guard.saving.records import record_alias
from tests.test_example_project import example_app  # noqa: F401 - fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True),
              pytest.mark.urls("example_project.urls")]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # 127.0.0.1 only
        return response.read()


def image_loaded(page, selector: str) -> bool:
    return page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0")


def switch_faults(page, preset: str) -> None:
    page.select_option("#fault-preset", preset)
    page.click("#fault-apply")
    page.wait_for_selector(f"#fault-state:has-text('faults: {preset}')")


def log_in(page, base: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/storage_guard/saveattempt/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")


def test_partial_result_is_shown_kept_listed_and_later_delivered(
        page, live_server, admin_user, example_app, screenshot, tmp_path):  # noqa: F811
    base = live_server.url
    page.goto(f"{base}/generate/")
    switch_faults(page, "outage")

    page.fill("#label", "made during an outage")
    page.click("#generate")
    page.wait_for_selector("#result[data-state=partial]")

    assert "shown here" in page.inner_text("#message")
    assert page.get_attribute("#image", "src").startswith("data:image/png;base64,")
    page.wait_for_function("document.getElementById('image').naturalWidth > 0")
    with page.expect_download() as download_info:
        page.click("#download")
    downloaded = tmp_path / "download.png"
    download_info.value.save_as(downloaded)
    inline = downloaded.read_bytes()
    assert inline.startswith(PNG_MAGIC)
    attempt_id = int(page.inner_text("#attempt"))
    record = SaveAttempt.objects.using(record_alias()).get(pk=attempt_id)
    assert record.status == Status.FAILED and stash.read(record) == inline
    assert page.inner_text("#retry") == "yes"
    screenshot(page, "example-partial")

    admin = page.context.new_page()
    log_in(admin, base)
    listing = admin.goto(f"{base}/admin/storage_guard/saveattempt/")
    assert listing.status == 200, "SaveAttempt is not in the admin (storage_guard/admin/)"
    row = admin.locator(
        f"#result_list tr:has(a[href$='/storage_guard/saveattempt/{record.pk}/change/'])")
    assert row.count() == 1
    assert "failed" in row.inner_text().lower()
    screenshot(admin, "example-admin-failed-save")

    admin.goto(f"{base}/faults/")
    switch_faults(admin, "off")
    example_app.clear()
    from django.core.files.storage import storages

    storages["default"].breaker.reset()
    call_command("retry_failed_saves")

    page.wait_for_selector("#delivery[data-state=delivered]", timeout=20_000)
    stored_url = page.get_attribute("#stored-url", "href")
    assert record.name.rsplit("/", 1)[-1] in stored_url
    assert fetch(stored_url) == inline
    page.wait_for_function("document.getElementById('stored-image').naturalWidth > 0")
    assert image_loaded(page, "#stored-image")
    screenshot(page, "example-delivered")
