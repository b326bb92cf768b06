"""The report's queries, per database vendor where it matters: ``percentile_cont`` and
``jsonb_array_elements`` on PostgreSQL, an ``ORDER BY … LIMIT 2 OFFSET k`` interpolation and
SQLite's ``json_each`` elsewhere. Each section is a handful of aggregated queries whatever the
number of rows; each returns plain data (dicts, lists, numbers, ISO strings).

The heart is ``same_data``: for each key with a save that did not arrive (failed, deferred,
recovered or abandoned), was there a later successful save of the *same content* (equal SHA-256
and size, or the row itself recovered by a retry)? Then the failure was intermittent, on the
network or S3 side. Only later successes with *different* content? Then the user changed the
data between the failure and the success. Neither? The key is still unresolved.
"""

from __future__ import annotations

import math

from django.db import connections
from django.db.models import Count, Exists, Max, Min, OuterRef, Q

from storage_guard.models import SaveAttempt, Status
from storage_guard.operations.stats import Share
from storage_guard.saving.classification import describe

PERCENTILES = (0.5, 0.95, 0.99)
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


def window(since, until, storage, using):
    rows = SaveAttempt.objects.using(using).filter(
        created_at__gte=since, created_at__lt=until, operation="save")
    return rows.filter(storage_alias=storage) if storage is not None else rows


# ---------------------------------------------------------------------- durations
def durations(rows, since, until, storage, using) -> dict:
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


def errors(final: dict[str, dict], since, until, storage, using) -> list[dict]:
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
                      "attempt_share": Share(failed_attempts, total_attempts).fraction(),
                      "saves_affected": max(saves_affected, final_n),
                      "final_failures": final_n,
                      "final_share": Share(final_n, total_final).fraction()})
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
def largest_failed_keys(rows, top: int) -> list[dict]:
    failed = rows.filter(status__in=FAILURE_STATUSES)
    keys = list(failed.order_by().values("key_digest")
                .annotate(key=Min("key"), key_bytes=Max("key_bytes"), failures=Count("id"))
                .order_by("-key_bytes", "key_digest")[:top])
    codes = _codes_by_digest(failed, [k["key_digest"] for k in keys])
    return [{"key": k["key"], "key_bytes": k["key_bytes"], "failures": k["failures"],
             "codes": codes.get(k["key_digest"], {})} for k in keys]


def largest_failed_payloads(rows, top: int) -> list[dict]:
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
def same_data(rows, top: int, using: str) -> dict:
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
