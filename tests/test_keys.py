"""``fit_name`` and the key builders: every key S3 gets is within its limits, before the network."""

from __future__ import annotations

import datetime
import re
import unicodedata
from types import SimpleNamespace

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.migrations.writer import MigrationWriter
from django.test import override_settings
from django.test.utils import isolate_apps
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from storage_guard.errors import InvalidKey, KeyTooLong, SaveRejected
from storage_guard.keys import (
    HASH_CHARS,
    KeyLimits,
    SluggedUploadTo,
    date_partitioned_key,
    fit_name,
    full_key,
    short_hash,
    split_extension,
    utf8_len,
)
from tests.checks_app.builders import file_model, guarded_storage, model

DEFAULT = KeyLimits()
REJECT = KeyLimits(policy="reject")


def fits(name: str, *, location: str, limits: KeyLimits, max_length: int | None) -> bool:
    key = full_key(location, name)
    return (utf8_len(key) <= limits.max_key_bytes
            and all(utf8_len(s) <= limits.max_segment_bytes for s in key.split("/"))
            and (max_length is None or len(name) <= max_length))


def directory_of(name: str) -> str:
    return name.rpartition("/")[0]


# --- Examples ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.txt", "docs/2025/report.pdf", "é" * 100, "", "x/" * 50])
def test_a_name_that_fits_comes_back_unchanged(name):
    assert fit_name(name, location="media", limits=DEFAULT, max_length=300) == name
    assert fit_name(name, location="media", limits=REJECT, max_length=300) == name


def test_a_long_stem_is_cut_keeping_directory_extension_and_a_hash():
    name = "reports/" + "a" * 300 + ".pdf"
    fitted = fit_name(name, location="", limits=DEFAULT)
    assert fitted == f"reports/{'a' * (255 - 1 - HASH_CHARS - 4)}-{short_hash(name)}.pdf"
    assert utf8_len(fitted.rpartition("/")[2]) == 255


def test_multi_byte_characters_are_counted_in_bytes_and_never_split():
    name = "字" * 200 + ".pdf"  # 604 bytes in one segment
    fitted = fit_name(name, location="", limits=DEFAULT)
    stem = fitted.removesuffix(f"-{short_hash(name)}.pdf")
    assert set(stem) == {"字"}
    assert utf8_len(fitted) <= 255
    assert len(stem) == (255 - 1 - HASH_CHARS - 4) // 3


def test_the_location_counts_towards_the_key_limit():
    limits = KeyLimits(max_key_bytes=100, max_segment_bytes=100)
    name = "b" * 90 + ".txt"
    assert fit_name(name, location="", limits=limits) == name
    fitted = fit_name(name, location="tenant-0042/uploads", limits=limits)
    assert utf8_len(full_key("tenant-0042/uploads", fitted)) == 100
    assert fitted.endswith(f"-{short_hash(name)}.txt")


def test_the_field_max_length_counts_characters():
    name = "docs/" + "ü" * 120 + ".jpeg"  # 130 characters, 250 bytes: fits the key, not the field
    fitted = fit_name(name, location="", limits=DEFAULT, max_length=100)
    assert len(fitted) == 100
    assert fitted.startswith("docs/ü") and fitted.endswith(".jpeg")


def test_compound_extensions_are_kept_whole():
    fitted = fit_name("x" * 400 + ".tar.gz", location="", limits=DEFAULT)
    assert fitted.endswith(".tar.gz") and not fitted.endswith("x.tar.gz")


@pytest.mark.parametrize(("filename", "expected"), [
    ("photo.JPG", ("photo", ".JPG")),
    ("archive.tar.gz", ("archive", ".tar.gz")),
    ("release-1.2.3.zip", ("release-1.2.3", ".zip")),
    ("notes v1.2 final", ("notes v1.2 final", "")),  # ".2 final" has a space: not an extension
    (".env", (".env", "")),
    ("..", ("..", "")),
    ("Makefile", ("Makefile", "")),
    ("trailing.", ("trailing.", "")),
    ("a." + "b" * 20, ("a." + "b" * 20, "")),  # too long to be an extension
    (".config.gz", (".config", ".gz")),
])
def test_split_extension(filename, expected):
    assert split_extension(filename) == expected


