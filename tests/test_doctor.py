"""storage_guard_doctor against SeaweedFS: healthy, in an outage, and with a missing bucket."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from storage_guard.operations import doctor

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[1]


def test_a_healthy_storage_passes_every_step_and_leaves_nothing_behind(
        guarded_storage_factory, s3, bucket):
    report = doctor.examine_storage("default", guarded_storage_factory())

    assert report.ok, report.problems
    assert [(s.name, s.ok) for s in report.steps] == [
        ("breaker cache", True), ("record database", True), ("put canary", True),
        ("read canary", True), ("delete canary", True)]
    assert all(s.duration_ms >= 0 for s in report.steps)
    assert report.clock_skew_seconds is not None and abs(report.clock_skew_seconds) < 5
    assert report.settings["connect_timeout"] == 1.0 and report.settings["max_attempts"] == 4
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=doctor.CANARY_PREFIX)
    assert listed.get("KeyCount", 0) == 0
    # The local-memory breaker cache of the test settings is called out.
    assert any("local-memory cache" in w for w in report.warnings)


def test_an_outage_is_explained_in_plain_words(guarded_storage_factory, fault_proxy):
    with fault_proxy.outage_window(action="reset"):
        report = doctor.examine_storage("default", guarded_storage_factory())

    assert not report.ok
    [problem] = report.problems
    assert problem.startswith("writing a test object failed: could not talk to "
                              f"{fault_proxy.endpoint_url}")
    assert "is endpoint_url right and the server up?" in problem
    put = next(s for s in report.steps if s.name == "put canary")
    assert not put.ok and put.code == "ConnectionClosed"
    assert fault_proxy.counts["PUT"] == 1  # one request per step: no retries in the doctor


def test_a_stalled_endpoint_reports_the_timeouts(guarded_storage_factory, fault_proxy):
    fault_proxy.configure(stall_seconds=5)
    with fault_proxy.outage_window(action="stall"):
        report = doctor.examine_storage("default", guarded_storage_factory(read_timeout=0.5))
    [problem] = report.problems
    assert "no answer from" in problem and "read_timeout=0.5s" in problem


def test_a_missing_bucket_is_named(guarded_storage_factory):
    report = doctor.examine_storage(
        "default", guarded_storage_factory(bucket_name="sg-no-such-bucket"))
    [problem] = report.problems
    assert "bucket 'sg-no-such-bucket' does not exist at" in problem
    assert "fix bucket_name in STORAGES['default']['OPTIONS']" in problem


def test_the_command_prints_steps_and_settings():
    out = StringIO()
    call_command("storage_guard_doctor", stdout=out)
    text = out.getvalue()
    assert f"storage 'default': {settings.STORAGES['default']['OPTIONS']['endpoint_url']}" in text
    assert "— OK" in text
    for step in ("put canary", "read canary", "delete canary"):
        assert f"[ok ] {step}" in text
    assert "timeouts: connect 1.0s, read 2.0s; retries: 4 attempts within 10.0s" in text
    assert "clock skew against the server:" in text


def test_the_command_exits_1_on_problems():
    broken = {**settings.STORAGES, "default": {
        **settings.STORAGES["default"],
        "OPTIONS": {**settings.STORAGES["default"]["OPTIONS"], "bucket_name": "sg-missing-bkt"}}}
    out = StringIO()
    with override_settings(STORAGES=broken), pytest.raises(CommandError) as caught:
        call_command("storage_guard_doctor", "--json", stdout=out)
    assert caught.value.returncode == 1
    import json

    report = json.loads(out.getvalue())
    assert report["ok"] is False
    assert "does not exist" in report["storages"][0]["problems"][0]


def test_an_unknown_alias_is_a_usage_error():
    done = subprocess.run(
        [sys.executable, "-m", "django", "storage_guard_doctor", "--storage", "nope",
         "--settings", "tests.settings"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--storage 'nope' is not a GuardedS3Storage alias" in done.stderr
    assert "guarded: default" in done.stderr
