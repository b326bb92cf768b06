"""What keeps the changelist quick with millions of rows: a paginator that stops counting at
``COUNT_CAP``, a date hierarchy drawn from two index lookups instead of ``SELECT DISTINCT`` over
dates, and a query string that PostgreSQL can take (no NUL)."""

from __future__ import annotations

import calendar
from functools import cached_property

from django.core.paginator import Paginator
from django.db.models import Max, Min
from django.utils import timezone
from django.utils.http import urlencode

from storage_guard.models import SaveAttempt

COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """Counts at most ``COUNT_CAP + 1`` rows (``SELECT COUNT(*) FROM (... LIMIT n)``)."""

    cap = COUNT_CAP

    @cached_property
    def count(self) -> int:
        counted = self.object_list.order_by()[: self.cap + 1].count()
        self.capped = counted > self.cap
        return min(counted, self.cap)

    capped = False


def date_links(request, field: str) -> dict:
    """Year → month → day links from MIN/MAX(``field``), not from SELECT DISTINCT."""
    params = request.GET.copy()
    year = date_part(params.get(f"{field}__year"), 1, 9999)
    month = date_part(params.get(f"{field}__month"), 1, 12)
    bounds = SaveAttempt.objects.aggregate(first=Min(field), last=Max(field))
    if bounds["first"] is None:
        return {"links": [], "back": None}
    first, last = (timezone.localtime(bounds[b]) for b in ("first", "last"))

    def link(label, **values):
        query = params.copy()
        for part in ("year", "month", "day", "gte", "lt"):
            query.pop(f"{field}__{part}", None)
        query.pop("p", None)
        for part, value in values.items():
            query[f"{field}__{part}"] = str(value)
        return {"label": label, "query": "?" + urlencode(sorted(query.lists()), doseq=True)}

    if year and month:
        days = calendar.monthrange(year, month)[1]
        return {"back": link(f"\u2039 {year}", year=year),
                "links": [link(f"{calendar.month_abbr[month]} {day}", year=year,
                               month=month, day=day) for day in range(1, days + 1)]}
    if year:
        return {"back": link("\u2039 All dates"),
                "links": [link(f"{calendar.month_name[m]} {year}", year=year, month=m)
                          for m in range(1, 13)
                          if (first.year, first.month) <= (year, m) <= (last.year, last.month)]}
    return {"back": None,
            "links": [link(str(y), year=y) for y in range(first.year, last.year + 1)]}


def date_part(value: str | None, low: int, high: int) -> int | None:
    """A year/month drill-down parameter as a number in ``[low, high]``, else None (ignored)."""
    if value and value.isascii() and value.isdigit() and low <= int(value) <= high:
        return int(value)
    return None


def drop_nul_from_query(request) -> None:
    """PostgreSQL text cannot hold NUL: a ``?q=%00`` (or any filter) would raise DataError."""
    if any("\x00" in key or "\x00" in "".join(values) for key, values in request.GET.lists()):
        query = request.GET.copy()
        for key in list(query):
            values = [value.replace("\x00", "") for value in query.getlist(key)]
            del query[key]
            query.setlist(key.replace("\x00", ""), values)
        query._mutable = False
        request.GET = query
