"""The numbers behind ``manage.py storage_guard_report``, as plain data (``docs/report.md``).

Everything is aggregated in the database: a handful of queries whatever the number of rows,
``percentile_cont`` on PostgreSQL and an ``ORDER BY … LIMIT 2 OFFSET k`` interpolation
elsewhere. ``build_report`` returns dicts, lists, numbers and ISO strings only, ready for
``json.dumps``; ``render_text`` turns that into aligned tables for people.

The heart is ``same_data``: for each key with a save that did not arrive (failed, deferred,
recovered or abandoned), was there a later successful save of the *same content* (equal SHA-256
and size, or the row itself recovered by a retry)? Then the failure was intermittent, on the
network or S3 side. Only later successes with *different* content? Then the user changed the
data between the failure and the success. Neither? The key is still unresolved.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re

from django.db import connections, transaction
from django.db.models import Count, Exists, Max, Min, OuterRef, Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from storage_guard import clock, conf
from storage_guard.models import SaveAttempt, Status
from storage_guard.operations import circuits
from storage_guard.operations.durations import is_age, parse_age
from storage_guard.saving.classification import describe
from storage_guard.saving.telemetry import cut_key

PERCENTILES = (0.5, 0.95, 0.99)
DEFAULT_SINCE = "24h"
MAX_SINCE = dt.timedelta(days=3650)
DEFAULT_TOP = 10
MAX_TOP = 100

DID_NOT_ARRIVE = (Status.FAILED, Status.DEFERRED, Status.RECOVERED, Status.ABANDONED)
ARRIVED_LATER = (Status.SUCCEEDED, Status.RECOVERED)
FAILURE_STATUSES = (*DID_NOT_ARRIVE, Status.REJECTED)
# Percentiles per outcome besides "all" (first tries are most of "all", so not repeated).
DURATION_GROUPS = {
    "retried": (Q(status=Status.SUCCEEDED, attempts__gt=1),
                "status = 'succeeded' AND attempts > 1"),
    "failed": (Q(status__in=DID_NOT_ARRIVE),
               "status IN ('failed', 'deferred', 'recovered', 'abandoned')"),
}


# ---------------------------------------------------------------------- arguments
def parse_since(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """``24h``, ``30m``, ``7d``, ``2w``, ``90s`` ago, or an ISO date / date-time."""
    now = now or timezone.now()
    if is_age(text):
        delta = parse_age(text)
        if not dt.timedelta(0) < delta <= MAX_SINCE:
            raise ValueError(f"--since {text!r} is out of range: give more than 0 and at most "
                             f"{MAX_SINCE.days}d")
        return now - delta
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r} is not understood: give a duration such as 90s, "
                         f"30m, 24h, 7d or 2w (at most {MAX_SINCE.days}d), or an ISO date such "
                         f"as 2024-05-01 or 2024-05-01T12:00") from None
    if timezone.is_naive(when):
        when = timezone.make_aware(when, dt.UTC)
    if when > now:
        raise ValueError(f"--since {text!r} is in the future (now is {now.isoformat()})")
    return when


def check_top(top: int) -> int:
    if not 1 <= top <= MAX_TOP:
        raise ValueError(f"--top must be between 1 and {MAX_TOP}, not {top}")
    return top


# ---------------------------------------------------------------------- the report
def build_report(*, since: dt.datetime, until: dt.datetime | None = None,
                 storage: str | None = None, top: int = DEFAULT_TOP,
                 using: str | None = None) -> dict:
    """Every section of the report for saves made in ``[since, until)``."""
    until = until or timezone.now()
    using = using or conf.get("DATABASE_ALIAS")
    check_top(top)
    with _report_session(using):
        return _build(since, until, storage, top, using)


# Settings for the report's own transaction on PostgreSQL: JIT compilation costs about 1 s on
# a million rows and gains nothing on single-pass aggregates; sorts for the percentiles and the
# per-key grouping stay in memory instead of spilling to disk.
POSTGRES_SESSION = {"jit": "off", "work_mem": "64MB"}


@contextlib.contextmanager
def _report_session(using: str):
    """The report's queries in one transaction, with ``POSTGRES_SESSION`` on PostgreSQL."""
    connection = connections[using]
    with transaction.atomic(using=using):
        if connection.vendor != "postgresql":
            yield
            return
        previous = {}
        with connection.cursor() as cursor:
            for name, value in POSTGRES_SESSION.items():
                cursor.execute("SELECT current_setting(%s), set_config(%s, %s, true)",
                               [name, name, value])
                previous[name] = cursor.fetchone()[0]
        yield
        with connection.cursor() as cursor:  # matters only inside a caller's transaction
            for name, value in previous.items():
                cursor.execute("SELECT set_config(%s, %s, true)", [name, value])


