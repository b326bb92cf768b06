"""``operations.stats``: the counts and rates that the report and the admin summary share."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from storage_guard.admin.summary import window_stats
from storage_guard.models import SaveAttempt, Status, key_digest
from storage_guard.operations import report
from storage_guard.operations.stats import OutcomeCounts, Share, outcome_counts


def rows(n: int, **fields) -> None:
    base = {"storage_alias": "default", "name": "k", "key": "k", "key_digest": key_digest("k"),
            "key_bytes": 1, "size": 10, "sha256": "a" * 64, "status": Status.SUCCEEDED,
            "attempts": 1, **fields}
    SaveAttempt.objects.bulk_create(SaveAttempt(**base) for _ in range(n))


@pytest.fixture
def mixed():
    """7 first tries, 2 retried successes (3 and 2 attempts), 1 recovered after 4 attempts,
    2 failed on SlowDown (one transient), 1 deferred, 1 rejected: 14 saves."""
    rows(7)
    rows(1, attempts=3)
    rows(1, attempts=2)
    rows(1, status=Status.RECOVERED, attempts=4, error_code="InternalError",
         error_category="server", transient=True)
    rows(1, status=Status.FAILED, attempts=2, error_code="SlowDown", error_category="throttle",
         transient=True)
    rows(1, status=Status.FAILED, attempts=1, error_code="SlowDown", error_category="throttle")
    rows(1, status=Status.DEFERRED, attempts=1, error_code="CircuitOpen")
    rows(1, status=Status.REJECTED, attempts=1, error_code="KeyTooLong",
         error_category="validation")


@pytest.mark.django_db
def test_outcome_counts_of_one_grouped_scan(mixed, django_assert_num_queries):
    with django_assert_num_queries(1):
        counts = outcome_counts(SaveAttempt.objects.all())
    assert counts.saves == 14
    assert counts.by_status == {**dict.fromkeys(Status.values, 0), "succeeded": 9,
                                "recovered": 1, "failed": 2, "deferred": 1, "rejected": 1}
    assert (counts.succeeded, counts.recovered, counts.unresolved) == (9, 1, 3)
    assert (counts.first_try, counts.retried, counts.retried_ok) == (7, 4, 2)
    assert counts.retried_attempts == 3 + 2 + 4 + 2 and counts.extra_attempts == 7
    assert counts.final_errors == {
        "InternalError": {"n": 1, "transient_n": 1, "category": "server"},
        "SlowDown": {"n": 2, "transient_n": 1, "category": "throttle"},
        "CircuitOpen": {"n": 1, "transient_n": 0, "category": ""},
        "KeyTooLong": {"n": 1, "transient_n": 0, "category": "validation"},
    }
    rates = counts.rates()
    assert rates == {"success": Share(9, 14), "first_try_success": Share(7, 14),
                     "retry": Share(4, 14), "success_after_retry": Share(2, 4),
                     "eventual_success": Share(10, 14)}


def test_a_share_as_a_fraction_and_as_a_percentage():
    assert Share(2, 3).fraction() == 0.6667 and Share(2, 3).percent() == "66.67"
    assert Share(5, 8).fraction() == 0.625 and Share(5, 8).percent() == "62.50"
    assert Share(0, 0).fraction() is None and Share(0, 0).percent() is None
    assert OutcomeCounts().rates()["success"] == Share(0, 0)


@pytest.mark.django_db
def test_the_admin_summary_and_the_report_give_the_same_numbers(mixed):
    now = timezone.now()
    since = now - dt.timedelta(hours=1)
    window = window_stats("last hour", since, now)
    data = report.build_report(since=since, until=now + dt.timedelta(seconds=1))
    assert window["total"] == data["saves"] == 14
    assert window["success_rate"] == f"{100 * 9 / 14:.2f}" == "64.29"
    assert data["rates"]["success"] == round(9 / 14, 4)
    assert window["delivered_rate"] == "71.43" and data["rates"]["eventual_success"] == 0.7143
    assert window["retried_saves"] == 4 and data["rates"]["retry"] == round(4 / 14, 4)
    assert window["extra_attempts"] == 7
    assert window["by_status"] == {s: n for s, n in data["by_status"].items() if n}
