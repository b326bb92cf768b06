"""Gzip JSON documents under date-partitioned keys, through the guarded path."""

from __future__ import annotations

import base64
import datetime
import gzip
import json

import pytest

from storage_guard.contrib.generated.documents import (
    document_name,
    encode_document,
    load_document,
    save_document,
)
from storage_guard.models import SaveAttempt, Status
from storage_guard.saving.records import record_alias

pytestmark = pytest.mark.django_db(transaction=True)

DAY = datetime.datetime(2025, 3, 14, 23, 30, tzinfo=datetime.UTC)
DOCUMENT = {"title": "Rechnung März", "lines": [{"qty": 2, "price": "9.90"}], "ok": True,
            "note": None, "emoji": "📄"}


def test_document_is_stored_gzip_json_under_a_date_partition(guarded_storage_factory, s3,
                                                             bucket):
    storage = guarded_storage_factory()

    outcome = save_document(DOCUMENT, "Rechnung März", storage=storage, when=DAY)

    assert outcome.saved
    assert outcome.name == "documents/year=2025/month=03/day=14/rechnung-marz.json.gz"
    head = s3.head_object(Bucket=bucket, Key=outcome.name)
    assert head["ContentType"] == "application/json"
    assert head["ContentEncoding"] == "gzip"
    raw = s3.get_object(Bucket=bucket, Key=outcome.name)["Body"].read()
    assert json.loads(gzip.decompress(raw)) == DOCUMENT


def test_document_reads_back_through_the_storage(guarded_storage_factory):
    storage = guarded_storage_factory()
    outcome = save_document(DOCUMENT, "report", storage=storage)

    assert load_document(outcome.name, storage=storage) == DOCUMENT


def test_prefix_setting_and_argument(guarded_storage_factory, settings):
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "DOCUMENT_PREFIX": "exports/json"}

    assert document_name("A b", when=DAY) == "exports/json/year=2025/month=03/day=14/a-b.json.gz"
    assert document_name("A b", prefix="", when=DAY) == "year=2025/month=03/day=14/a-b.json.gz"


def test_failed_document_save_is_partial_and_delivered_later(guarded_storage_factory,
                                                             fault_proxy, s3, bucket):
    storage = guarded_storage_factory()
    fault_proxy.configure(internal=1.0, methods={"PUT"})

    outcome = save_document(DOCUMENT, "lost report", storage=storage, when=DAY)

    assert outcome.partial and outcome.retry_scheduled
    assert outcome.content_type == "application/json"
    assert outcome.filename == "lost-report.json.gz"
    assert json.loads(gzip.decompress(base64.b64decode(outcome.content_base64))) == DOCUMENT
    fault_proxy.clear()
    storage.breaker.reset()
    record = SaveAttempt.objects.using(record_alias()).get(pk=outcome.attempt_id)
    assert storage.redeliver(record).ok
    head = s3.head_object(Bucket=bucket, Key=outcome.name)
    assert head["ContentEncoding"] == "gzip" and head["ContentType"] == "application/json"
    assert load_document(outcome.name, storage=storage) == DOCUMENT


def test_deferred_document_reads_back_from_the_stash(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory(on_failure="defer")
    fault_proxy.configure(reset=1.0, methods={"PUT"})

    outcome = save_document(DOCUMENT, "deferred", storage=storage)

    assert outcome.partial
    assert SaveAttempt.objects.using(record_alias()).get(
        pk=outcome.attempt_id).status == Status.DEFERRED
    fault_proxy.clear()
    storage.breaker.reset()
    assert load_document(outcome.name, storage=storage) == DOCUMENT


def test_equal_documents_give_equal_bytes():
    assert encode_document({"a": 1}) == encode_document({"a": 1})


@pytest.mark.parametrize("bad", [{"a": object()}, {"x": float("nan")}])
def test_unserialisable_document_is_refused_clearly(bad):
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        encode_document(bad)


def test_missing_document_raises_file_not_found(guarded_storage_factory):
    with pytest.raises(FileNotFoundError):
        load_document("documents/none.json.gz", storage=guarded_storage_factory())