def test_reject_names_the_byte_length_the_limit_and_the_segment():
    name = "docs/" + "é" * 150 + ".pdf"
    with pytest.raises(KeyTooLong) as caught:
        fit_name(name, location="media", limits=REJECT)
    error = caught.value
    assert isinstance(error, SaveRejected) and isinstance(error, ValueError)
    assert error.code == "KeyTooLong"
    assert error.context["key"] == f"media/{name}"
    assert error.context["key_bytes"] == 6 + 5 + 304
    assert error.context["limit"] == 255
    assert error.context["limit_name"] == "max_segment_bytes"
    assert error.context["segment_index"] == 2
    assert error.context["actual"] == 304
    assert str(error).startswith(
        "[KeyTooLong] segment 2 ('ééééé") and "is 304 bytes, over max_segment_bytes=255" in str(
        error)


def test_reject_reports_the_whole_key_when_that_is_over():
    name = "/".join(["d" * 200] * 6) + ".txt"
    with pytest.raises(KeyTooLong, match=r"key is 1209 bytes, over max_key_bytes=1024") as caught:
        fit_name(name, location="", limits=REJECT)
    assert caught.value.context["key_bytes"] == 1209


def test_reject_reports_the_field_max_length_in_characters():
    with pytest.raises(KeyTooLong, match="name is 104 characters, over max_length=100"):
        fit_name("a" * 100 + ".txt", location="", limits=REJECT, max_length=100)


@pytest.mark.parametrize(("name", "location"), [
    ("d" * 300 + "/file.txt", ""),  # a directory segment over 255 bytes
    ("file.txt", "m" * 1020),  # the location alone fills the key
    ("/".join(["d" * 250] * 5) + "/file.txt", ""),  # directories fill the key
])
def test_shorten_raises_when_the_prefix_alone_is_too_long(name, location):
    with pytest.raises(KeyTooLong, match="the directory, location or extension alone is too"):
        fit_name(name, location=location, limits=DEFAULT)


def test_shorten_raises_when_the_field_cannot_hold_even_a_hash():
    with pytest.raises(KeyTooLong, match="over max_length=10"):
        fit_name("abcdefghijklmnop.txt", location="", limits=DEFAULT, max_length=10)


def test_key_limits_validate_the_policy():
    with pytest.raises(ImproperlyConfigured, match="key_policy must be one of"):
        KeyLimits(policy="truncate")


def test_key_limits_for_a_storage_and_from_settings():
    storage = SimpleNamespace(max_key_bytes=512, max_segment_bytes=100, key_policy="reject")
    assert KeyLimits.for_storage(storage) == KeyLimits(512, 100, "reject")
    assert KeyLimits.for_storage(object()) == KeyLimits()
    with override_settings(STORAGE_GUARD={"MAX_KEY_BYTES": 300, "KEY_POLICY": "reject"}):
        assert KeyLimits.from_settings() == KeyLimits(300, 255, "reject")


def test_key_limits_for_a_guarded_storage():
    from storage_guard.storage import GuardedS3Storage

    storage = GuardedS3Storage(bucket_name="b", max_key_bytes=600, max_segment_bytes=200,
                               key_policy="reject")
    assert KeyLimits.for_storage(storage) == KeyLimits(600, 200, "reject")


# --- Properties over arbitrary Unicode --------------------------------------------------------

def key_text(**kwargs):
    """Any text a key can hold: everything but control characters (those raise InvalidKey,
    see test_control_characters_and_lone_surrogates_are_refused)."""
    return st.text(st.characters(exclude_categories=("Cc", "Cs")), **kwargs)