def _build(since, until, storage, top, using) -> dict:
    rows = _window(since, until, storage, using)
    counts = _counts(rows)
    return {
        "window": {"since": since.isoformat(), "until": until.isoformat(), "storage": storage,
                   "database": using},
        "saves": counts["saves"],
        "by_status": counts["by_status"],
        "rates": _rates(counts),
        "duration_ms": _durations(rows, since, until, storage, using),
        "errors": _errors(counts["final_errors"], since, until, storage, using),
        "largest_failed_keys": _largest_failed_keys(rows, top),
        "largest_failed_payloads": _largest_failed_payloads(rows, top),
        "same_data": _same_data(rows, top, using),
        "circuits": _circuits(storage),
    }


def _circuits(storage) -> list[dict]:
    """The breakers now (not over the window): state, failures, opened at, next probe."""
    shown = []
    for snap in circuits.snapshots():
        if storage is None or snap.name in _breaker_names(storage):
            shown.append({"name": snap.name, "state": snap.state, "failures": snap.failures,
                          "opened_at": (dt.datetime.fromtimestamp(snap.opened_at, dt.UTC)
                                        .isoformat() if snap.opened_at else None),
                          "next_probe_in": snap.next_probe_in,
                          "text": circuits.describe(snap)})
    return shown


def _breaker_names(alias: str) -> set[str]:
    from django.core.files.storage import storages

    try:
        return {storages[alias].breaker.name}
    except Exception:  # noqa: BLE001 - not a guarded storage (or gone): no circuit to show
        return set()


def _window(since, until, storage, using):
    rows = SaveAttempt.objects.using(using).filter(
        created_at__gte=since, created_at__lt=until, operation="save")
    return rows.filter(storage_alias=storage) if storage is not None else rows


def _counts(rows) -> dict:
    """Saves by status, first tries, retries and final errors: one grouped scan of the window."""
    groups = (rows.order_by().values("status", "error_code")
              .annotate(n=Count("id"), first_try=Count("id", filter=Q(attempts=1)),
                        retried=Count("id", filter=Q(attempts__gt=1)),
                        transient_n=Count("id", filter=Q(transient=True)),
                        category=Max("error_category")))
    counts = {"saves": 0, "first_try": 0, "retried": 0, "retried_ok": 0,
              "by_status": {status: 0 for status in Status.values}, "final_errors": {}}
    for group in groups:
        counts["saves"] += group["n"]
        counts["by_status"][group["status"]] = (
            counts["by_status"].get(group["status"], 0) + group["n"])
        counts["retried"] += group["retried"]
        if group["status"] == Status.SUCCEEDED:
            counts["first_try"] += group["first_try"]
            counts["retried_ok"] += group["retried"]
        if group["error_code"]:
            final = counts["final_errors"].setdefault(
                group["error_code"], {"n": 0, "transient_n": 0, "category": ""})
            final["n"] += group["n"]
            final["transient_n"] += group["transient_n"]
            final["category"] = max(final["category"], group["category"] or "")
    return counts


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _rates(counts: dict) -> dict:
    saves, status = counts["saves"], counts["by_status"]
    return {
        "success": _share(status[Status.SUCCEEDED], saves),
        "first_try_success": _share(counts["first_try"], saves),
        "retry": _share(counts["retried"], saves),
        "success_after_retry": _share(counts["retried_ok"], counts["retried"]),
        "eventual_success": _share(status[Status.SUCCEEDED] + status[Status.RECOVERED], saves),
    }


# ---------------------------------------------------------------------- durations
def _durations(rows, since, until, storage, using) -> dict:
    """p50/p95/p99 of the whole save (all attempts and pauses) per outcome; rejected excluded."""
    if connections[using].vendor == "postgresql":
        return _durations_postgres(since, until, storage, using)
    sent = rows.exclude(status=Status.REJECTED)
    result = {"all": _percentiles_portable(sent)}
    for group, (condition, _sql) in DURATION_GROUPS.items():
        result[group] = _percentiles_portable(sent.filter(condition))
    return result


