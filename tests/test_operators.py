"""What operators see (issue 13): circuit state in the admin, doctor and report; attention-first
order; detail-page actions in the admin's history; one clock; the summary's time axis."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.contrib.admin.models import LogEntry
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from storage_guard import clock
from storage_guard.models import SaveAttempt, StashedPayload, Status
from storage_guard.operations import circuits, doctor, report
from tests.test_replay import read_default, stash_failed_saves

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:storage_guard_saveattempt_changelist"
OPEN_LINE = re.compile(r"circuit for (\S+) OPEN since \d\d:\d\d:\d\d \S+ after (\d+) failures; "
                       r"next probe in (\d+) s")


def open_circuit(storage=None):
    """Open the storage's breaker as a real outage leaves it: ``threshold`` failures counted."""
    breaker = (storage or storages["default"]).breaker
    breaker.reset()
    breaker.open(breaker.threshold, cooldown=breaker.cooldown)  # open for the longest wait
    return breaker


@pytest.fixture
def closed_circuit():
    storages["default"].breaker.reset()
    yield storages["default"].breaker
    storages["default"].breaker.reset()


def change(record_id: int) -> str:
    return reverse("admin:storage_guard_saveattempt_change", args=[record_id])


# ----------------------------------------------------------------------- circuit state


def test_open_circuit_is_described_with_since_failures_and_wait(closed_circuit):
    breaker = open_circuit()

    [snap] = circuits.troubled()
    line = circuits.describe(snap)

    match = OPEN_LINE.fullmatch(line)
    assert match, line
    assert match.group(1) == breaker.name and int(match.group(2)) == breaker.threshold
    assert 0 <= int(match.group(3)) <= breaker.cooldown
    breaker.reset()
    assert circuits.troubled() == []
    assert "closed" in circuits.describe(circuits.snapshots()[0])


