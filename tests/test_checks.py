"""System checks: each fires on a configuration built to break its rule, with the exact message."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.core import checks as django_checks
from django.core.files.storage import FileSystemStorage
from django.core.management import call_command
from django.db import models
from django.test import override_settings
from django.test.utils import isolate_apps

from storage_guard import checks
from storage_guard.checks import Codes
from storage_guard.keys import SluggedUploadTo
from tests.checks_app.builders import file_model, guarded_storage, model

GUARDED = "storage_guard.storage.GuardedS3Storage"


def run_model_checks() -> list:
    return checks.check_models(app_configs=[apps_in_isolation().get_app_config("checks_app")])


def apps_in_isolation():
    from django.db.models.options import Options

    return Options.default_apps  # isolate_apps swaps this for the isolated registry


def as_tuples(messages) -> list[tuple[str, str, str]]:
    return [(m.id, m.msg, m.hint) for m in messages]


# --- The project's own configuration is quiet -------------------------------------------------


def test_the_test_project_has_no_storage_guard_issues():
    assert django_checks.run_checks(tags=[checks.TAG]) == []
    call_command("check", "--fail-level", "WARNING")


def test_the_checks_are_registered_by_the_app():
    with override_settings(STORAGE_GUARD={"MAX_ATTEMPTS": 0}):
        found = django_checks.run_checks(tags=[checks.TAG])
    assert [m.id for m in found] == [Codes.OPTION_MINIMUM]


def test_every_check_id_is_documented():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "checks.md").read_text()
    for name in (n for n in vars(Codes) if not n.startswith("_")):
        assert f"### `{getattr(Codes, name)}`" in text


def test_every_code_has_a_message_and_a_hint_and_ids_are_unique():
    names = [n for n in vars(Codes) if not n.startswith("_")]
    ids = [getattr(Codes, n) for n in names]
    assert len(set(ids)) == len(ids)
    for name in names:
        assert getattr(checks.Messages, name) and getattr(checks.Hints, name)


# --- Options (E002-E009, E011) ----------------------------------------------------------------


def option_messages(**storage_guard) -> list[tuple[str, str, str]]:
    with override_settings(STORAGE_GUARD=storage_guard):
        return as_tuples(checks.check_options())


@pytest.mark.parametrize(("setting", "value", "expected"), [
    ("MAX_ATTEMPTS", "5", (Codes.OPTION_TYPE,
                           "STORAGE_GUARD['MAX_ATTEMPTS'] is '5'; it must be a whole number.",
                           "Set it to a number in settings.STORAGE_GUARD or the storage's "
                           "OPTIONS.")),
    ("READ_TIMEOUT", True, (Codes.OPTION_TYPE,
                            "STORAGE_GUARD['READ_TIMEOUT'] is True; it must be a number of "
                            "seconds.",
                            "Set it to a number in settings.STORAGE_GUARD or the storage's "
                            "OPTIONS.")),
    ("MAX_ATTEMPTS", 0, (Codes.OPTION_MINIMUM,
                         "STORAGE_GUARD['MAX_ATTEMPTS'] is 0; it must be at least 1.",
                         "Raise it to 1 or more.")),
    ("BREAKER_THRESHOLD", -1, (Codes.OPTION_MINIMUM,
                               "STORAGE_GUARD['BREAKER_THRESHOLD'] is -1; it must be at least 0.",
                               "Raise it to 0 or more.")),
    ("BREAKER_COOLDOWN", -1, (Codes.OPTION_MINIMUM,
                              "STORAGE_GUARD['BREAKER_COOLDOWN'] is -1; it must be at least 0.",
                              "Raise it to 0 or more.")),
    ("BREAKER_REFRESH", -0.1, (Codes.OPTION_MINIMUM,
                               "STORAGE_GUARD['BREAKER_REFRESH'] is -0.1; it must be at least 0.",
                               "Raise it to 0 or more.")),
    ("BREAKER_REFRESH", "0.1", (Codes.OPTION_TYPE,
                                "STORAGE_GUARD['BREAKER_REFRESH'] is '0.1'; it must be a number "
                                "of seconds.",
                                "Set it to a number in settings.STORAGE_GUARD or the storage's "
                                "OPTIONS.")),
    ("CONNECT_TIMEOUT", 0, (Codes.OPTION_NOT_POSITIVE,
                            "STORAGE_GUARD['CONNECT_TIMEOUT'] is 0; it must be greater than 0.",
                            "Use a positive number of seconds.")),
    ("RETRY_DEADLINE", -2.5, (Codes.OPTION_NOT_POSITIVE,
                              "STORAGE_GUARD['RETRY_DEADLINE'] is -2.5; it must be greater "
                              "than 0.",
                              "Use a positive number of seconds.")),
    ("ON_FAILURE", "ignore", (Codes.OPTION_CHOICE,
                              "STORAGE_GUARD['ON_FAILURE'] is 'ignore'; it must be one of "
                              "['raise', 'defer'].",
                              "Use one of ['raise', 'defer'].")),
    ("KEY_POLICY", "truncate", (Codes.OPTION_CHOICE,
                                "STORAGE_GUARD['KEY_POLICY'] is 'truncate'; it must be one of "
                                "['shorten', 'reject'].",
                                "Use one of ['shorten', 'reject'].")),
    ("MAX_KEY_BYTES", 2048, (Codes.KEY_BYTES_RANGE,
                             "STORAGE_GUARD['MAX_KEY_BYTES'] is 2048; it must be between 16 "
                             "and 1024.",
                             "S3 refuses keys over 1024 UTF-8 bytes, and fewer than 16 leaves "
                             "no room for a shortened name.")),
    ("MAX_KEY_BYTES", 8, (Codes.KEY_BYTES_RANGE,
                          "STORAGE_GUARD['MAX_KEY_BYTES'] is 8; it must be between 16 and 1024.",
                          "S3 refuses keys over 1024 UTF-8 bytes, and fewer than 16 leaves no "
                          "room for a shortened name.")),
    ("MAX_SEGMENT_BYTES", 2000, (Codes.SEGMENT_BYTES_RANGE,
                                 "STORAGE_GUARD['MAX_SEGMENT_BYTES'] is 2000; it must be between "
                                 "16 and max_key_bytes (1024).",
                                 "Use 255 (the file-name limit of the filesystems behind "
                                 "SeaweedFS and MinIO) unless your server allows longer "
                                 "segments.")),
    ("MAX_SLUG_LENGTH", 300, (Codes.SLUG_LENGTH_RANGE,
                              "STORAGE_GUARD['MAX_SLUG_LENGTH'] is 300; it must be between 14 "
                              "and max_segment_bytes (255).",
                              "A slug is one key segment, so it must fit in "
                              "max_segment_bytes.")),
])
def test_an_option_out_of_range_in_storage_guard(setting, value, expected):
    assert option_messages(**{setting: value}) == [expected]


def test_backoff_cap_below_backoff_base():
    assert option_messages(BACKOFF_BASE=2.0, BACKOFF_CAP=1.0) == [(
        Codes.BACKOFF_ORDER,
        "STORAGE_GUARD['BACKOFF_CAP'] (1.0) is less than STORAGE_GUARD['BACKOFF_BASE'] (2.0).",
        "backoff_cap is the longest sleep between attempts; make it >= backoff_base.")]


def test_zero_backoff_and_a_disabled_breaker_are_allowed():
    assert option_messages(BACKOFF_BASE=0, BACKOFF_CAP=0, BREAKER_THRESHOLD=0,
                           BREAKER_COOLDOWN=0, BREAKER_REFRESH=0) == []


def test_an_unknown_storage_guard_key():
    (found,) = option_messages(MAX_ATTEMTPS=3)
    assert found[0] == Codes.SETTINGS_INVALID
    assert found[1].startswith(
        "settings.STORAGE_GUARD is invalid: STORAGE_GUARD has unknown key(s) ['MAX_ATTEMTPS']")
    assert found[2] == "Fix settings.STORAGE_GUARD; see docs/configuration.md."


def guarded_storages(**options) -> dict:
    return {"default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
            "media": {"BACKEND": GUARDED, "OPTIONS": {"bucket_name": "b", **options}},
            "plain": {"BACKEND": "storages.backends.s3.S3Storage",
                      "OPTIONS": {"max_key_bytes": 5000}}}


def test_a_storage_option_is_reported_where_it_is_set():
    with override_settings(STORAGES=guarded_storages(max_key_bytes=512, max_segment_bytes=600),
                           STORAGE_GUARD={}):
        found = as_tuples(checks.check_options())
    assert found == [(
        Codes.SEGMENT_BYTES_RANGE,
        "STORAGES['media']['OPTIONS']['max_segment_bytes'] is 600; it must be between 16 and "
        "max_key_bytes (512).",
        "Use 255 (the file-name limit of the filesystems behind SeaweedFS and MinIO) unless "
        "your server allows longer segments.")]


def test_a_project_wide_problem_is_reported_once_not_per_storage():
    with override_settings(STORAGES=guarded_storages(), STORAGE_GUARD={"MAX_ATTEMPTS": 0}):
        found = checks.check_options()
    assert [m.msg for m in found] == ["STORAGE_GUARD['MAX_ATTEMPTS'] is 0; it must be at least 1."]


def test_a_storage_can_fix_a_project_wide_value_but_the_setting_is_still_reported():
    with override_settings(STORAGES=guarded_storages(max_attempts=3),
                           STORAGE_GUARD={"MAX_ATTEMPTS": 0}):
        assert [m.id for m in checks.check_options()] == [Codes.OPTION_MINIMUM]


def test_a_storage_policy_not_in_choices():
    with override_settings(STORAGES=guarded_storages(key_policy="drop"), STORAGE_GUARD={}):
        found = as_tuples(checks.check_options())
    assert found == [(Codes.OPTION_CHOICE,
                      "STORAGES['media']['OPTIONS']['key_policy'] is 'drop'; it must be one of "
                      "['shorten', 'reject'].",
                      "Use one of ['shorten', 'reject'].")]


# --- File fields (E001, E010) -----------------------------------------------------------------


@isolate_apps("tests.checks_app")
def test_a_correct_model_is_quiet():
    model("Ok", title=models.SlugField(max_length=200),
          file=models.FileField(storage=guarded_storage(), upload_to="docs/%Y/%m/"),
          image=models.ImageField(storage=guarded_storage(location="media"), upload_to=(
              SluggedUploadTo("img", fields=["title"], date_partitioned=True)), max_length=255))
    assert run_model_checks() == []


@isolate_apps("tests.checks_app")
def test_max_length_too_small_for_a_strftime_upload_to():
    file_model(max_length=30, upload_to="documents/%Y/%m/%d/")
    assert as_tuples(run_model_checks()) == [(
        Codes.FIELD_MAX_LENGTH,
        "checks_app.Upload.file has max_length=30, too small for its upload_to prefix "
        "'documents/2000/09/27/' (21 characters) plus a minimal name of 20 characters.",
        "Set max_length to at least 41 (255 is a good default for keys), or shorten upload_to.")]


@isolate_apps("tests.checks_app")
def test_max_length_too_small_for_a_slugged_upload_to_on_an_image_field():
    file_model("Photo", field_class=models.ImageField, upload_to=SluggedUploadTo(
        "photos/originals", fields=["album", "owner"], date_partitioned=True), max_length=60)
    (found,) = run_model_checks()
    assert (found.id, found.msg) == (
        Codes.FIELD_MAX_LENGTH,
        "checks_app.Photo.file has max_length=60, too small for its upload_to prefix "
        "'photos/originals/x/x/year=2000/month=01/day=01/' (47 characters) plus a minimal name "
        "of 20 characters.")
    assert found.hint.startswith("Set max_length to at least 67 ")


@isolate_apps("tests.checks_app")
def test_a_field_on_another_storage_is_not_checked():
    file_model(storage=FileSystemStorage(), max_length=5, upload_to="documents/%Y/%m/%d/")
    assert run_model_checks() == []


@isolate_apps("tests.checks_app")
def test_a_location_that_leaves_no_room_in_the_key():
    file_model(storage=guarded_storage(location="l" * 1000), upload_to="docs/")
    assert as_tuples(run_model_checks()) == [(
        Codes.PREFIX_TOO_LONG,
        f"checks_app.Upload.file: the key prefix '{'l' * 53}…{'l' * 20}/docs/' is 1006 bytes, "
        "leaving no room for a name under max_key_bytes=1024.",
        "Shorten the storage's location or the field's upload_to.")]


@isolate_apps("tests.checks_app")
def test_an_upload_to_segment_over_the_segment_limit():
    file_model(storage=guarded_storage(max_segment_bytes=64), upload_to="d" * 70, max_length=255)
    assert as_tuples(run_model_checks()) == [(
        Codes.PREFIX_TOO_LONG,
        f"checks_app.Upload.file: the key prefix '{'d' * 70}/' is 70 bytes in one segment, "
        "leaving no room for a name under max_segment_bytes=64.",
        "Shorten the storage's location or the field's upload_to.")]


# --- Slug fields feeding a key (W001) ---------------------------------------------------------


@isolate_apps("tests.checks_app")
def test_a_slug_field_longer_than_max_slug_length_next_to_a_guarded_file_field():
    model("Article", slug=models.SlugField(max_length=255),
          file=models.FileField(storage=guarded_storage(max_slug_length=100),
                                upload_to=SluggedUploadTo("a", fields=["slug"]), max_length=255))
    assert as_tuples(run_model_checks()) == [(
        Codes.SLUG_FIELD_TOO_LONG,
        "checks_app.Article.slug has max_length=255, longer than max_slug_length=100 of the "
        "guarded storage used by checks_app.Article.",
        "Slugs longer than max_slug_length are cut (with a hash) when they become key segments. "
        "Set the SlugField's max_length to 100 or less, or raise max_slug_length.")]
    assert all(isinstance(m, django_checks.Warning) for m in run_model_checks())


@isolate_apps("tests.checks_app")
def test_a_long_slug_field_without_a_guarded_file_field_is_quiet():
    model("Tag", slug=models.SlugField(max_length=500),
          file=models.FileField(storage=FileSystemStorage()))
    assert run_model_checks() == []


def test_the_default_storage_is_found_through_the_lazy_default_storage():
    with isolate_apps("tests.checks_app"):
        model("Default", file=models.FileField(max_length=10))  # default_storage: guarded
        found = run_model_checks()
    assert [m.id for m in found] == [Codes.FIELD_MAX_LENGTH]


def test_all_models_are_checked_without_app_configs():
    assert checks.check_models() == []
    assert any(m._meta.label == "testapp.Document" for m in apps.get_models())