def _durations_postgres(since, until, storage, using) -> dict:
    """One scan; each ``percentile_cont`` sorts only its own (FILTERed) rows."""
    where, params = _where_sql(since, until, storage, using)
    table = SaveAttempt._meta.db_table
    aggregate = "percentile_cont(%s::float8[]) WITHIN GROUP (ORDER BY duration_ms)"
    columns = [f"COUNT(*), {aggregate}"]
    for _condition, sql in DURATION_GROUPS.values():
        columns.append(f"COUNT(*) FILTER (WHERE {sql}), {aggregate} FILTER (WHERE {sql})")
    sql = (f"SELECT {', '.join(columns)} FROM {table} "  # table name from the model
           f"WHERE {where} AND status <> 'rejected'")
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [list(PERCENTILES)] * (1 + len(DURATION_GROUPS)) + params)
        values = cursor.fetchone()
    result = {}
    for index, name in enumerate(("all", *DURATION_GROUPS)):
        count, cuts = values[2 * index], values[2 * index + 1]
        result[name] = _percentile_dict(count, cuts) if count else _no_percentiles()
    return result


def _no_percentiles() -> dict:
    return {"count": 0, **{_label(p): None for p in PERCENTILES}}


def _label(p: float) -> str:
    return f"p{round(p * 100)}"


def _percentile_dict(count: int, values) -> dict:
    return {"count": count, **{_label(p): None if v is None else round(v, 2)
                               for p, v in zip(PERCENTILES, values, strict=True)}}


def _percentiles_portable(rows) -> dict:
    """``percentile_cont`` semantics (linear interpolation) with two rows read per percentile."""
    count = rows.count()
    if not count:
        return _no_percentiles()
    ordered = rows.order_by("duration_ms").values_list("duration_ms", flat=True)
    values = []
    for p in PERCENTILES:
        position = p * (count - 1)
        low = math.floor(position)
        pair = list(ordered[low:low + 2])
        upper = pair[1] if len(pair) > 1 else pair[0]
        values.append(pair[0] + (upper - pair[0]) * (position - low))
    return _percentile_dict(count, values)


# ---------------------------------------------------------------------- errors
def _where_sql(since, until, storage, using) -> tuple[str, list]:
    ops = connections[using].ops
    where = "created_at >= %s AND created_at < %s AND operation = 'save'"
    params = [ops.adapt_datetimefield_value(since), ops.adapt_datetimefield_value(until)]
    if storage is not None:
        where += " AND storage_alias = %s"
        params.append(storage)
    return where, params


def _attempt_errors(since, until, storage, using) -> dict[str, tuple[int, int]]:
    """code -> (failed attempts, saves affected), from every row's ``attempt_log``."""
    connection = connections[using]
    where, params = _where_sql(since, until, storage, using)
    where = " AND ".join(f"s.{part.strip()}" for part in where.split(" AND "))
    table = SaveAttempt._meta.db_table
    if connection.vendor == "postgresql":
        source = f"{table} s CROSS JOIN LATERAL jsonb_array_elements(s.attempt_log) e"
        code = "e->>'code'"
    else:  # SQLite's JSON1 (MariaDB/MySQL are not supported by this report)
        source = f"{table} s, json_each(s.attempt_log) e"
        code = "json_extract(e.value, '$.code')"
    sql = (f"SELECT {code} AS code, COUNT(*), COUNT(DISTINCT s.id) FROM {source} "
           f"WHERE {where} AND (s.attempts > 1 OR s.error_code <> '') AND {code} <> 'OK' "
           f"GROUP BY {code}")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {code: (attempts, saves) for code, attempts, saves in cursor.fetchall()}


def _errors(final: dict[str, dict], since, until, storage, using) -> list[dict]:
    """One line per error code: every failed attempt, and the saves that ended on it."""
    attempts = _attempt_errors(since, until, storage, using)
    total_attempts = sum(n for n, _ in attempts.values())
    total_final = sum(entry["n"] for entry in final.values())
    lines = []
    for code in set(final) | set(attempts):
        failed_attempts, saves_affected = attempts.get(code, (0, 0))
        entry = final.get(code)
        transient, category = describe_code(code, entry)
        final_n = entry["n"] if entry else 0
        lines.append({"code": code, "transient": transient, "category": category,
                      "failed_attempts": failed_attempts,
                      "attempt_share": _share(failed_attempts, total_attempts),
                      "saves_affected": max(saves_affected, final_n),
                      "final_failures": final_n, "final_share": _share(final_n, total_final)})
    lines.sort(key=lambda line: (-line["failed_attempts"], -line["final_failures"],
                                 line["code"]))
    return lines


def describe_code(code: str, entry: dict | None = None) -> tuple[bool | None, str]:
    """(transient, category) from the classification table, else from the stored rows."""
    known = describe(code)
    if known is not None:
        return known
    if entry:
        return entry["transient_n"] * 2 > entry["n"], entry["category"] or "unknown"
    return None, "unknown"


