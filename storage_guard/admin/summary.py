"""The numbers of the admin's summary page: per window, counts by status, failures by error
code, and failures per hour as a time axis; every number and bar carries the link to the
changelist filtered to exactly the rows it counts.

A handful of grouped queries per window (status and error code, error code, hour), whatever the
row count; the counts and rates are ``operations.stats``'s, the same as the report's.
The charts are drawn by the template as inline SVG from the coordinates computed here.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count
from django.db.models.functions import TruncHour
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _

from storage_guard import clock
from storage_guard.models import UNRESOLVED, SaveAttempt, Status
from storage_guard.operations.stats import outcome_counts

CHART_WIDTH = 720  # px of the hourly chart's plot area
CHART_HEIGHT = 120
CODE_BAR_WIDTH = 360


def failure_statuses() -> list[str]:
    """Every status but ``succeeded``: the saves that did not arrive within the request."""
    return [status for status in Status.values if status != Status.SUCCEEDED]


def changelist_link(since, until=None, **filters) -> str:
    """The changelist filtered to ``[since, until)`` and ``filters`` (Django's own lookups)."""
    params = {"created_at__gte": since.isoformat()}
    if until is not None:
        params["created_at__lt"] = until.isoformat()
    for lookup, value in filters.items():
        params[lookup] = ",".join(value) if isinstance(value, list | tuple) else value
    return reverse("admin:storage_guard_saveattempt_changelist") + "?" + urlencode(params)


def window_stats(label: str, since, now=None) -> dict:
    """Counts for the summary page: one GROUP BY status and error code (``operations.stats``,
    as in the report), one GROUP BY error code for the bars, one by hour."""
    now = now or timezone.now()
    qs = SaveAttempt.objects.filter(created_at__gte=since)
    counts = outcome_counts(qs)
    rates = counts.rates()
    return {
        "label": label, "total": counts.saves,
        "by_status": {status: n for status, n in counts.by_status.items() if n},
        "succeeded": counts.succeeded, "recovered": counts.recovered,
        "unresolved": counts.unresolved,
        "success_rate": rates["success"].percent() or "—",
        "delivered_rate": rates["eventual_success"].percent() or "—",
        "retried_saves": counts.retried,
        "extra_attempts": counts.extra_attempts,
        "links": {
            "total": changelist_link(since),
            "succeeded": changelist_link(since, status__exact=Status.SUCCEEDED),
            "delivered": changelist_link(since, status__in=[Status.SUCCEEDED, Status.RECOVERED]),
            "retried": changelist_link(since, attempts__gt="1"),
            "unresolved": changelist_link(since, status__in=list(UNRESOLVED)),
            "recovered": changelist_link(since, status__exact=Status.RECOVERED),
        },
        **code_chart(qs, since),
        **hourly_chart(qs, since, now),
    }


def code_chart(qs, since) -> dict:
    codes = list(qs.exclude(error_code="").order_by().values("error_code")
                 .annotate(n=Count("pk")).order_by("-n", "error_code")[:12])
    biggest = max((row["n"] for row in codes), default=1)
    bars = [{"code": row["error_code"], "n": row["n"], "y": 8 + index * 26,
             "width": max(2, round(CODE_BAR_WIDTH * row["n"] / biggest)),
             "url": changelist_link(since, error_code=row["error_code"])}
            for index, row in enumerate(codes)]
    return {"bars": bars, "chart_height": 16 + 26 * len(bars)}


def hourly_chart(qs, since, now) -> dict:
    """Failures (saves that did not succeed in the request) per hour of the window."""
    counts = {timezone.localtime(row["hour"]).replace(minute=0, second=0, microsecond=0):
              row["n"] for row in
              qs.filter(status__in=failure_statuses()).order_by()
              .annotate(hour=TruncHour("created_at")).values("hour").annotate(n=Count("pk"))}
    first = timezone.localtime(since).replace(minute=0, second=0, microsecond=0)
    hours = []
    moment = first
    while moment <= now:
        hours.append(moment)
        moment = timezone.localtime(moment + timedelta(hours=1))
    peak = max(counts.values(), default=0)
    step = CHART_WIDTH / max(len(hours), 1)
    label_every = 6 if len(hours) <= 48 else 24
    bars, ticks = [], []
    for index, hour in enumerate(hours):
        n = counts.get(hour, 0)
        x = round(index * step, 1)
        if n:
            height = max(2, round(CHART_HEIGHT * n / peak))
            bars.append({
                "n": n, "x": x, "y": CHART_HEIGHT - height, "width": max(round(step - 1, 1), 1),
                "height": height, "url": changelist_link(
                    hour, hour + timedelta(hours=1), status__in=failure_statuses()),
                "title": _("%(start)s to %(end)s: %(n)d failed") % {
                    "start": clock.when(hour), "end": clock.when(hour + timedelta(hours=1),
                                                                  clock.TIME_FORMAT), "n": n}})
        if hour.hour % label_every == 0:
            ticks.append({"x": x, "label": clock.when(hour, "H:i" if label_every == 6
                                                      else "M j")})
    return {"hourly": {"bars": bars, "ticks": ticks, "peak": peak, "width": CHART_WIDTH,
                       "height": CHART_HEIGHT, "first": clock.when(first),
                       "last": clock.when(now), "failures": sum(counts.values()),
                       "url": changelist_link(since, status__in=failure_statuses())}}
