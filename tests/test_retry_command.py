"""manage.py retry_failed_saves: a thin wrapper over operations.redelivery, with exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.files.storage import storages
from django.core.management import call_command
from django.core.management.base import CommandError

from storage_guard.models import SaveAttempt, Status
from tests.test_replay import read_default, stash_failed_saves

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[1]


class Terminal(StringIO):
    def isatty(self) -> bool:
        return True


def run(*args, stdout=None) -> str:
    out = stdout or StringIO()
    call_command("retry_failed_saves", *args, stdout=out)
    return out.getvalue()


def test_delivers_everything_and_says_so(fault_proxy, s3):
    saved = stash_failed_saves(fault_proxy, 3)
    text = run()
    assert text.strip().endswith("3 delivered, 0 failed again, 0 skipped")
    assert "\r" not in text  # piped: no progress bar
    for record_id, key, payload in saved:
        assert SaveAttempt.objects.get(pk=record_id).status == Status.RECOVERED
        assert read_default(s3, key) == payload


def test_progress_bar_on_a_terminal(fault_proxy):
    stash_failed_saves(fault_proxy, 2)
    text = run(stdout=Terminal())
    assert "\r[###############...............] 1/2  delivered 1  failed 0  skipped 0" in text
    assert "\r[##############################] 2/2  delivered 2" in text


def test_exit_status_1_when_some_still_fail(fault_proxy):
    saved = stash_failed_saves(fault_proxy, 2)
    out = StringIO()
    with fault_proxy.outage_window(action="internal"), pytest.raises(CommandError) as caught:
        run(stdout=out)
    storages["default"].breaker.reset()
    assert caught.value.returncode == 1
    assert str(caught.value) == "2 save(s) still failing"
    text = out.getvalue()
    assert f"failed again #{saved[0][0]} InternalError" in text
    assert "0 delivered, 2 failed again, 0 skipped" in text


def test_dry_run_sends_nothing_and_changes_nothing(fault_proxy):
    saved = stash_failed_saves(fault_proxy, 2)
    fault_proxy.reset_counters()
    text = run("--dry-run")
    assert fault_proxy.counts["requests"] == 0
    assert f"would replay #{saved[0][0]} failed" in text
    assert text.strip().endswith("2 save(s) would be replayed (dry run: nothing sent)")
    assert set(SaveAttempt.objects.values_list("status", flat=True)) == {Status.FAILED}
    document = json.loads(run("--dry-run", "--json"))
    assert document["would_replay"] == 2
    assert [i["record_id"] for i in document["items"]] == [s[0] for s in saved]


def test_filters_and_json(fault_proxy):
    saved = stash_failed_saves(fault_proxy, 3)
    SaveAttempt.objects.filter(pk=saved[2][0]).update(error_code="SlowDown")
    document = json.loads(run("--error-code", "SlowDown", "--json"))
    assert (document["delivered"], document["failed"]) == (1, 0)
    assert [i["record_id"] for i in document["items"]] == [saved[2][0]]
    document = json.loads(run("--limit", "1", "--json"))
    assert [i["record_id"] for i in document["items"]] == [saved[0][0]]
    assert json.loads(run("--older-than", "1h", "--json"))["items"] == []
    assert json.loads(run("--storage", "default", "--json"))["delivered"] == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--limit", "0"], "--limit must be a whole number of at least 1, not '0'"),
    (["--older-than", "10x"], "'10x' is not an age: use a whole number and one of s, m, h, d, w"),
    (["--storage", "nope"], "--storage 'nope' is not in settings.STORAGES (known: default, "),
])
def test_usage_errors_exit_2_and_name_the_problem(args, message):
    done = subprocess.run(
        [sys.executable, "-m", "django", "retry_failed_saves", *args,
         "--settings", "tests.settings"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