# ---------------------------------------------------------------------- largest failures
def _largest_failed_keys(rows, top: int) -> list[dict]:
    failed = rows.filter(status__in=FAILURE_STATUSES)
    keys = list(failed.order_by().values("key_digest")
                .annotate(key=Min("key"), key_bytes=Max("key_bytes"), failures=Count("id"))
                .order_by("-key_bytes", "key_digest")[:top])
    codes = _codes_by_digest(failed, [k["key_digest"] for k in keys])
    return [{"key": k["key"], "key_bytes": k["key_bytes"], "failures": k["failures"],
             "codes": codes.get(k["key_digest"], {})} for k in keys]


def _largest_failed_payloads(rows, top: int) -> list[dict]:
    failed = (rows.filter(status__in=FAILURE_STATUSES, size__isnull=False)
              .order_by("-size", "-id")[:top])
    return [{"id": r["id"], "key": r["key"], "size": r["size"], "status": r["status"],
             "error_code": r["error_code"], "content_type": r["content_type"],
             "created_at": r["created_at"].isoformat()}
            for r in failed.values("id", "key", "size", "status", "error_code",
                                   "content_type", "created_at")]


def _codes_by_digest(rows, digests: list[str]) -> dict[str, dict[str, int]]:
    codes: dict[str, dict[str, int]] = {}
    if not digests:
        return codes
    for entry in (rows.filter(key_digest__in=digests).order_by()
                  .values("key_digest", "error_code").annotate(n=Count("id"))):
        codes.setdefault(entry["key_digest"], {})[entry["error_code"]] = entry["n"]
    return codes


# ---------------------------------------------------------------------- same data, other outcome
def _same_data(rows, top: int, using: str) -> dict:
    failures = rows.filter(status__in=DID_NOT_ARRIVE)
    later = SaveAttempt.objects.using(using).filter(
        key_digest=OuterRef("key_digest"), storage_alias=OuterRef("storage_alias"),
        bucket=OuterRef("bucket"), created_at__gt=OuterRef("created_at"),
        status__in=ARRIVED_LATER)
    same = later.filter(sha256=OuterRef("sha256"), size=OuterRef("size"))
    changed = later.exclude(sha256=OuterRef("sha256"), size=OuterRef("size"))
    per_key = list(
        failures.annotate(same_later=Exists(same), changed_later=Exists(changed))
        .order_by().values("key_digest")
        .annotate(failures=Count("id"),
                  same=Count("id", filter=Q(same_later=True) | Q(status=Status.RECOVERED)),
                  changed=Count("id", filter=Q(changed_later=True)),
                  last_failure=Max("created_at")))
    groups: dict[str, list[dict]] = {"intermittent": [], "changed_data": [], "unresolved": []}
    for entry in per_key:
        verdict = ("intermittent" if entry["same"] else
                   "changed_data" if entry["changed"] else "unresolved")
        groups[verdict].append(entry)
    result = {"keys_with_failures": len(per_key)}
    for verdict, entries in groups.items():
        entries.sort(key=lambda e: (-e["failures"], -e["last_failure"].timestamp(),
                                    e["key_digest"]))
        shown = entries[:top]
        details = _key_details(failures, [e["key_digest"] for e in shown])
        result[verdict] = {
            "keys": len(entries),
            "failures": sum(e["failures"] for e in entries),
            "top": [{"key": details[e["key_digest"]]["key"], "failures": e["failures"],
                     "codes": details[e["key_digest"]]["codes"],
                     "first_failure": details[e["key_digest"]]["first_failure"],
                     "last_failure": e["last_failure"].isoformat()} for e in shown]}
    return result


def _key_details(failures, digests: list[str]) -> dict[str, dict]:
    """Key, error codes and first failure of a few keys (the grouped scan leaves them out)."""
    details: dict[str, dict] = {}
    for entry in (failures.filter(key_digest__in=digests).order_by()
                  .values("key_digest", "error_code")
                  .annotate(n=Count("id"), key=Min("key"), first=Min("created_at"))):
        found = details.setdefault(entry["key_digest"], {
            "key": entry["key"], "codes": {}, "first_failure": entry["first"]})
        found["codes"][entry["error_code"]] = entry["n"]
        found["first_failure"] = min(found["first_failure"], entry["first"])
    for found in details.values():
        found["first_failure"] = found["first_failure"].isoformat()
    return details


# ---------------------------------------------------------------------- text
KEY_CHARS = 80
_NUMBER = re.compile(r"^(-|-?[\d.]+%?)$")


