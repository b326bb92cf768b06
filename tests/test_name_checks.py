"""``keys.traversal``: Django's and django-storages' name checks without ``pathlib``.

Each check is compared with the original it replaces over every name built from up to four
pieces that matter (slashes of both kinds, ``.`` and ``..``, empty and odd segments, NUL,
non-ASCII, a Windows drive): the same name back, or the same exception with the same message.
The originals are pinned by the digest of their code, so a release that changes one fails here
until the replacement has been reviewed against it.
"""

from __future__ import annotations

import itertools
import pathlib
from unittest import mock

import pytest
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.core.files.utils import validate_file_name
from storages.backends.s3 import S3Storage
from storages.utils import get_available_overwrite_name

from storage_guard import storage as storage_module
from storage_guard.keys import traversal
from tests.code_digest import code_digest

# As reviewed for keys.traversal: Django 5.2 to 6.1, django-storages 1.14.5 and 1.14.6.
REVIEWED = {
    "validate_file_name": "4b1dcf2f6527fb5ad99829d196f8b2d5b87ffe03bf2a65642cd1d0c313bbb0b4",
    "get_available_overwrite_name":
        "0065ef9608fc712aa3ba2aa26e3f1a38a4c72141fa0e97ed7741a244c4504851",
    "S3Storage.get_available_name":
        "d85d250a1526612247cd22566103fa86670c8ea93087a21cabda3667d4090e54",
}

PIECES = ["a", "b.txt", ".", "..", "...", "/", "//", "\\", "", " ", "\x00", "é", "C:", "~"]
NAMES = sorted({"".join(parts) for length in range(1, 5)
                for parts in itertools.product(PIECES, repeat=length)})


def outcome(check, *args):
    try:
        return ("returned", check(*args))
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome compared
        return (type(exc), str(exc))


@pytest.mark.parametrize(("name", "function"), [
    ("validate_file_name", validate_file_name),
    ("get_available_overwrite_name", get_available_overwrite_name),
    ("S3Storage.get_available_name", S3Storage.get_available_name),
])
def test_the_replaced_checks_are_the_reviewed_ones(name, function):
    assert code_digest(function) == REVIEWED[name], (
        f"{name} changed: review storage_guard/keys/traversal.py against it, then update "
        "REVIEWED")


def test_the_corpus_holds_names_of_every_kind():
    verdicts = {outcome(validate_file_name, name, True)[1].split(" '")[0] for name in NAMES}
    assert {"Could not derive file name from", "Detected path traversal attempt in"} <= verdicts
    assert len(NAMES) > 25_000


def test_validate_name_answers_as_django_does_for_every_name():
    different = [name for name in NAMES
                 if outcome(traversal.validate_name, name)
                 != outcome(validate_file_name, name, True)]
    assert different == []


@pytest.mark.parametrize("max_length", [None, 4, 100])
def test_overwrite_name_answers_as_django_storages_does(max_length):
    different, handed_back = [], 0
    for name in NAMES:
        ours = outcome(traversal.overwrite_name, name, max_length)
        if ours == ("returned", None):  # django-storages' own function decides
            assert max_length is not None and len(name) > max_length, name
            handed_back += 1
            continue
        if ours != outcome(get_available_overwrite_name, name, max_length):
            different.append(name)
    assert different == []
    assert (handed_back > 0) == (max_length == 4)


def test_what_is_not_text_goes_to_djangos_own_check():
    path = pathlib.PurePosixPath("dir/file.txt")
    with mock.patch.object(traversal, "validate_file_name",
                           wraps=validate_file_name) as django_check:
        assert traversal.validate_name(path) == path
    django_check.assert_called_once_with(path, allow_relative_path=True)
    assert traversal.overwrite_name(path, None) is None


def test_windows_paths_are_left_to_django_storages(monkeypatch):
    monkeypatch.setattr(traversal, "POSIX_PATHS", False)
    assert traversal.overwrite_name("a/b.txt", None) is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("overwrite", [True, False])
def test_the_storage_refuses_what_s3storage_refuses(guarded_storage_factory, fault_proxy,
                                                    overwrite):
    """With and without ``file_overwrite`` (the second is django-storages' own path), on the
    real SeaweedFS: refused before any request, accepted names saved."""
    storage = guarded_storage_factory(file_overwrite=overwrite)
    fault_proxy.reset_counters()
    for name in ("a/../../up.txt", "../up.txt", "..", "../../x.txt", "a\\..\\..\\x.txt"):
        with pytest.raises(SuspiciousFileOperation):
            S3Storage.get_available_name(storage, name)
        with pytest.raises(SuspiciousFileOperation):
            storage.save(name, ContentFile(b"x"))
    assert fault_proxy.counts["requests"] == 0
    assert storage.save("a/./b/c.txt", ContentFile(b"x")) == "a/b/c.txt"


@pytest.mark.django_db(transaction=True)
def test_an_overwriting_save_runs_neither_pathlib_check(guarded_storage_factory,
                                                        read_object):
    """Neither Django's ``validate_file_name`` nor django-storages' overwrite check runs."""
    storage = guarded_storage_factory(file_overwrite=True)
    refuse = {"side_effect": AssertionError("a pathlib check ran")}
    with mock.patch.object(traversal, "validate_file_name", **refuse), \
            mock.patch.object(S3Storage, "get_available_name", **refuse):
        assert storage.save("fast/name.txt", ContentFile(b"payload")) == "fast/name.txt"
    assert read_object("fast/name.txt") == b"payload"


def test_names_that_need_truncating_go_to_django_storages():
    storage = storage_module.GuardedS3Storage(bucket_name="bucket", alias="default",
                                              file_overwrite=True)
    with mock.patch.object(S3Storage, "get_available_name",
                           return_value="kept.txt") as theirs:
        assert storage._available_name("long-name.txt", 8) == "kept.txt"
        assert storage._available_name("short.txt", 100) == "short.txt"
    theirs.assert_called_once_with("long-name.txt", 8)
