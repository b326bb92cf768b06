"""``GuardedS3Storage.save``: Django's ``Storage.save``, validating each distinct name once.

The guarded storage mirrors Django's method instead of calling it, to skip two ``pathlib``
parses of a name already validated. These tests pin Django's method to the one it mirrors by
the digest of its code (a Django release that changes it fails here, and the mirror must
be reviewed), check that the mirror makes the calls Django's makes, and check on
the real SeaweedFS that every name Django would refuse is still refused, before any request.
"""

from __future__ import annotations

import inspect
import io
from unittest import mock

import pytest
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.core.files.storage import Storage

from storage_guard import storage as storage_module
from storage_guard.models import SaveAttempt
from tests.code_digest import digest_without_docstring

pytestmark = pytest.mark.django_db(transaction=True)

# The SHA-256 of Django's Storage.save as reviewed for GuardedS3Storage.save: its code as
# ast.unparse writes it (no comments, no docstring, one layout), which is the same on Python
# 3.11 to 3.13 and in Django 5.2, 6.0 and 6.1. (ast.dump is not: 3.13 leaves out empty fields.)
REVIEWED_DJANGO_SAVE = "92c5437357ee95963eb567417ee0fa8d8a3248958422696d7a85ce7215e9caa2"


def test_djangos_save_is_the_one_the_guarded_save_mirrors():
    assert digest_without_docstring(inspect.getsource(Storage.save)) == REVIEWED_DJANGO_SAVE, (
        "Django's Storage.save changed: review GuardedS3Storage.save against it, then update "
        "REVIEWED_DJANGO_SAVE")


def test_the_mirror_checks_what_it_mirrors():
    """The guarded save calls what Django's does, with the same arguments (names aside)."""
    ours = inspect.getsource(storage_module.GuardedS3Storage.save)
    for call in ("validate_name(name)",
                 "self.get_available_name(name, max_length=max_length)",
                 "File(content, name)", "content.name"):
        assert call in ours, call


@pytest.mark.parametrize("name", [
    "../escape.txt", "a/../../escape.txt", "/absolute/path.txt", "a\\..\\..\\escape.txt",
    "", ".", "..", "dir/..",
])
def test_names_django_refuses_are_refused_before_any_request(guarded_storage_factory,
                                                             fault_proxy, name):
    storage = guarded_storage_factory()
    fault_proxy.reset_counters()
    with pytest.raises(SuspiciousFileOperation):
        Storage.save(storage, name, ContentFile(b"x"))  # what Django itself does
    with pytest.raises(SuspiciousFileOperation):
        storage.save(name, ContentFile(b"x"))
    assert fault_proxy.counts["requests"] == 0


def test_a_name_validated_once_is_not_parsed_again(guarded_storage_factory, read_object):
    storage = guarded_storage_factory()
    with mock.patch.object(storage_module, "validate_name",
                           wraps=storage_module.validate_name) as validate:
        assert storage.save("once/name.txt", ContentFile(b"payload")) == "once/name.txt"
    assert [c.args[0] for c in validate.call_args_list] == ["once/name.txt"]
    assert read_object("once/name.txt") == b"payload"


def test_a_save_fits_its_name_once_and_the_next_save_fits_it_again(guarded_storage_factory):
    """``get_available_name`` and ``_save`` both fit the name; within one save the second is
    skipped. A later save of the same name object is fitted afresh, to the limits of then."""
    storage = guarded_storage_factory()
    with mock.patch.object(storage_module.keys, "fit_name",
                           wraps=storage_module.keys.fit_name) as fit:
        assert storage.save("fit/once.txt", ContentFile(b"x")) == "fit/once.txt"
    assert fit.call_count == 1

    name = "fit/" + "n" * 200 + ".txt"
    saved = storage.save(name, ContentFile(b"x"))  # the very object the storage fitted
    assert saved == name
    storage.max_segment_bytes = 100
    shortened = storage.save(saved, ContentFile(b"x"))
    assert shortened != name and len(shortened.split("/")[1].encode()) <= 100


def test_a_name_the_storage_changes_is_validated_again(guarded_storage_factory, fault_proxy):
    """A ``get_available_name`` or ``_save`` that returns another name has it validated, as in
    Django: a traversal introduced by either is refused (before the request, for the first)."""

    class Renaming(storage_module.GuardedS3Storage):
        def get_available_name(self, name, max_length=None):
            return "../" + name if name.startswith("evil") else super().get_available_name(
                name, max_length)

        def _save(self, name, content):
            saved = super()._save(name, content)
            return "../" + saved if name.startswith("late") else saved

    storage = Renaming(**{k: getattr(guarded_storage_factory(), k) for k in (
        "bucket_name", "endpoint_url", "access_key", "secret_key", "region_name",
        "file_overwrite")}, alias="default")
    fault_proxy.reset_counters()
    with pytest.raises(SuspiciousFileOperation, match="path traversal"):
        storage.save("evil.txt", ContentFile(b"x"))
    assert fault_proxy.counts["requests"] == 0
    with pytest.raises(SuspiciousFileOperation, match="path traversal"):
        storage.save("late.txt", ContentFile(b"x"))
    assert storage.save("fine.txt", ContentFile(b"x")) == "fine.txt"
    assert SaveAttempt.objects.filter(name__in=["late.txt", "fine.txt"]).count() == 2


def test_content_without_chunks_is_wrapped_and_a_missing_name_taken_from_it(
        guarded_storage_factory, read_object):
    storage = guarded_storage_factory()

    content = io.BytesIO(b"raw bytes")  # a file object: no chunks(), as Django allows
    content.name = "from/content.txt"
    assert not hasattr(content, "chunks")
    assert storage.save(None, content) == "from/content.txt"
    assert read_object("from/content.txt") == b"raw bytes"
