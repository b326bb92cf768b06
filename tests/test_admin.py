"""The SaveAttempt admin: read-only evidence, actions via operations.redelivery, no big counts."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from storage_guard.admin import save_attempts as sg_admin
from storage_guard.models import SaveAttempt, StashedPayload, Status
from tests.test_replay import read_default, stash_failed_saves

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:storage_guard_saveattempt_changelist"


@pytest.fixture
def viewer(client):
    """Staff with view permission only: may look, may not act or download."""
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_saveattempt"))
    client.force_login(user)
    return client


def test_changelist_columns_badges_and_no_full_count(admin_client, fault_proxy):
    saved = stash_failed_saves(fault_proxy, 2)
    storages["default"].save("admin-ok.txt", ContentFile(b"x" * 3000))
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse(CHANGELIST))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'class="sg-badge sg-failed"' in html and 'class="sg-badge sg-succeeded"' in html
    assert "2.9\xa0KB" in html  # Django's filesizeformat
    assert f'title="{saved[0][1]}"' in html  # full key on hover
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert len(counts) == 1 and "LIMIT 10001" in counts[0], counts  # one capped count
    assert not [q for q in queries if "DISTINCT" in q["sql"].upper()
                and "created_at" in q["sql"] and "error_code" not in q["sql"]]
    # failures first (attention order, the sg_attention_created index), newest first within
    order = re.findall(r'class="sg-badge sg-(\w+)"', html)
    assert order == ["failed", "failed", "succeeded"]
    assert reverse("admin:storage_guard_saveattempt_summary") in html


def test_filters_search_and_date_hierarchy(admin_client, fault_proxy):
    saved = stash_failed_saves(fault_proxy, 2)
    SaveAttempt.objects.filter(pk=saved[0][0]).update(error_code="SlowDown",
                                                       error_category="throttled")
    url = reverse(CHANGELIST)

    def shown(**params):
        html = admin_client.get(url, params).content.decode()
        return {int(pk) for pk in re.findall(r'name="_selected_action" value="(\d+)"', html)}

    ids = {s[0] for s in saved}
    assert shown(status="failed") == ids
    assert shown(status="succeeded") == set()
    assert shown(error_code="SlowDown") == {saved[0][0]}
    assert shown(error_category="throttled") == {saved[0][0]}
    assert shown(storage_alias="default") == ids
    assert shown(q=saved[1][1]) == {saved[1][0]}  # exact key
    record = SaveAttempt.objects.get(pk=saved[0][0])
    assert shown(q=record.sha256) == {saved[0][0]}  # payloads differ, so do their hashes
    assert shown(q=saved[0][1].split("/")[0]) == ids  # substring of the key
    year = timezone.localtime(record.created_at).year
    html = admin_client.get(url).content.decode()
    assert f">{year}</a>" in html  # date hierarchy from MIN/MAX
    assert shown(created_at__year=year) == ids
    assert shown(created_at__year=year - 1) == set()
    month = timezone.localtime(record.created_at).strftime("%B")
    by_year = admin_client.get(url, {"created_at__year": year}).content.decode()
    assert f">{month} {year}</a>" in by_year


def test_read_only(admin_client, fault_proxy):
    [(record_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)
    assert admin_client.get(reverse("admin:storage_guard_saveattempt_add")).status_code == 403
    change = reverse("admin:storage_guard_saveattempt_change", args=[record_id])
    response = admin_client.post(change, {"status": "succeeded"})
    assert response.status_code == 403
    assert SaveAttempt.objects.get(pk=record_id).status == Status.FAILED
    delete = reverse("admin:storage_guard_saveattempt_delete", args=[record_id])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert SaveAttempt.objects.filter(pk=record_id).exists()


def test_detail_page_shows_key_response_attempts_stash_and_history(admin_client, fault_proxy):
    saved = stash_failed_saves(fault_proxy, 1, action="internal")
    record = SaveAttempt.objects.get(pk=saved[0][0])
    storages["default"].save(record.name, ContentFile(b"later"))
    later = SaveAttempt.objects.filter(key=record.key).exclude(pk=record.pk).get()

    html = admin_client.get(reverse("admin:storage_guard_saveattempt_change",
                                    args=[record.pk])).content.decode()
    assert f"<code style=\"word-break:break-all\">{record.key}</code>" in html
    assert "&quot;Code&quot;: &quot;InternalError&quot;" in html  # pretty-printed response
    assert html.count('class="sg-attempt"') == len(record.attempt_log) == record.attempts
    assert reverse("admin:storage_guard_saveattempt_stash", args=[record.pk]) in html
    assert reverse("admin:storage_guard_saveattempt_change", args=[later.pk]) in html


def test_stash_download_is_permission_checked(admin_client, viewer, fault_proxy):
    [(record_id, _key, payload)] = stash_failed_saves(fault_proxy, 1)
    url = reverse("admin:storage_guard_saveattempt_stash", args=[record_id])
    assert viewer.get(url).status_code == 403
    response = admin_client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == payload
    assert response["Content-Disposition"] == 'attachment; filename="file-0000.bin"'


def test_viewer_sees_no_actions(viewer, fault_proxy):
    stash_failed_saves(fault_proxy, 1)
    html = viewer.get(reverse(CHANGELIST)).content.decode()
    assert "retry_now" not in html and "mark_abandoned" not in html


def test_retry_now_delivers_and_reports(admin_client, fault_proxy, s3):
    saved = stash_failed_saves(fault_proxy, 2)
    ok_id = SaveAttempt.objects.create(key="k", key_bytes=1, name="k",
                                       status=Status.SUCCEEDED).pk
    response = admin_client.post(reverse(CHANGELIST), {
        "action": "retry_now", "_selected_action": [s[0] for s in saved] + [ok_id]},
        follow=True)
    text = response.content.decode()
    assert "Retry: 2 delivered, 0 failed again, 1 skipped." in text
    assert f"#{ok_id} skipped: status is succeeded" in text
    for record_id, key, payload in saved:
        assert SaveAttempt.objects.get(pk=record_id).status == Status.RECOVERED
        assert read_default(s3, key) == payload


def test_mark_abandoned_asks_and_frees_bytes_only_when_confirmed(admin_client, fault_proxy):
    (keep_id, _k, _p), (free_id, _k2, _p2) = stash_failed_saves(fault_proxy, 2)
    url = reverse(CHANGELIST)
    confirm = admin_client.post(url, {"action": "mark_abandoned",
                                      "_selected_action": [keep_id, free_id]})
    assert confirm.status_code == 200
    assert "cannot be undone" in confirm.content.decode()
    assert SaveAttempt.objects.filter(status=Status.ABANDONED).count() == 0  # nothing yet

    admin_client.post(url, {"action": "mark_abandoned", "_selected_action": [keep_id],
                            "post": "yes"})
    admin_client.post(url, {"action": "mark_abandoned", "_selected_action": [free_id],
                            "post": "yes", "free_stash": "on"})
    assert SaveAttempt.objects.get(pk=keep_id).status == Status.ABANDONED
    assert SaveAttempt.objects.get(pk=free_id).status == Status.ABANDONED
    assert StashedPayload.objects.filter(attempt_id=keep_id).exists()
    assert not StashedPayload.objects.filter(attempt_id=free_id).exists()


def test_summary_page_rates_and_inline_svg_chart(admin_client, fault_proxy):
    stash_failed_saves(fault_proxy, 3, action="internal")
    for number in range(5):
        storages["default"].save(f"summary-{number}.txt", ContentFile(b"ok"))
    old = SaveAttempt.objects.create(key="old", key_bytes=3, name="old", status=Status.FAILED,
                                     error_code="SlowDown")
    SaveAttempt.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))

    html = admin_client.get(reverse("admin:storage_guard_saveattempt_summary")).content.decode()
    day, week = html.split('id="sg-window-2"')
    assert re.search(r'class="sg-total" href="[^"]+">8</a>', day)
    assert re.search(r'class="sg-total" href="[^"]+">9</a>', week)
    assert re.search(r'class="sg-success-rate" href="[^"]+">62.50%</a>', day)
    assert "<svg" in day and 'data-code="SlowDown"' not in day and 'data-code="SlowDown"' in week
    codes = set(SaveAttempt.objects.exclude(error_code="").exclude(pk=old.pk)
                .values_list("error_code", flat=True))
    for code in codes:
        assert f'data-code="{code}"' in day
    assert "<script" not in html.split('id="content-main"')[1].split("</svg>")[0]
    assert 'id="sg-newest-failures"' in html and "old</a>" in html


def test_capped_paginator_counts_at_most_the_cap(admin_client):
    SaveAttempt.objects.bulk_create([SaveAttempt(key=f"k{n}", key_digest=str(n), key_bytes=2,
                                                 name="k", status=Status.SUCCEEDED)
                                     for n in range(30)])
    paginator = sg_admin.CappedCountPaginator(SaveAttempt.objects.all(), 10)
    paginator.cap = 25
    assert paginator.count == 25 and paginator.capped and paginator.num_pages == 3
    uncapped = sg_admin.CappedCountPaginator(SaveAttempt.objects.all(), 10)
    assert uncapped.count == 30 and not uncapped.capped


@pytest.mark.parametrize(("size", "text"), [(None, "—"), (0, "0\xa0bytes"),
                                            (1023, "1023\xa0bytes"), (1536, "1.5\xa0KB"),
                                            (5 * 1024 ** 2, "5.0\xa0MB"),
                                            (3 * 1024 ** 3, "3.0\xa0GB")])
def test_human_size(size, text):
    assert sg_admin.human_size(size) == text