def render_text(report: dict) -> str:
    """Aligned tables for people: the same data as the JSON, in the same order."""
    window = report["window"]
    parts = [_("storage_guard report: saves from %(since)s to %(until)s, storage %(storage)s")
             % {"since": clock.when(window["since"]), "until": clock.when(window["until"]),
                "storage": window["storage"] or _("(all)")}]
    parts += [item["text"] for item in report.get("circuits", [])]
    parts += [""]
    parts += _table([_("measure"), _("value")], _summary_rows(report))
    parts += ["", _("Saves by status")]
    parts += _table([_("status"), _("saves")],
                    [[_status(k), v] for k, v in report["by_status"].items()])
    parts += ["", _("Duration of a save in ms (all attempts and pauses)")]
    parts += _table([_("outcome"), _("saves"), "p50", "p95", "p99"],
                    [[_duration_label(name), d["count"], d["p50"], d["p95"], d["p99"]]
                     for name, d in report["duration_ms"].items()])
    parts += ["", _("Errors by code (every failed attempt; final = the save ended on it)")]
    parts += _table([_("code"), _("transient"), _("category"), _("attempts"), _("share"),
                     _("saves"), _("final"), _("final share")],
                    [[e["code"], _yes_no(e["transient"]), e["category"], e["failed_attempts"],
                      _pct(e["attempt_share"]), e["saves_affected"], e["final_failures"],
                      _pct(e["final_share"])] for e in report["errors"]])
    parts += ["", _("Largest keys among failures")]
    parts += _table([_("key bytes"), _("failures"), _("codes"), _("key")],
                    [[k["key_bytes"], k["failures"], _codes(k["codes"]), _key(k["key"])]
                     for k in report["largest_failed_keys"]])
    parts += ["", _("Largest payloads among failures")]
    parts += _table([_("bytes"), _("status"), _("code"), "id", _("key")],
                    [[p["size"], _status(p["status"]), p["error_code"], p["id"], _key(p["key"])]
                     for p in report["largest_failed_payloads"]])
    parts += ["", *_same_data_text(report["same_data"])]
    return "\n".join(parts) + "\n"


def _summary_rows(report: dict) -> list[list]:
    rates = report["rates"]
    return [[_("saves"), report["saves"]],
            [_("succeeded in the request (first try)"),
             f"{_pct(rates['success'])} ({_pct(rates['first_try_success'])})"],
            [_("retry rate"), _pct(rates["retry"])],
            [_("success after a retry"), _pct(rates["success_after_retry"])],
            [_("eventual success (recovered too)"), _pct(rates["eventual_success"])]]


DURATION_LABELS = {"all": gettext_noop("all sent"),
                   "retried": gettext_noop("succeeded after a retry"),
                   "failed": gettext_noop("did not arrive")}
SAME_DATA_TITLES = {
    "intermittent": gettext_noop("Same data, different outcome: identical content failed, "
                                 "later succeeded (intermittent: network or S3 side)"),
    "changed_data": gettext_noop("Content changed between the failure and the success (the "
                                 "user's data changed)"),
    "unresolved": gettext_noop("No later success yet"),
}


def _duration_label(name: str) -> str:
    return _(DURATION_LABELS[name]) if name in DURATION_LABELS else name


def _status(value: str) -> str:
    """A status by its (translated) label; unknown values as they are."""
    return str(Status(value).label) if value in Status.values else value


def _same_data_text(same: dict) -> list[str]:
    lines = [_("Keys with a save that did not arrive: %(n)d") % {"n": same["keys_with_failures"]}]
    for verdict, title in SAME_DATA_TITLES.items():
        group = same[verdict]
        lines += ["", _("%(title)s: %(keys)d key(s), %(failures)d failure(s)") % {
            "title": _(title), "keys": group["keys"], "failures": group["failures"]}]
        lines += _table([_("failures"), _("codes"), _("last failure"), _("key")],
                        [[e["failures"], _codes(e["codes"]), clock.when(e["last_failure"]),
                          _key(e["key"])] for e in group["top"]])
    return lines


def _table(headers: list[str], rows: list[list]) -> list[str]:
    if not rows:
        return ["  " + _("(none)")]
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = [all(_NUMBER.match(row[i]) for row in cells) for i in range(len(headers))]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]

    def line(values):
        padded = [v.rjust(w) if num else v.ljust(w)
                  for v, w, num in zip(values, widths, numeric, strict=True)]
        return ("  " + "  ".join(padded)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(row) for row in cells)]


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.2f}%"


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else (_("yes") if value else _("no"))


def _codes(codes: dict[str, int]) -> str:
    return ", ".join(f"{code or '-'} x{n}" for code, n in sorted(codes.items(),
                                                               key=lambda kv: -kv[1]))


def _key(key: str) -> str:
    return cut_key(key, KEY_CHARS)
