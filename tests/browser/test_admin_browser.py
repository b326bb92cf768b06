"""The SaveAttempt admin in headless Chromium: log in, filter failed saves, open one, "Retry now",
see it delivered, view the summary page.

Screenshots: artifacts/screens/admin-*.png.
"""

from __future__ import annotations

import pytest
from django.conf import settings

from storage_guard.models import SaveAttempt, Status
from tests.test_replay import read_default, stash_failed_saves

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_review_retry_and_summary(page, live_server, admin_user, fault_proxy, s3, screenshot):
    saved = stash_failed_saves(fault_proxy, 3)
    record_id, key, payload = saved[1]
    base = live_server.url

    page.goto(f"{base}/admin/login/?next=/admin/storage_guard/saveattempt/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")

    page.locator("#changelist-filter").get_by_role("link", name="failed", exact=True).click()
    page.wait_for_url("**status__exact=failed**")
    assert page.locator("#result_list tbody tr").count() == 3
    assert page.locator("#result_list .sg-badge.sg-failed").count() == 3
    screenshot(page, "admin-changelist-failed")

    page.locator(f"#result_list a[href*='/{record_id}/change/']").click()
    page.wait_for_selector(".field-full_key")
    assert key in page.inner_text(".field-full_key")
    assert page.locator(".sg-attempt").count() == SaveAttempt.objects.get(pk=record_id).attempts
    assert page.locator("a.sg-download").is_visible()
    screenshot(page, "admin-detail-failed")

    page.go_back()
    page.wait_for_selector("#result_list")
    page.check(f"input[name=_selected_action][value='{record_id}']")
    page.select_option("select[name=action]", "retry_now")
    page.click("button[name=index]")
    page.wait_for_selector("ul.messagelist")
    assert "Retry: 1 delivered, 0 failed again, 0 skipped." in page.inner_text("ul.messagelist")
    screenshot(page, "admin-retried")

    assert SaveAttempt.objects.get(pk=record_id).status == Status.RECOVERED
    assert read_default(s3, key) == payload
    assert settings.TEST_BUCKET  # the bucket the live server's storage wrote to

    page.click("a.sg-summary-link")
    page.wait_for_selector("#sg-window-1")
    assert page.inner_text("#sg-window-1 .sg-total") == "3"
    assert page.locator("#sg-window-1 svg.sg-chart .sg-bar").count() >= 1
    assert page.locator("#sg-newest-failures tbody tr").count() == 2  # one was recovered
    screenshot(page, "admin-summary")
