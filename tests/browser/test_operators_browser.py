"""What an on-call engineer sees in the admin, in headless Chromium at 1280 px with Django's
navigation sidebar open: the list fits, failures come first, the circuit banner is on every
page, the detail page's actions work and land in the History page, the summary has a time axis.

Screenshots: artifacts/screens/ops-*.png.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.models import LogEntry
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from storage_guard.models import SaveAttempt, Status
from tests.test_operators import OPEN_LINE, open_circuit
from tests.test_replay import stash_failed_saves

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FIT = """() => {
  const table = document.querySelector('#result_list');
  const box = table.closest('.results');
  return {table: table.scrollWidth, box: box.clientWidth,
          sidebar: getComputedStyle(document.querySelector('#nav-sidebar')).display !== 'none'
                   && document.querySelector('#nav-sidebar').getBoundingClientRect().width > 0};
}"""


LINES = """() => {
  const lines = (selector) => [...document.querySelectorAll(selector)].map((cell) => {
    const range = document.createRange();
    range.selectNodeContents(cell);
    return new Set([...range.getClientRects()].filter((r) => r.width > 0)
                   .map((r) => Math.round(r.top))).size;
  });
  return {size: lines('#result_list td.field-size_display'),
          status: [...document.querySelectorAll('#result_list .sg-badge')]
            .map((badge) => badge.getClientRects().length),
          created: lines('#result_list td.field-created_display')};
}"""


def log_in(page, base: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/storage_guard/saveattempt/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")


@pytest.fixture
def reset_breaker():
    storages["default"].breaker.reset()
    yield
    storages["default"].breaker.reset()


def test_changelist_fits_at_1280_with_the_sidebar_and_shows_failures_first(
        page, live_server, admin_user, fault_proxy, reset_breaker, screenshot):
    saved = stash_failed_saves(fault_proxy, 3, prefix="generated/year=2026/month=11/day=27/"
                               "a-rather-long-picture-name-for-the-list")
    for number in range(3):
        storages["default"].save(f"ok/year=2026/month=11/day=27/fine-{number}.png",
                                 ContentFile(b"x" * 460))
    SaveAttempt.objects.filter(pk=saved[2][0]).update(status=Status.ABANDONED)
    log_in(page, live_server.url)

    fit = page.evaluate(FIT)

    screenshot(page, "ops-changelist")
    assert fit["sidebar"], "Django's navigation sidebar should be open at 1280 px"
    assert fit["table"] <= fit["box"], fit
    headers = [h.strip().lower() for h in page.locator("#result_list thead th").all_inner_texts()]
    for column in ("status", "key", "error code", "attempts", "created"):
        assert column in headers, headers
    badges = page.locator("#result_list .sg-badge").all_inner_texts()
    assert badges[:2] == ["failed", "failed"] and badges[2] == "abandoned"
    assert set(badges[3:]) == {"succeeded"}
    sizes = page.locator("#result_list td.field-size_display").all_inner_texts()
    assert "460\xa0bytes" in sizes  # one line, Django's filesizeformat
    lines = page.evaluate(LINES)
    assert lines["size"] == [1] * 6 and lines["status"] == [1] * 6, lines  # nothing wraps
    assert lines["created"] == [2] * 6, lines  # date above time, as designed


def test_detail_actions_banner_history_and_summary(
        page, live_server, admin_user, fault_proxy, reset_breaker, screenshot):
    (retry_id, _k, _p), (abandon_id, _k2, _p2) = stash_failed_saves(fault_proxy, 2)
    base = live_server.url
    log_in(page, base)

    open_circuit()
    page.reload()
    banner = page.locator(".sg-circuit").inner_text()
    assert OPEN_LINE.fullmatch(banner), banner
    screenshot(page, "ops-changelist-circuit-open")

    page.goto(f"{base}/admin/storage_guard/saveattempt/{retry_id}/change/")
    assert OPEN_LINE.fullmatch(page.locator(".sg-circuit").inner_text())
    assert page.locator("#sg-download").is_visible()
    at = page.locator(".sg-attempts td").all_inner_texts()
    assert not [cell for cell in at if re.search(r"\d{4}-\d\d-\d\dT", cell)]  # no raw ISO
    screenshot(page, "ops-detail-circuit-open")

    storages["default"].breaker.reset()
    page.reload()
    assert page.locator(".sg-circuit").count() == 0
    page.click("#sg-retry-now")
    page.wait_for_selector("ul.messagelist")
    assert f"#{retry_id} delivered" in page.inner_text("ul.messagelist") or \
        "1 delivered" in page.inner_text("ul.messagelist")
    assert page.locator("#sg-retry-now").count() == 0  # recovered: nothing left to retry
    screenshot(page, "ops-detail-retried")

    page.click("a.historylink")
    page.wait_for_selector("#change-history")
    assert f"Retry now: #{retry_id} delivered" in page.inner_text("#change-history")
    assert "admin" in page.inner_text("#change-history")
    screenshot(page, "ops-history")

    page.goto(f"{base}/admin/storage_guard/saveattempt/{abandon_id}/change/")
    page.click("#sg-mark-abandoned")
    page.wait_for_selector("#sg-free-stash")
    screenshot(page, "ops-abandon-confirmation")
    page.click("input[type=submit][value='Mark abandoned']")
    page.wait_for_selector("ul.messagelist")
    assert SaveAttempt.objects.get(pk=abandon_id).status == Status.ABANDONED
    assert LogEntry.objects.filter(object_id=str(abandon_id)).count() == 1

    page.goto(f"{base}/admin/storage_guard/saveattempt/summary/")
    page.wait_for_selector("#sg-window-1 svg.sg-time-chart")
    assert page.locator("#sg-window-1 svg.sg-time-chart a.sg-hour").count() >= 1
    screenshot(page, "ops-summary")
    page.locator("#sg-window-1 svg.sg-time-chart a.sg-hour").first.click()
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 2  # both failures of this hour
    screenshot(page, "ops-summary-hour-drilldown")
