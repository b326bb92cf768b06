"""Reads (open, exists, size, listdir, delete) are retried on transient errors too."""

import pytest
from django.core.files.base import ContentFile

from tests.testbed.faultproxy import error

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory()
    name = storage.save("reads/file.txt", ContentFile(b"content of the file"))
    fault_proxy.reset_counters()
    return storage, name


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_open_and_read_survive_faults(stored, fault_proxy, method):
    storage, name = stored
    fault_proxy.configure(methods={method})
    fault_proxy.script(["reset", "internal"])
    with storage.open(name) as handle:
        assert handle.read() == b"content of the file"
    assert fault_proxy.counts[method] >= 3


def test_exists_and_size_are_retried(stored, fault_proxy):
    storage, name = stored
    fault_proxy.configure(methods={"HEAD"})
    fault_proxy.script(["slowdown", "reset"])
    assert storage.exists(name) is True
    fault_proxy.script(["internal"])
    assert storage.size(name) == len(b"content of the file")
    assert fault_proxy.counts["HEAD"] == 5


def test_listdir_is_retried(stored, fault_proxy):
    storage, _ = stored
    fault_proxy.configure(methods={"GET"})
    fault_proxy.script(["throttle_429"])
    assert storage.listdir("reads") == ([], ["file.txt"])


def test_delete_is_retried(stored, fault_proxy, s3):
    storage, name = stored
    fault_proxy.configure(methods={"DELETE"})
    fault_proxy.script(["service_unavailable", "reset"])
    storage.delete(name)
    assert fault_proxy.counts["DELETE"] == 3
    assert s3.list_objects_v2(Bucket=storage.bucket_name).get("KeyCount") == 0


def test_missing_file_is_not_retried(stored, fault_proxy):
    storage, _ = stored
    with pytest.raises(FileNotFoundError):
        storage.size("reads/missing.txt")
    assert fault_proxy.counts["HEAD"] == 1


def test_permanent_read_error_is_raised_at_once(stored, fault_proxy):
    storage, name = stored
    fault_proxy.configure(methods={"HEAD"})
    fault_proxy.script([error(403, "AccessDenied", "Access Denied")])
    with pytest.raises(Exception, match=r"403|AccessDenied|Forbidden"):
        storage.exists(name)
    assert fault_proxy.counts["HEAD"] == 1
