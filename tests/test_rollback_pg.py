"""The failure record and its stash survive the caller's rollback (PostgreSQL).

A view under ATOMIC_REQUESTS re-raises SaveFailed, so Django rolls its transaction back; the
record and the stash were written through storage_guard's own connection and stay.
"""

import pytest
from django.db import connection, connections, transaction

from storage_guard.errors import SaveFailed
from storage_guard.models import SaveAttempt, Status
from storage_guard.saving import stash
from tests.testapp.models import Document

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.skipif(
        "connection.vendor != 'postgresql'",
        reason="runs in the PostgreSQL pass of .ci/run (--ds=tests.settings_postgres)"),
]


@pytest.fixture(autouse=True)
def independent_connection(settings):
    settings.STORAGE_GUARD = {**settings.STORAGE_GUARD, "INDEPENDENT_CONNECTION": True}


@pytest.fixture
def atomic_requests():
    settings_dict = connections["default"].settings_dict
    settings_dict["ATOMIC_REQUESTS"] = True
    yield
    settings_dict["ATOMIC_REQUESTS"] = False


def test_view_rollback_keeps_record_and_stash(client, fault_proxy, atomic_requests):
    fault_proxy.configure(methods={"PUT"})
    with fault_proxy.outage_window("internal"), pytest.raises(SaveFailed) as caught:
        client.post("/save-then-fail/", data=b"precious bytes",
                    content_type="application/octet-stream")

    assert not Document.objects.exists()  # the view's own write was rolled back
    record = SaveAttempt.objects.get(pk=caught.value.record_id)
    assert record.status == Status.FAILED
    assert stash.read(record) == b"precious bytes"


def test_records_use_a_second_connection(guarded_storage_factory, fault_proxy):
    storage = guarded_storage_factory(max_attempts=1)
    fault_proxy.script(["internal"])
    with pytest.raises(SaveFailed) as caught, transaction.atomic():
        from django.core.files.base import ContentFile

        storage.save("rb/x.bin", ContentFile(b"kept"))
    assert connection.vendor == "postgresql"
    assert SaveAttempt.objects.filter(pk=caught.value.record_id).exists()
    assert "default__storage_guard" in connections
    assert connections["default__storage_guard"].connection is not None


def test_success_records_skip_the_wal_flush_failure_records_do_not(guarded_storage_factory,
                                                                    fault_proxy):
    from django.core.files.base import ContentFile

    from storage_guard.saving.records import insert_failure

    guarded_storage_factory().save("sc/ok.bin", ContentFile(b"ok"))
    records = connections["default__storage_guard"]
    with records.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "off"
    seen = []
    records.execute_wrappers.append(
        lambda execute, sql, params, many, context: seen.append(sql) or execute(sql, params,
                                                                                many, context))
    try:
        insert_failure({"name": "n", "key": "n", "key_bytes": 1, "status": Status.FAILED}, b"x")
    finally:
        records.execute_wrappers.pop()
    # Durability back on, and the server's own time bound, for this transaction only.
    assert seen[0].startswith("SELECT set_config('synchronous_commit', 'on', true)")
    assert "set_config('statement_timeout', %s, true)" in seen[0]
    assert "set_config('lock_timeout', %s, true)" in seen[0]