AWKWARD = st.sampled_from([
    "😀", "👩‍👩‍👧", "北京", "مرحبا", "\u202e", "e\u0301", "\u0301", "ﬁ", " ", "..", ".", "/", "-",
    "\u200d", "\ufeff", "a", "Z", "ñ",
])
SEGMENT = st.one_of(key_text(max_size=80),
                    st.lists(st.one_of(AWKWARD, key_text(max_size=8)), max_size=120).map("".join))
EXTENSION = st.sampled_from(["", ".pdf", ".tar.gz", ".JPEG", ".😀", ".字字", ".x"])
NAMES = st.one_of(
    key_text(),
    st.builds(lambda dirs, stem, ext: "/".join([*dirs, stem + ext]),
              st.lists(key_text(max_size=20), max_size=3), SEGMENT, EXTENSION),
    st.builds(lambda stem, ext: stem * 30 + ext, SEGMENT, EXTENSION),
)
LOCATIONS = st.sampled_from(["", "media", "tenant/42/uploads/", "ü" * 30])
MAX_LENGTHS = st.one_of(st.none(), st.integers(20, 400))


@st.composite
def limits(draw):
    max_key = draw(st.integers(64, 1024))
    return KeyLimits(max_key, draw(st.integers(32, min(255, max_key))))


def check_fitted(name, location, lim, max_length):
    """The properties every produced name has, or that KeyTooLong or InvalidKey was the way out."""
    try:
        fitted = fit_name(name, location=location, limits=lim, max_length=max_length)
    except InvalidKey:
        assert any(unicodedata.category(c) in ("Cc", "Cs") for c in full_key(location, name))
        return None
    except KeyTooLong:
        directory, _, filename = name.rpartition("/")
        minimal = f"{directory}/" * bool(directory) + short_hash(name) + split_extension(
            filename)[1]
        assert not fits(minimal, location=location, limits=lim, max_length=max_length)
        return None
    assert fits(fitted, location=location, limits=lim, max_length=max_length)
    full_key(location, fitted).encode("utf-8")  # valid UTF-8: no lone surrogates
    assert directory_of(fitted) == directory_of(name)
    assert fitted.endswith(split_extension(name.rpartition("/")[2])[1])
    if fits(name, location=location, limits=lim, max_length=max_length):
        assert fitted == name
    assert fit_name(name, location=location, limits=lim, max_length=max_length) == fitted
    assert fit_name(fitted, location=location, limits=lim, max_length=max_length) == fitted
    return fitted


@settings(max_examples=400, deadline=None)
@given(name=NAMES, location=LOCATIONS, lim=limits(), max_length=MAX_LENGTHS)
@example(name="é" * 1500, location="media", lim=DEFAULT, max_length=None)
@example(name="..", location="", lim=DEFAULT, max_length=None)
@example(name="", location="media", lim=DEFAULT, max_length=100)
@example(name="a/../" + "字" * 200 + ".pdf", location="", lim=DEFAULT, max_length=100)
def test_every_fitted_name_is_within_the_limits(name, location, lim, max_length):
    check_fitted(name, location, lim, max_length)


@settings(max_examples=300, deadline=None)
@given(common=SEGMENT, a=NAMES, b=NAMES, location=LOCATIONS, lim=limits(),
       max_length=MAX_LENGTHS)
def test_distinct_names_give_distinct_keys(common, a, b, location, lim, max_length):
    prefix = "x" * 300 + common  # long enough that most pairs are cut at the same place
    first, second = prefix + a, prefix + b
    assume(first != second)
    fitted = [check_fitted(n, location, lim, max_length) for n in (first, second)]
    assume(None not in fitted)
    assert fitted[0] != fitted[1]


@settings(max_examples=200, deadline=None)
@given(name=NAMES, lim=limits(), max_length=MAX_LENGTHS)
def test_nfc_and_nfd_forms_are_different_keys(name, lim, max_length):
    nfc, nfd = unicodedata.normalize("NFC", name * 10), unicodedata.normalize("NFD", name * 10)
    assume(nfc != nfd)
    fitted = [check_fitted(n, "", lim, max_length) for n in (nfc, nfd)]
    assume(None not in fitted)
    assert fitted[0] != fitted[1]


