"""The one module of option rules (storage_guard/options.py) and the one answer to "is this
storage guarded?" (storage_guard.storage.is_guarded / guarded_aliases)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage
from django.test import override_settings
from django.utils.functional import SimpleLazyObject

from storage_guard import conf, options
from storage_guard.checks import Codes
from storage_guard.keys import KeyLimits
from storage_guard.storage import GuardedS3Storage, guarded_aliases, is_guarded

GUARDED = "storage_guard.storage.GuardedS3Storage"


def named(found) -> list[tuple[str, str, tuple]]:
    return [(p.name, p.check_id, p.keys) for p in found]


# --- problems() -------------------------------------------------------------------------------


def test_the_project_defaults_break_no_rule():
    assert options.problems(conf.storage_defaults()) == []


def test_each_problem_names_its_check_and_the_options_it_involves():
    found = options.problems({"max_attempts": 0, "read_timeout": 0, "breaker_window": -1,
                              "backoff_base": 2.0, "backoff_cap": 1.0, "on_failure": "ignore",
                              "max_key_bytes": 2000})
    assert named(found) == [
        ("OPTION_MINIMUM", Codes.OPTION_MINIMUM, ("max_attempts",)),
        ("OPTION_NOT_POSITIVE", Codes.OPTION_NOT_POSITIVE, ("read_timeout",)),
        ("OPTION_MINIMUM", Codes.OPTION_MINIMUM, ("breaker_window",)),
        ("BACKOFF_ORDER", Codes.BACKOFF_ORDER, ("backoff_base", "backoff_cap")),
        ("OPTION_CHOICE", Codes.OPTION_CHOICE, ("on_failure",)),
        ("KEY_BYTES_RANGE", Codes.KEY_BYTES_RANGE, ("max_key_bytes",)),
    ]
    assert found[0].fields == {"where": "max_attempts", "value": 0, "minimum": 1}


def test_a_value_of_the_wrong_type_is_reported_once_and_named_by_where():
    found = options.problems({"max_attempts": "3", "record_sample_rate": 5},
                             where=lambda key: f"<{key}>")
    assert named(found) == [("OPTION_TYPE", Codes.OPTION_TYPE, ("max_attempts",)),
                            ("OPTION_TYPE", Codes.OPTION_TYPE, ("record_sample_rate",))]
    assert [p.fields for p in found] == [
        {"where": "<max_attempts>", "value": "3", "kind": "a whole number"},
        {"where": "<record_sample_rate>", "value": 5, "kind": "a number between 0 and 1"}]


def test_booleans_are_not_numbers():
    assert named(options.problems({"breaker_threshold": True, "connect_timeout": False})) == [
        ("OPTION_TYPE", Codes.OPTION_TYPE, ("breaker_threshold",)),
        ("OPTION_TYPE", Codes.OPTION_TYPE, ("connect_timeout",))]


def test_key_limits_must_fit_inside_each_other():
    found = options.problems({"max_key_bytes": 100, "max_segment_bytes": 200})
    assert named(found) == [("SEGMENT_BYTES_RANGE", Codes.SEGMENT_BYTES_RANGE,
                             ("max_segment_bytes", "max_key_bytes"))]
    found = options.problems({"max_key_bytes": 100, "max_segment_bytes": 50,
                              "max_slug_length": options.MIN_SLUG_LENGTH - 1})
    assert named(found) == [("SLUG_LENGTH_RANGE", Codes.SLUG_LENGTH_RANGE,
                             ("max_slug_length", "max_segment_bytes"))]


# --- the storage and KeyLimits ----------------------------------------------------------------


def test_storage_problem_is_a_choice_outside_its_choices():
    assert options.storage_problem(SimpleNamespace(on_failure="raise", key_policy="reject")) \
        is None
    assert options.storage_problem(SimpleNamespace(on_failure="raise", key_policy="drop")) == (
        "GuardedS3Storage option key_policy='drop' must be one of ('shorten', 'reject')")


def test_a_storage_with_an_option_outside_its_choices_cannot_be_built():
    with pytest.raises(ImproperlyConfigured) as caught:
        GuardedS3Storage(bucket_name="b", on_failure="ignore")
    assert str(caught.value) == (
        "GuardedS3Storage option on_failure='ignore' must be one of ('raise', 'defer')")


def test_key_limits_problem():
    assert options.key_limits_problem(KeyLimits()) is None
    assert options.key_limits_problem(SimpleNamespace(
        policy="cut", max_key_bytes=10, max_segment_bytes=10)) == (
        "key_policy must be one of ('shorten', 'reject'), not 'cut'")
    with pytest.raises(ImproperlyConfigured,
                       match=r"^max_key_bytes and max_segment_bytes must be positive$"):
        KeyLimits(max_key_bytes=10, max_segment_bytes=0)


def test_the_old_conf_choices_name_still_answers():
    with pytest.warns(DeprecationWarning, match=r"storage_guard\.options\.CHOICES"):
        assert conf.CHOICES == {"ON_FAILURE": ("raise", "defer"),
                                "KEY_POLICY": ("shorten", "reject")}
    with pytest.raises(AttributeError):
        conf.NO_SUCH_SETTING  # noqa: B018


# --- is_guarded() and guarded_aliases() -------------------------------------------------------


class Subclass(GuardedS3Storage):
    pass


def test_is_guarded_takes_an_instance_a_class_or_a_dotted_path():
    assert is_guarded(GuardedS3Storage(bucket_name="b"))
    assert is_guarded(GuardedS3Storage) and is_guarded(Subclass)
    assert is_guarded(GUARDED) and is_guarded(f"{__name__}.Subclass")
    assert not is_guarded(FileSystemStorage())
    assert not is_guarded(FileSystemStorage)
    assert not is_guarded("django.core.files.storage.FileSystemStorage")
    assert not is_guarded("no.such.Storage") and not is_guarded("")
    assert not is_guarded("storage_guard.storage.is_guarded")  # a path, but not to a class


def test_a_lazy_storage_that_cannot_be_built_is_not_guarded():
    def build():
        raise ImproperlyConfigured("bad options")

    assert not is_guarded(SimpleLazyObject(build))
    assert is_guarded(SimpleLazyObject(lambda: GuardedS3Storage(bucket_name="b")))


def test_guarded_aliases_lists_the_guarded_backends_in_settings_order():
    storages = {
        "media": {"BACKEND": f"{__name__}.Subclass"},
        "static": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "broken": {"BACKEND": "no.such.Storage"},
        "default": {"BACKEND": GUARDED},
    }
    with override_settings(STORAGES=storages):
        assert guarded_aliases() == ["media", "default"]


def test_the_doctor_still_answers_with_the_same_function():
    from storage_guard.operations import doctor

    assert doctor.guarded_aliases is guarded_aliases