@pytest.mark.parametrize("page", ["changelist", "summary", "detail"])
def test_every_admin_page_shows_the_open_circuit(admin_client, fault_proxy, closed_circuit,
                                                 page):
    [(record_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)
    url = {"changelist": reverse(CHANGELIST), "detail": change(record_id),
           "summary": reverse("admin:storage_guard_saveattempt_summary")}[page]
    assert "sg-circuit" not in admin_client.get(url).content.decode()

    open_circuit()
    html = admin_client.get(url).content.decode()

    [banner] = re.findall(r'<li class="warning sg-circuit">([^<]+)</li>', html)
    assert OPEN_LINE.fullmatch(banner), banner


def test_doctor_prints_the_circuit_line(guarded_storage_factory, closed_circuit):
    storage = guarded_storage_factory()
    healthy = doctor.as_text(doctor.DoctorReport([doctor.examine_storage("default", storage)]))
    assert any(line.strip().startswith(f"circuit for {storage.breaker.name} closed")
               for line in healthy)

    open_circuit(storage)
    text = doctor.as_text(doctor.DoctorReport([doctor.examine_storage("default", storage)]))

    assert any(OPEN_LINE.fullmatch(line.strip()) for line in text), text


def test_report_names_the_circuit_and_prints_zoned_times_without_microseconds(closed_circuit):
    open_circuit()
    out = StringIO()

    call_command("storage_guard_report", stdout=out)

    header, circuit_line = out.getvalue().splitlines()[:2]
    zone = timezone.localtime().strftime("%Z")
    assert re.fullmatch(rf"storage_guard report: saves from \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d "
                        rf"{zone} to \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {zone}, storage \(all\)",
                        header), header
    assert OPEN_LINE.fullmatch(circuit_line), circuit_line
    data = report.build_report(since=timezone.now() - timedelta(hours=1))
    [shown] = data["circuits"]
    assert shown["state"] == "open" and shown["failures"] == storages["default"].breaker.threshold


def test_report_merges_the_two_success_rows(closed_circuit):
    for number in range(3):
        storages["default"].save(f"report-merge-{number}.txt", ContentFile(b"ok"))
    SaveAttempt.objects.create(key="k", key_bytes=1, name="k", status=Status.SUCCEEDED,
                               attempts=3)
    out = StringIO()

    call_command("storage_guard_report", stdout=out)

    text = out.getvalue()
    assert "first-try success" not in text and "success (first call)" not in text
    [row] = [line for line in text.splitlines() if "succeeded in the request" in line]
    assert row.split()[-2:] == ["100.00%", "(75.00%)"]


# ----------------------------------------------------------------------- order


def test_changelist_is_attention_first(admin_client):
    now = timezone.now()
    made = {}
    for minutes, status in enumerate([Status.FAILED, Status.SUCCEEDED, Status.ABANDONED,
                                      Status.DEFERRED, Status.RECOVERED, Status.REJECTED,
                                      Status.FAILED]):
        record = SaveAttempt.objects.create(key=f"o{minutes}", key_bytes=2, name="o",
                                            status=status)
        SaveAttempt.objects.filter(pk=record.pk).update(
            created_at=now - timedelta(minutes=minutes))
        made[record.pk] = status
    html = admin_client.get(reverse(CHANGELIST)).content.decode()

    shown = [int(pk) for pk in re.findall(r'name="_selected_action" value="(\d+)"', html)]

    assert [made[pk] for pk in shown] == [
        Status.FAILED, Status.FAILED, Status.DEFERRED, Status.REJECTED, Status.ABANDONED,
        Status.SUCCEEDED, Status.RECOVERED]
    assert shown[:2] == sorted(shown[:2])  # newest first among the failed (created earlier)


@pytest.mark.skipif(connection.vendor != "postgresql",
                    reason="runs in the PostgreSQL pass: EXPLAIN of PostgreSQL's planner")
def test_attention_order_is_served_by_its_index(admin_client):
    SaveAttempt.objects.bulk_create([SaveAttempt(key=f"x{n}", key_digest=str(n), key_bytes=2,
                                                 name="x", status=Status.SUCCEEDED)
                                     for n in range(200)])
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(reverse(CHANGELIST))
    [listing] = [q["sql"] for q in queries if "ORDER BY CASE" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_sort = off")
        cursor.execute("EXPLAIN " + listing)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
        cursor.execute("RESET enable_sort")
    assert "sg_attention_created" in plan and "Sort" not in plan, plan


# ----------------------------------------------------------------------- actions and history


def test_retry_now_on_the_detail_page_is_logged_with_user_and_outcome(
        admin_client, admin_user, fault_proxy, s3, closed_circuit):
    [(record_id, key, payload)] = stash_failed_saves(fault_proxy, 1)
    page = admin_client.get(change(record_id)).content.decode()
    retry_url = reverse("admin:storage_guard_saveattempt_retry", args=[record_id])
    assert f'action="{retry_url}"' in page and 'id="sg-download"' in page

    response = admin_client.post(retry_url, follow=True)

    assert response.redirect_chain[-1][0] == change(record_id)
    assert SaveAttempt.objects.get(pk=record_id).status == Status.RECOVERED
    assert read_default(s3, key) == payload
    [entry] = LogEntry.objects.filter(object_id=str(record_id))
    assert entry.user == admin_user and entry.get_change_message() == \
        f"Retry now: #{record_id} delivered"
    history = admin_client.get(reverse("admin:storage_guard_saveattempt_history",
                                       args=[record_id])).content.decode()
    assert f"Retry now: #{record_id} delivered" in history
    assert clock.when(entry.action_time) in history  # the history's time with its zone too
    assert 'id="sg-retry-now"' not in admin_client.get(change(record_id)).content.decode()


def test_retry_that_fails_again_is_logged_as_such(admin_client, fault_proxy, closed_circuit):
    [(record_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)
    retry_url = reverse("admin:storage_guard_saveattempt_retry", args=[record_id])

    with fault_proxy.outage_window(action="service_unavailable"):
        admin_client.post(retry_url)

    [entry] = LogEntry.objects.filter(object_id=str(record_id))
    assert entry.get_change_message().startswith(f"Retry now: #{record_id} ")
    assert "delivered" not in entry.get_change_message()
    assert SaveAttempt.objects.get(pk=record_id).status == Status.FAILED


def test_mark_abandoned_on_the_detail_page_asks_then_logs(admin_client, admin_user,
                                                         fault_proxy):
    [(record_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)
    url = reverse("admin:storage_guard_saveattempt_abandon", args=[record_id])

    confirm = admin_client.get(url).content.decode()
    assert "cannot be undone" in confirm and f'action="{url}"' in confirm
    assert f'href="{change(record_id)}" class="button cancel-link"' in confirm
    assert SaveAttempt.objects.get(pk=record_id).status == Status.FAILED

    admin_client.post(url, {"post": "yes"})

    assert SaveAttempt.objects.get(pk=record_id).status == Status.ABANDONED
    assert StashedPayload.objects.filter(attempt_id=record_id).exists()  # kept without the tick
    [entry] = LogEntry.objects.filter(object_id=str(record_id))
    assert entry.user == admin_user
    assert entry.get_change_message() == "Mark abandoned: abandoned, stashed bytes kept"


def test_bulk_actions_are_logged_per_record(admin_client, fault_proxy, closed_circuit):
    saved = stash_failed_saves(fault_proxy, 2)
    admin_client.post(reverse(CHANGELIST), {"action": "mark_abandoned", "post": "yes",
                                            "_selected_action": [s[0] for s in saved],
                                            "free_stash": "on"})

    messages = dict(LogEntry.objects.values_list("object_id", "change_message"))

    assert messages == {str(s[0]): "Mark abandoned: abandoned, stashed bytes deleted"
                        for s in saved}


def test_viewer_gets_no_detail_actions(client, fault_proxy):
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_saveattempt"))
    client.force_login(user)
    [(record_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)

    assert 'id="sg-record-actions"' not in client.get(change(record_id)).content.decode()
    retry = reverse("admin:storage_guard_saveattempt_retry", args=[record_id])
    assert client.post(retry).status_code == 403
    assert not LogEntry.objects.exists()


# ----------------------------------------------------------------------- one clock


def test_times_carry_their_zone_everywhere_in_the_detail_page(admin_client, fault_proxy,
                                                             closed_circuit):
    [(record_id, _key, _payload)] = stash_failed_saves(fault_proxy, 1)
    with fault_proxy.outage_window(action="service_unavailable"):  # a replay round, with "at"
        admin_client.post(reverse("admin:storage_guard_saveattempt_retry", args=[record_id]))
    record = SaveAttempt.objects.get(pk=record_id)
    html = admin_client.get(change(record_id)).content.decode()

    assert clock.when(record.created_at) in html
    table = html.split('class="sg-attempts"')[1].split("</table>")[0]
    at_cells = [cell for cell in re.findall(r"<td>([^<]*)</td></tr>", table) if cell]
    zone = timezone.localtime().strftime("%Z")
    replayed = [entry for entry in record.attempt_log if entry.get("at")]
    assert replayed and len(at_cells) == len(replayed)
    assert all(re.fullmatch(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {zone}", cell)
               for cell in at_cells), at_cells
    assert "+00:00" not in table


def test_clock_formats_datetimes_timestamps_and_iso_strings_alike(settings):
    settings.TIME_ZONE = "UTC"
    moment = datetime(2026, 11, 27, 3, 24, 31, 339947, tzinfo=UTC)

    assert clock.when(moment) == "2026-11-27 03:24:31 UTC"
    assert clock.when(moment.isoformat()) == "2026-11-27 03:24:31 UTC"
    assert clock.when(moment.timestamp()) == "2026-11-27 03:24:31 UTC"
    assert clock.when(None) == "" and clock.when("not a time") == "not a time"


# ----------------------------------------------------------------------- summary


def test_summary_hourly_bars_link_to_exactly_the_rows_they_count(admin_client, fault_proxy):
    saved = stash_failed_saves(fault_proxy, 2)
    storages["default"].save("summary-ok.txt", ContentFile(b"ok"))
    old = SaveAttempt.objects.create(key="old", key_bytes=3, name="old", status=Status.FAILED)
    SaveAttempt.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=5))

    html = admin_client.get(reverse("admin:storage_guard_saveattempt_summary")).content.decode()
    day = html.split('id="sg-window-2"')[0]
    bars = re.findall(r'<a class="sg-hour" href="([^"]+)" data-count="(\d+)">', day)

    assert sorted(int(n) for _url, n in bars) == [1, 2]
    assert "<script" not in html.split('id="content-main"')[1]
    for url, n in bars:
        listed = admin_client.get(url.replace("&amp;", "&")).content.decode()
        ids = re.findall(r'name="_selected_action" value="(\d+)"', listed)
        assert len(ids) == int(n), url
    [total_url] = re.findall(r'class="sg-total" href="([^"]+)"', day)
    listed = admin_client.get(total_url.replace("&amp;", "&")).content.decode()
    shown = set(re.findall(r'name="_selected_action" value="(\d+)"', listed))
    assert len(shown) == 4 and {str(s[0]) for s in saved} | {str(old.pk)} <= shown


# ----------------------------------------------------------------------- translations


def test_admin_speaks_german_under_language_code_de(admin_client, fault_proxy, settings,
                                                    closed_circuit):
    from django.utils import translation

    settings.LANGUAGE_CODE = "de"
    translation.deactivate()  # no language activated: the request follows LANGUAGE_CODE
    stash_failed_saves(fault_proxy, 1)
    open_circuit()
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    summary = admin_client.get(reverse("admin:storage_guard_saveattempt_summary")).content.decode()

    assert 'class="sg-badge sg-failed"' in html and ">fehlgeschlagen</span>" in html
    assert "Fehlercode" in html and "Jetzt wiederholen" in html  # column and action
    assert "Schutzschalter für" in html and "OFFEN seit" in html  # the circuit banner
    assert "Fehlschläge pro Stunde" in summary and "Übersicht" in summary


def test_report_and_doctor_text_follow_the_language(guarded_storage_factory, closed_circuit):
    from django.utils import translation

    storages["default"].save("report-de.txt", ContentFile(b"ok"))
    out = StringIO()
    with translation.override("de"):
        call_command("storage_guard_report", stdout=out)
        storage = guarded_storage_factory()
        lines = doctor.as_text(doctor.DoctorReport([doctor.examine_storage("default",
                                                                            storage)]))

    text = out.getvalue()
    assert text.startswith("storage_guard-Bericht: Speichervorgänge von ")
    assert "Speichervorgänge nach Status" in text and "erfolgreich" in text  # status label
    assert "Schutzschalter für" in text
    assert lines[0].endswith("— OK") and lines[1].strip().startswith(
        "Voreinstellung 'standard': Zeitlimits: Verbindung")
