"""Checking every guarded storage end to end, and saying in plain words what is wrong.

For each alias in ``settings.STORAGES`` whose backend is a ``GuardedS3Storage``: the effective
settings (timeouts, retries, breaker, stash), the breaker's shared cache and the record
database, then a canary object is put, read back and deleted with one request each (no
retries, so the timings are the endpoint's own), and the server's ``Date`` header is compared
with this machine's clock (S3 refuses signatures more than 15 minutes off).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from django.conf import settings
from django.core.cache import caches
from django.core.files.storage import storages
from django.db import connections
from django.utils.translation import gettext as _

from storage_guard import conf
from storage_guard.models import SaveAttempt
from storage_guard.operations import circuits
from storage_guard.saving.classification import Classification, classify
from storage_guard.saving.records import record_alias
from storage_guard.storage import guarded_aliases

CANARY_PREFIX = "storage_guard/doctor"
SKEW_WARN_SECONDS = 60.0
SKEW_FAIL_SECONDS = 15 * 60.0  # S3's RequestTimeTooSkewed limit


@dataclass
class Step:
    name: str
    ok: bool
    duration_ms: float = 0.0
    code: str = ""
    detail: str = ""


@dataclass
class StorageReport:
    alias: str
    endpoint: str = ""
    bucket: str = ""
    settings: dict = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    clock_skew_seconds: float | None = None
    circuit: str = ""  # the breaker in words (storage_guard.operations.circuits.describe)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class DoctorReport:
    storages: list[StorageReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.storages) and all(s.ok for s in self.storages)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "storages": [{**asdict(s), "ok": s.ok} for s in self.storages]}


def examine(aliases: list[str] | None = None) -> DoctorReport:
    report = DoctorReport()
    for alias in aliases if aliases is not None else guarded_aliases():
        report.storages.append(examine_storage(alias))
    return report


def examine_storage(alias: str, storage=None) -> StorageReport:
    """Examine ``storages[alias]`` (or the given instance, reported under ``alias``)."""
    report = StorageReport(alias)
    try:
        storage = storage if storage is not None else storages[alias]
    except Exception as exc:  # noqa: BLE001 - a broken configuration is what we report
        report.problems.append(f"STORAGES[{alias!r}] cannot be built: {exc}")
        return report
    report.endpoint = storage.endpoint_url or "AWS S3 (default endpoint)"
    report.bucket = storage.bucket_name or ""
    report.settings = effective_settings(storage)
    report.circuit = circuits.describe(storage.breaker.snapshot())
    _check_breaker_cache(storage, report)
    _check_database(report)
    _check_canary(storage, report)
    return report


def effective_settings(storage) -> dict:
    return {
        "preset": storage.preset, **put_timeouts(storage),
        "connect_timeout": storage.connect_timeout, "read_timeout": storage.read_timeout,
        "max_attempts": storage.max_attempts, "retry_deadline": storage.retry_deadline,
        "backoff_base": storage.backoff_base, "backoff_cap": storage.backoff_cap,
        "on_failure": storage.on_failure, "breaker_threshold": storage.breaker_threshold,
        "breaker_cooldown": storage.breaker_cooldown, "breaker_cache": conf.get("BREAKER_CACHE"),
        "breaker_state": _safe(storage.breaker.state),
        "stash_storage": storage.stash_storage, "stash_db_max_bytes": storage.stash_db_max_bytes,
        "record_database": record_alias(), "retry_with_tasks": conf.get("RETRY_WITH_TASKS"),
    }


# Payload sizes whose PUT timeout and deadline the doctor shows.
EXAMPLE_SIZES = {"2 KB": 2 * 1024, "1 MB": 1024 * 1024, "8 MB part": 8 * 1024 * 1024}


def put_timeouts(storage) -> dict:
    """The timeout rule, and what it gives a first try (and the deadline) at a few sizes."""
    from storage_guard.saving.timeouts import AttemptTimeouts

    rule = storage.timeout_rule
    return {
        "put_timeout_floor": rule.floor, "put_timeout_rate": rule.rate,
        "put_timeout_ceiling": rule.ceiling,
        "put_timeout_examples": {label: {
            "timeout": AttemptTimeouts(rule, size).start(1),
            "deadline": round(storage.policy_for(size).deadline, 1)}
            for label, size in EXAMPLE_SIZES.items()},
    }


def _safe(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"unknown ({type(exc).__name__}: {exc})"


def _timed(report: StorageReport, name: str, fn):
    started = time.monotonic()
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - every failure becomes a step and a sentence
        step = Step(name, False, _ms(started), classify(exc).code, str(exc)[:500])
        report.steps.append(step)
        return step, exc
    report.steps.append(Step(name, True, _ms(started)))
    return report.steps[-1], value


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _check_breaker_cache(storage, report: StorageReport) -> None:
    cache_alias = conf.get("BREAKER_CACHE")
    probe = f"storage_guard:doctor:{uuid.uuid4().hex}"

    def round_trip():
        cache = caches[cache_alias]
        cache.set(probe, "1", timeout=30)
        seen = cache.get(probe)
        cache.delete(probe)
        if seen != "1":
            raise OSError("a value written to the cache could not be read back")

    step, _ = _timed(report, "breaker cache", round_trip)
    if not step.ok:
        report.problems.append(
            f"the breaker's cache CACHES[{cache_alias!r}] does not work ({step.detail}): "
            f"without it every process keeps its own breaker")
    elif "locmem" in settings.CACHES.get(cache_alias, {}).get("BACKEND", "").lower():
        report.warnings.append(
            f"CACHES[{cache_alias!r}] is a local-memory cache: each process has its own circuit "
            f"breaker; use Redis or Memcached so a fleet opens and closes it together")
    state = report.settings.get("breaker_state")
    if state == "open":
        report.warnings.append("the circuit breaker is open: saves fail fast until it closes")


def _check_database(report: StorageReport) -> None:
    alias = record_alias()
    step, _ = _timed(report, "record database",
                     lambda: SaveAttempt.objects.using(alias).exists())
    if not step.ok:
        report.problems.append(f"the record database {alias!r} cannot be queried "
                               f"({step.detail}): failed saves could not be recorded")
    elif connections[alias].vendor == "sqlite":
        report.warnings.append("records are on SQLite: one retry worker at a time, and records "
                               "share the caller's transaction")


def _check_canary(storage, report: StorageReport) -> None:
    client, bucket = storage.client, storage.bucket_name
    key = storage._normalize_name(f"{CANARY_PREFIX}/{uuid.uuid4().hex}.txt")
    body = f"storage_guard doctor canary {datetime.now(UTC).isoformat()}".encode()
    step, value = _timed(report, "put canary", lambda: client.put_object(
        Bucket=bucket, Key=key, Body=body, ContentType="text/plain"))
    if not step.ok:
        result = classify(value)
        if result.category == "auth":
            result = _bucket_missing(client, bucket, report) or result
        report.problems.append(explain(result, storage, "writing a test object"))
        return
    _measure_skew(value, report)
    step, value = _timed(report, "read canary", lambda: client.get_object(
        Bucket=bucket, Key=key)["Body"].read())
    if not step.ok:
        report.problems.append(explain(classify(value), storage, "reading the test object"))
    elif value != body:
        step.ok = False
        report.problems.append(f"the test object read back differs from what was written "
                               f"({len(value)} bytes instead of {len(body)})")
    step, value = _timed(report, "delete canary", lambda: client.delete_object(
        Bucket=bucket, Key=key))
    if not step.ok:
        report.problems.append(explain(classify(value), storage, "deleting the test object") +
                               f"; remove {key!r} by hand")


def _bucket_missing(client, bucket: str, report: StorageReport) -> Classification | None:
    """Many S3 servers answer a PUT into a missing bucket with AccessDenied: ask the bucket."""
    step, value = _timed(report, "head bucket", lambda: client.head_bucket(Bucket=bucket))
    if not step.ok and classify(value).code in ("404", "NoSuchBucket", "NotFound"):
        return Classification("NoSuchBucket", False, "client", status=404)
    return None


def _measure_skew(response: dict, report: StorageReport) -> None:
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not date:
        report.warnings.append("the server sent no Date header: clock skew not measured")
        return
    skew = (parsedate_to_datetime(date) - datetime.now(UTC)).total_seconds()
    report.clock_skew_seconds = round(skew, 1)
    if abs(skew) > SKEW_FAIL_SECONDS:
        report.problems.append(f"this machine's clock is {abs(skew):.0f}s "
                               f"{'behind' if skew > 0 else 'ahead of'} the server: S3 refuses "
                               f"requests more than 900s off; fix NTP")
    elif abs(skew) > SKEW_WARN_SECONDS:
        report.warnings.append(f"clock skew of {skew:+.0f}s against the server; check NTP")


def explain(result: Classification, storage, doing: str) -> str:
    """One sentence an operator can act on."""
    where, bucket = storage.endpoint_url or "AWS S3", storage.bucket_name
    alias = getattr(storage, "storage_alias", "") or "?"
    if result.code in ("NoSuchBucket", "404") or (result.code == "NotFound"):
        return (f"{doing} failed: bucket {bucket!r} does not exist at {where}; create it or fix "
                f"bucket_name in STORAGES[{alias!r}]['OPTIONS']")
    if result.code == "RequestTimeTooSkewed":
        return f"{doing} failed: the server says this machine's clock is wrong; fix NTP"
    if result.category == "auth":
        return (f"{doing} failed: {where} refused the credentials ({result.code}); check "
                f"access_key/secret_key and the bucket policy for {bucket!r}")
    if result.category == "timeout":
        return (f"{doing} failed: no answer from {where} in time ({result.code}; "
                f"connect_timeout={storage.connect_timeout}s, "
                f"read_timeout={storage.read_timeout}s); is the server overloaded or "
                f"a firewall dropping packets?")
    if result.category == "network":
        return (f"{doing} failed: could not talk to {where} ({result.code}); is endpoint_url "
                f"right and the server up?")
    if result.category in ("server", "throttled"):
        return (f"{doing} failed: {where} is reachable but answered {result.code} "
                f"({result.message or 'no message'}); the service is failing or throttling")
    return f"{doing} failed: {result.code}: {result.message}"


def _put_timeout_line(cfg: dict) -> str:
    examples = ", ".join(f"{label} {e['timeout']:g}s (deadline {e['deadline']:g}s)"
                         for label, e in cfg["put_timeout_examples"].items())
    return (f"  uploads wait {cfg['put_timeout_floor']:g}s + 1s per "
            f"{cfg['put_timeout_rate'] / 1024:g} KB, at most {cfg['put_timeout_ceiling']:g}s, "
            f"twice as long after a timeout: {examples}")


def as_text(report: DoctorReport) -> list[str]:
    lines = []
    if not report.storages:
        lines.append(_("No GuardedS3Storage found in settings.STORAGES: nothing to check."))
    for s in report.storages:
        lines.append(_("storage %(alias)s: %(endpoint)s bucket %(bucket)s — %(verdict)s") % {
            "alias": repr(s.alias), "endpoint": s.endpoint, "bucket": repr(s.bucket),
            "verdict": _("OK") if s.ok else _("PROBLEMS")})
        if s.settings:
            cfg = s.settings
            lines.append("  " + _(
                "preset %(preset)s: timeouts: connect %(connect_timeout)ss, read "
                "%(read_timeout)ss; retries: %(max_attempts)s attempts within "
                "%(retry_deadline)ss, backoff %(backoff_base)ss..%(backoff_cap)ss; "
                "on_failure %(on_failure)s") % {**cfg, "preset": repr(cfg["preset"])})
            lines.append(_put_timeout_line(cfg))
            lines.append("  " + _(
                "breaker: %(breaker_state)s, opens after %(breaker_threshold)s failures for "
                "%(breaker_cooldown)ss (cache %(cache)s); records on %(records)s; stash storage "
                "%(stash)s above %(stash_db_max_bytes)s bytes") % {
                **cfg, "cache": repr(cfg["breaker_cache"]),
                "records": repr(cfg["record_database"]), "stash": cfg["stash_storage"] or "-"})
        if s.circuit:
            lines.append(f"  {s.circuit}")
        for step in s.steps:
            mark = "ok " if step.ok else "FAIL"
            tail = "" if step.ok else f"  {step.code}"
            lines.append(f"  [{mark}] {step.name:<16} {step.duration_ms:>8.1f} ms{tail}")
        if s.clock_skew_seconds is not None:
            lines.append("  " + _("clock skew against the server: %(skew)ss") % {
                "skew": f"{s.clock_skew_seconds:+.1f}"})
        lines += ["  " + _("problem: %(text)s") % {"text": p} for p in s.problems]
        lines += ["  " + _("warning: %(text)s") % {"text": w} for w in s.warnings]
    return lines