@settings(max_examples=200, deadline=None)
@given(name=NAMES, bad=st.sampled_from(["\x00", "\n", "\r", "\x1b", "\x7f", "\x85", "\ud800",
                                       "\udfff"]), at=st.integers(0, 50))
def test_control_characters_and_lone_surrogates_are_refused(name, bad, at):
    hostile = name[:at] + bad + name[at:]
    with pytest.raises(InvalidKey) as caught:
        fit_name(hostile, location="media", limits=DEFAULT)
    position = caught.value.context["position"]
    assert full_key("media", hostile)[position] == bad
    assert f"at position {position}" in str(caught.value)
    assert bad not in str(caught.value)


# --- Key builders -----------------------------------------------------------------------------


def test_date_partitioned_key():
    when = datetime.date(2025, 3, 4)
    assert date_partitioned_key("exports/", "a.csv", when) == (
        "exports/year=2025/month=03/day=04/a.csv")
    assert date_partitioned_key("", "/a.csv", when) == "year=2025/month=03/day=04/a.csv"


def test_date_partitioned_key_uses_the_utc_date_of_an_aware_datetime():
    tz = datetime.timezone(datetime.timedelta(hours=-5))
    late_evening = datetime.datetime(2025, 12, 31, 22, 0, tzinfo=tz)  # 03:00 UTC next day
    assert date_partitioned_key("p", "n", late_evening) == "p/year=2026/month=01/day=01/n"
    naive = datetime.datetime(2025, 12, 31, 22, 0)
    assert date_partitioned_key("p", "n", naive) == "p/year=2025/month=12/day=31/n"


def test_date_partitioned_key_defaults_to_today(monkeypatch):
    from django.utils import timezone

    fixed = datetime.datetime(2024, 2, 29, 12, tzinfo=datetime.UTC)
    monkeypatch.setattr(timezone, "now", lambda: fixed)
    assert date_partitioned_key("p", "n") == "p/year=2024/month=02/day=29/n"


def test_slugged_upload_to_deconstructs_for_migrations():
    upload_to = SluggedUploadTo("invoices", fields=["customer.name"], date_partitioned=True)
    path, args, kwargs = upload_to.deconstruct()
    assert path == "storage_guard.keys.SluggedUploadTo"
    assert args == ("invoices",)
    assert kwargs == {"fields": ["customer.name"], "date_partitioned": True}
    source, imports = MigrationWriter.serialize(upload_to)
    assert source == ("storage_guard.keys.SluggedUploadTo('invoices', date_partitioned=True, "
                      "fields=['customer.name'])")
    assert imports == {"import storage_guard.keys"}
    assert upload_to == SluggedUploadTo("invoices", fields=["customer.name"],
                                        date_partitioned=True)


def test_slugged_upload_to_refuses_a_traversing_prefix():
    with pytest.raises(ValueError, match=r"'\.\.' segment"):
        SluggedUploadTo("a/../b")


@isolate_apps("tests.checks_app")
def test_slugged_upload_to_composes_slugged_segments():
    Invoice = model(
        "Invoice", title=models.CharField(max_length=500),
        file=models.FileField(storage=guarded_storage(), upload_to=SluggedUploadTo(
            "invoices", fields=["customer", "title"], date_partitioned=True)))

    invoice = Invoice(title="Rechnung März / Q1")
    invoice.customer = "ACME GmbH & Co. KG"
    name = Invoice._meta.get_field("file").upload_to(invoice, "C:\\tmp\\Scan 001.PDF")
    today = date_partitioned_key("", "", None).rstrip("/")
    assert name == f"invoices/acme-gmbh-co-kg/rechnung-marz-q1/{today}/scan-001.pdf"


