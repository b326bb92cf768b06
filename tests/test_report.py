"""``storage_guard_report``: real saves through the fault proxy, and rows made to measure."""

from __future__ import annotations

import datetime as dt
import json
import random
import statistics
from io import StringIO

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone

from storage_guard.errors import SaveFailed
from storage_guard.models import SaveAttempt, Status, key_digest
from storage_guard.operations import report
from storage_guard.saving.records import update_attempt


def run_report(*args) -> dict:
    out = StringIO()
    call_command("storage_guard_report", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def save_failing(storage, proxy, name: str, data: bytes, attempts: int = 2):
    proxy.script(["internal"] * attempts)
    with pytest.raises(SaveFailed) as caught:
        storage.save(name, ContentFile(data))
    return caught.value.record_id


def record_saves(n: int, *, when=None, **fields) -> list[SaveAttempt]:
    """``n`` SaveAttempt rows made ``when`` (default: now), without touching S3."""
    base = {"storage_alias": "default", "name": "k", "key": "k", "key_bytes": 1, "size": 10,
            "sha256": "a" * 64, "status": Status.SUCCEEDED, "attempts": 1, **fields}
    base["key_digest"] = key_digest(base["key"])
    rows = SaveAttempt.objects.bulk_create(SaveAttempt(**base) for _ in range(n))
    if when is not None:
        SaveAttempt.objects.filter(pk__in=[r.pk for r in rows]).update(created_at=when)
    return rows


@pytest.mark.django_db(transaction=True)
def test_real_saves_give_rates_errors_and_same_data_verdicts(guarded_storage_factory,
                                                             fault_proxy):
    storage = guarded_storage_factory(max_attempts=2)
    for n in range(3):
        storage.save(f"plain/{n}.txt", ContentFile(b"ok %d" % n))
    fault_proxy.script(["reset", "pass"])
    storage.save("plain/retried.txt", ContentFile(b"retried"))
    save_failing(storage, fault_proxy, "same/data.txt", b"identical bytes")
    storage.save("same/data.txt", ContentFile(b"identical bytes"))
    save_failing(storage, fault_proxy, "changed/data.txt", b"first version")
    storage.save("changed/data.txt", ContentFile(b"second version, edited"))
    still = save_failing(storage, fault_proxy, "still/failing.txt", b"x" * 3000)

    data = run_report()

    assert data["saves"] == 9
    assert data["by_status"]["succeeded"] == 6 and data["by_status"]["failed"] == 3
    assert data["rates"]["success"] == round(6 / 9, 4)
    assert data["rates"]["first_try_success"] == round(5 / 9, 4)
    assert data["rates"]["retry"] == round(4 / 9, 4)
    assert data["rates"]["success_after_retry"] == 0.25
    errors = {e["code"]: e for e in data["errors"]}
    assert set(errors) == {"InternalError", "ConnectionClosed"}
    assert (errors["InternalError"]["failed_attempts"], errors["InternalError"]["saves_affected"],
            errors["InternalError"]["final_failures"]) == (6, 3, 3)
    assert errors["InternalError"]["transient"] is True
    assert errors["InternalError"]["attempt_share"] == round(6 / 7, 4)
    assert errors["InternalError"]["final_share"] == 1.0
    assert (errors["ConnectionClosed"]["failed_attempts"],
            errors["ConnectionClosed"]["final_failures"]) == (1, 0)
    same = data["same_data"]
    assert same["keys_with_failures"] == 3
    assert [e["key"] for e in same["intermittent"]["top"]] == ["same/data.txt"]
    assert [e["key"] for e in same["changed_data"]["top"]] == ["changed/data.txt"]
    assert [e["key"] for e in same["unresolved"]["top"]] == ["still/failing.txt"]
    assert same["unresolved"]["top"][0]["codes"] == {"InternalError": 1}
    payloads = data["largest_failed_payloads"]
    assert (payloads[0]["id"], payloads[0]["size"]) == (still, 3000)
    assert [p["size"] for p in payloads] == sorted((p["size"] for p in payloads), reverse=True)
    assert data["duration_ms"]["all"]["count"] == 9
    assert data["duration_ms"]["failed"]["count"] == 3
    assert data["duration_ms"]["retried"]["count"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_recovered_save_counts_as_the_same_data_succeeding_later(guarded_storage_factory,
                                                                   fault_proxy):
    storage = guarded_storage_factory(max_attempts=2)
    record_id = save_failing(storage, fault_proxy, "later/recovered.bin", b"payload")
    update_attempt(SaveAttempt.objects.get(pk=record_id), status=Status.RECOVERED,
                   recovered_at=timezone.now())

    data = run_report()

    assert data["by_status"]["recovered"] == 1
    assert data["rates"]["success"] == 0.0 and data["rates"]["eventual_success"] == 1.0
    assert data["same_data"]["intermittent"]["keys"] == 1
    assert data["same_data"]["unresolved"]["keys"] == 0


@pytest.mark.django_db
def test_changed_and_same_content_are_told_apart_per_key():
    start = timezone.now() - dt.timedelta(hours=2)
    for key, later_sha, later_size in (("a", "1" * 64, 10), ("b", "2" * 64, 10),
                                       ("c", "1" * 64, 11)):
        record_saves(2, when=start, key=key, sha256="1" * 64, status=Status.FAILED,
                     error_code="SlowDown", transient=True, attempts=5)
        record_saves(1, when=start + dt.timedelta(minutes=5), key=key, sha256=later_sha,
                     size=later_size)
    record_saves(1, when=start - dt.timedelta(minutes=1), key="d", sha256="1" * 64)
    record_saves(1, when=start, key="d", sha256="1" * 64, status=Status.DEFERRED,
                 error_code="ConnectTimeout", attempts=5)

    same = run_report("--since", "3h")["same_data"]

    assert (same["keys_with_failures"], same["intermittent"]["keys"]) == (4, 1)
    assert same["intermittent"]["top"][0] | {"first_failure": None, "last_failure": None} == {
        "key": "a", "failures": 2, "codes": {"SlowDown": 2}, "first_failure": None,
        "last_failure": None}
    assert sorted(e["key"] for e in same["changed_data"]["top"]) == ["b", "c"]
    assert [e["key"] for e in same["unresolved"]["top"]] == ["d"]  # its success came before


@pytest.mark.django_db
def test_percentiles_match_percentile_cont_on_every_database():
    rng = random.Random(5)
    durations = [round(rng.lognormvariate(3, 1), 3) for _ in range(257)]
    for value in durations:
        record_saves(1, duration_ms=value)
    record_saves(3, status=Status.REJECTED, duration_ms=99999.0, attempts=0)

    measured = run_report()["duration_ms"]["all"]

    cuts = statistics.quantiles(durations, n=100, method="inclusive")
    assert measured["count"] == len(durations)
    for name, cut in (("p50", cuts[49]), ("p95", cuts[94]), ("p99", cuts[98])):
        assert measured[name] == pytest.approx(cut, abs=0.01), name


@pytest.mark.django_db
def test_since_and_storage_select_the_window():
    now = timezone.now()
    record_saves(4, when=now - dt.timedelta(hours=1))
    record_saves(2, when=now - dt.timedelta(hours=30))
    record_saves(3, when=now - dt.timedelta(hours=1), storage_alias="media")

    assert run_report()["saves"] == 7
    assert run_report("--since", "2d")["saves"] == 9
    assert run_report("--since", "90m", "--storage", "media")["saves"] == 3
    since = (now - dt.timedelta(hours=31)).strftime("%Y-%m-%dT%H:%M")
    assert run_report("--since", since, "--storage", "default")["saves"] == 6


@pytest.mark.django_db
def test_errors_are_ranked_with_share_and_transience_from_the_table():
    record_saves(3, status=Status.FAILED, error_code="SlowDown", transient=True, attempts=1,
                 attempt_log=[{"n": 1, "code": "SlowDown"}])
    record_saves(1, status=Status.FAILED, error_code="AccessDenied", transient=False,
                 attempts=1, attempt_log=[{"n": 1, "code": "AccessDenied"}])
    record_saves(1, status=Status.REJECTED, error_code="KeyTooLong", attempts=0,
                 key="k" * 900, key_bytes=900)
    record_saves(1, status=Status.FAILED, error_code="WeirdVendorCode", transient=True,
                 error_category="server", attempts=1,
                 attempt_log=[{"n": 1, "code": "WeirdVendorCode"}])

    errors = run_report()["errors"]

    assert [(e["code"], e["failed_attempts"], e["final_failures"], e["transient"])
            for e in errors] == [("SlowDown", 3, 3, True), ("AccessDenied", 1, 1, False),
                                 ("WeirdVendorCode", 1, 1, True), ("KeyTooLong", 0, 1, False)]
    assert [e["final_share"] for e in errors] == [0.5, round(1 / 6, 4), round(1 / 6, 4),
                                                  round(1 / 6, 4)]
    assert errors[2]["category"] == "server"
    keys = run_report("--top", "1")["largest_failed_keys"]
    assert [(k["key_bytes"], k["codes"]) for k in keys] == [(900, {"KeyTooLong": 1})]


@pytest.mark.django_db
def test_the_text_report_is_aligned_and_names_every_section():
    record_saves(5, duration_ms=12.5)
    record_saves(2, status=Status.FAILED, error_code="InternalError", transient=True,
                 attempts=3, key="uploads/big.bin", size=5_000_000, duration_ms=2300.0,
                 attempt_log=[{"n": i, "code": "InternalError"} for i in (1, 2, 3)])
    out = StringIO()

    call_command("storage_guard_report", stdout=out)

    text = out.getvalue()
    for title in ("Saves by status", "Duration of a save in ms", "Errors by code",
                  "Largest keys among failures", "Largest payloads among failures",
                  "Same data, different outcome", "No later success yet"):
        assert title in text
    block = text.split("Errors by code")[1].split("\n\n")[0].splitlines()[1:]
    assert len(block) == 3 and len({len(line) for line in block}) == 1
    assert block[2].split() == ["InternalError", "yes", "server", "6", "100.00%", "2", "2",
                                "100.00%"]
    assert "succeeded in the request (first try)" in text and "(71.43%)" in text


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "message"), [
    (["--since", "5x"], "--since '5x' is not understood"),
    (["--since", "0h"], "at most 3650d"),
    (["--since", "4000d"], "out of range"),
    (["--since", "2999-01-01"], "is in the future"),
    (["--top", "0"], "--top must be a whole number from 1 to 100, not '0'"),
    (["--top", "many"], "--top must be a whole number from 1 to 100, not 'many'"),
    (["--storage", "nope"], "--storage 'nope' is not in settings.STORAGES"),
])
def test_bad_arguments_say_what_was_wrong_and_the_limit(args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(")) as caught:
        call_command("storage_guard_report", *args, stdout=StringIO())
    if "storage" in args:
        assert "default" in str(caught.value) and "staticfiles" in str(caught.value)


@pytest.mark.django_db
def test_an_empty_window_reports_zeros_not_errors():
    data = run_report()

    assert data["saves"] == 0 and data["rates"]["success"] is None
    assert data["duration_ms"]["all"] == {"count": 0, "p50": None, "p95": None, "p99": None}
    assert data["errors"] == [] and data["same_data"]["keys_with_failures"] == 0
    assert "(none)" in report.render_text(data)


@pytest.mark.postgres
@pytest.mark.skipif(connection.vendor != "postgresql",
                    reason="runs in the PostgreSQL pass of .ci/run (PostgreSQL session settings)")
@pytest.mark.django_db
def test_the_report_restores_the_callers_postgres_settings():
    record_saves(3, duration_ms=5.0)

    def settings_now():
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('jit'), current_setting('work_mem')")
            return cursor.fetchone()

    with transaction.atomic():  # the caller's transaction, as in an admin view
        before = settings_now()
        data = report.build_report(since=timezone.now() - dt.timedelta(hours=1))
        after = settings_now()

    assert data["duration_ms"]["all"]["count"] == 3
    assert after == before and before[1] != report.POSTGRES_SESSION["work_mem"]
