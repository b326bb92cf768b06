"""Presets: named sets of retry and timeout numbers, overridden by explicit options."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from storage_guard import checks, conf
from storage_guard.checks import Codes
from storage_guard.operations import doctor
from storage_guard.saving import presets

GUARDED = "storage_guard.storage.GuardedS3Storage"
NAMES = "['background', 'interactive', 'large_upload', 'standard']"


def storages(**options):
    return {"default": {"BACKEND": GUARDED, "OPTIONS": {"bucket_name": "media",
                                                        "endpoint_url": "http://s3",
                                                        **options}}}


def numbers(storage) -> dict:
    return {key.lower(): getattr(storage, key.lower()) for key in presets.PRESET_KEYS}


def test_the_four_kinds_of_work_are_covered():
    assert sorted(presets.PRESETS) == ["background", "interactive", "large_upload", "standard"]
    assert presets.DEFAULT_PRESET == "standard"
    assert {k: conf.DEFAULTS[k] for k in presets.PRESET_KEYS} == presets.PRESETS["standard"]


def test_presets_order_from_quick_to_patient():
    order = ["interactive", "standard", "large_upload", "background"]
    for key in ("RETRY_DEADLINE", "CONNECT_TIMEOUT", "PUT_TIMEOUT_FLOOR", "PUT_TIMEOUT_CEILING"):
        values = [presets.PRESETS[name][key] for name in order]
        assert values == sorted(values), key


def test_a_storage_takes_its_presets_numbers(guarded_storage_factory):
    storage = guarded_storage_factory(preset="background")
    assert numbers(storage) == presets.option_values("background")
    assert storage.policy.max_attempts == presets.PRESETS["background"]["MAX_ATTEMPTS"]
    assert storage.timeout_rule.floor == presets.PRESETS["background"]["PUT_TIMEOUT_FLOOR"]


def test_an_explicit_option_wins_over_the_preset(guarded_storage_factory):
    storage = guarded_storage_factory(preset="large_upload", max_attempts=2, read_timeout=7.0)
    expected = {**presets.option_values("large_upload"), "max_attempts": 2, "read_timeout": 7.0}
    assert numbers(storage) == expected
    assert storage.client.meta.config.read_timeout == 7.0


def test_the_project_preset_and_its_overrides(guarded_storage_factory):
    with override_settings(STORAGE_GUARD={"PRESET": "interactive", "MAX_ATTEMPTS": 2}):
        storage = guarded_storage_factory()
    assert numbers(storage) == {**presets.option_values("interactive"), "max_attempts": 2}
    assert storage.preset == "interactive"


def test_a_storage_preset_replaces_the_project_numbers(guarded_storage_factory):
    with override_settings(STORAGE_GUARD={"PRESET": "interactive", "MAX_ATTEMPTS": 2}):
        storage = guarded_storage_factory(preset="background")
    assert numbers(storage) == presets.option_values("background")


def test_an_unknown_preset_is_refused_when_the_storage_is_built(guarded_storage_factory):
    with pytest.raises(ImproperlyConfigured, match="'fast', which is not a preset"):
        guarded_storage_factory(preset="fast")


def test_check_unknown_storage_preset_exact_message():
    with override_settings(STORAGES=storages(preset="fast"), STORAGE_GUARD={}):
        found = checks.check_options()
    assert [(m.id, m.msg, m.hint) for m in found] == [(
        Codes.PRESET_UNKNOWN,
        f"STORAGES['default']['OPTIONS']['preset'] is 'fast', which is not a preset; the "
        f"presets are {NAMES}.",
        "Use one of the presets described in docs/configuration.md, or leave preset out and "
        "set the numbers one by one.")]


def test_check_unknown_project_preset_exact_message():
    with override_settings(STORAGE_GUARD={"PRESET": "web"}):
        found = checks.check_options()
        deployment = checks.check_deployment()
    assert [(m.id, m.msg) for m in found] == [(
        Codes.PRESET_UNKNOWN,
        f"STORAGE_GUARD['PRESET'] is 'web', which is not a preset; the presets are {NAMES}.")]
    assert deployment == []


def test_check_deadline_over_the_request_budget_exact_message():
    with override_settings(STORAGES=storages(retry_deadline=20.0), STORAGE_GUARD={}):
        found = [(m.id, m.msg, m.hint) for m in checks.check_deployment()]
    assert found == [(
        Codes.DEADLINE_OVER_REQUEST_BUDGET,
        "STORAGES['default']['OPTIONS']['retry_deadline'] (20.0s) with the 'standard' preset, "
        "plus 2.0s for a last connect and 8.0s of record database timeouts, is 30.0s: a "
        "failing save inside a request would not end well under a 30.0s worker timeout.",
        "Lower retry_deadline to 15.0s or less, or use preset 'background' for a storage that "
        "only saves outside requests.")]


def test_the_background_preset_may_take_its_time():
    with override_settings(STORAGES=storages(preset="background"), STORAGE_GUARD={}):
        assert checks.check_deployment() == []


@pytest.mark.parametrize("name", ["interactive", "standard"])
def test_request_presets_fit_inside_a_request(name):
    """The arithmetic of docs/configuration.md: deadline + connect + record database <= 25 s."""
    numbers = presets.PRESETS[name]
    spent = numbers["RETRY_DEADLINE"] + numbers["CONNECT_TIMEOUT"]
    assert spent + checks.record_database_budget() <= 25.0
    with override_settings(STORAGES=storages(preset=name), STORAGE_GUARD={}):
        assert checks.check_deployment() == []


def test_check_rate_of_the_wrong_type_exact_message():
    with override_settings(STORAGE_GUARD={"PUT_TIMEOUT_RATE": "1MB"}):
        found = checks.check_options()
    assert [(m.id, m.msg) for m in found] == [(
        Codes.OPTION_TYPE,
        "STORAGE_GUARD['PUT_TIMEOUT_RATE'] is '1MB'; it must be a number of bytes per second.")]


def test_the_doctor_shows_the_effective_numbers(guarded_storage_factory):
    storage = guarded_storage_factory(preset="large_upload", max_attempts=6)
    settings = doctor.effective_settings(storage)
    assert settings["preset"] == "large_upload" and settings["max_attempts"] == 6
    assert settings["put_timeout_floor"] == 3.0
    assert settings["put_timeout_examples"]["2 KB"] == {"timeout": 3.0, "deadline": 60.0}
    assert settings["put_timeout_examples"]["8 MB part"]["timeout"] == 64.0
    report = doctor.DoctorReport([doctor.StorageReport("media", settings=settings)])
    lines = doctor.as_text(report)
    assert lines[1].startswith("  preset 'large_upload': timeouts: connect 3.0s, read 10.0s; "
                               "retries: 6 attempts within 60.0s")
    assert lines[2] == ("  uploads wait 3s + 1s per 128 KB, at most 300s, twice as long after "
                        "a timeout: 2 KB 3s (deadline 60s), 1 MB 12s (deadline 68s), "
                        "8 MB part 64s (deadline 124s)")