@isolate_apps("tests.checks_app")
def test_slugged_upload_to_fits_the_field_and_the_storage():
    Paper = model(
        "Paper", title=models.CharField(max_length=1000),
        file=models.FileField(storage=guarded_storage(location="lib", max_slug_length=50),
                              upload_to=SluggedUploadTo("papers", fields=["title"])))

    field = Paper._meta.get_field("file")
    paper = Paper(title="On the Electrodynamics of Moving Bodies " * 20)
    name = field.generate_filename(paper, "Zur Elektrodynamik bewegter Körper " * 10 + ".pdf")
    assert len(name) <= 100 and name.endswith(".pdf")
    directory, _, filename = name.rpartition("/")
    assert directory == f"papers/{slug(paper.title, 50)}"
    assert filename.startswith("zur-elektrodynamik-bewegt")


def slug(value, max_length):
    from storage_guard.keys import slugify_segment

    return slugify_segment(value, max_length)


@isolate_apps("tests.checks_app")
def test_slugged_upload_to_rejects_before_any_request_under_reject():
    Memo = file_model(
        "Memo", storage=guarded_storage(key_policy="reject", max_key_bytes=64),
        upload_to=SluggedUploadTo("memos"), max_length=255)

    upload_to = Memo._meta.get_field("file").upload_to
    with pytest.raises(KeyTooLong, match="over max_key_bytes=64"):
        upload_to(Memo(), "a" * 80 + ".txt")


@isolate_apps("tests.checks_app")
def test_slugged_upload_to_can_keep_the_file_name():
    Photo = file_model("Photo", upload_to=SluggedUploadTo(
        "photos", slug_filename=False))

    upload_to = Photo._meta.get_field("file").upload_to
    assert upload_to(Photo(), "Été à Paris\x00.JPG") == "photos/Été à Paris.JPG"
    assert upload_to(Photo(), "..") == f"photos/{short_hash('..')}"


def test_slugged_upload_to_without_a_field_uses_the_project_limits():
    upload_to = SluggedUploadTo("misc", fields=["title"])
    instance = SimpleNamespace(title="😀", _meta=SimpleNamespace(concrete_fields=[]))
    name = upload_to(instance, "x" * 400 + ".txt")
    assert name.startswith(f"misc/{short_hash('😀')}/") and name.endswith(".txt")
    assert utf8_len(name.rpartition("/")[2]) <= 255


TITLES = st.one_of(st.text(), st.lists(AWKWARD, max_size=80).map("".join))


@settings(max_examples=200, deadline=None)
@given(title=TITLES, filename=NAMES, max_length=st.integers(60, 300))
def test_upload_to_names_are_ascii_and_within_every_limit(title, filename, max_length):
    upload_to = SluggedUploadTo("up", fields=["title"], date_partitioned=True)
    field = SimpleNamespace(upload_to=upload_to, max_length=max_length,
                            storage=SimpleNamespace(location="media", max_key_bytes=1024,
                                                    max_segment_bytes=255, key_policy="shorten",
                                                    max_slug_length=200))
    instance = SimpleNamespace(title=title, _meta=SimpleNamespace(concrete_fields=[field]))
    name = upload_to(instance, filename)
    assert name.isascii()
    assert fits(name, location="media", limits=DEFAULT, max_length=max_length)
    assert all(segment and segment not in (".", "..") for segment in name.split("/"))
    assert upload_to(instance, filename) == name
    ext = split_extension(filename.replace("\\", "/").rpartition("/")[2])[1]
    if re.fullmatch(r"(\.[A-Za-z0-9]+)+", ext):
        assert name.endswith(ext.lower())


@pytest.mark.parametrize("unit", ["e\u0301", "👩\u200d👩\u200d👧", "ก\u0e31", "❤\ufe0f"])
def test_a_cut_never_separates_a_character_from_its_marks_or_joiners(unit):
    name = unit * 200 + ".txt"
    fitted = fit_name(name, location="", limits=DEFAULT)
    stem = fitted.removesuffix(f"-{short_hash(name)}.txt")
    assert stem and stem == unit * (len(stem) // len(unit))
