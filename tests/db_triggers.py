"""Real database errors for tests: a trigger that refuses SaveAttempt rows for some keys."""

from __future__ import annotations

from contextlib import contextmanager

from django.db import connection

POSTGRES_FUNCTION = """
    CREATE OR REPLACE FUNCTION sg_refuse_record() RETURNS trigger AS $$
    BEGIN
        IF NEW.key LIKE 'unrecorded/%' THEN
            RAISE EXCEPTION 'records refused for this test';
        END IF;
        RETURN NEW;
    END $$ LANGUAGE plpgsql"""


@contextmanager
def refusing_records():
    """Inserts of records whose key starts with ``unrecorded/`` fail (PostgreSQL or SQLite)."""
    postgres = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        if postgres:
            cursor.execute(POSTGRES_FUNCTION)
            cursor.execute("CREATE TRIGGER sg_refuse BEFORE INSERT ON storage_guard_saveattempt "
                           "FOR EACH ROW EXECUTE FUNCTION sg_refuse_record()")
        else:
            cursor.execute("CREATE TRIGGER sg_refuse BEFORE INSERT ON storage_guard_saveattempt "
                           "WHEN NEW.key LIKE 'unrecorded/%' "
                           "BEGIN SELECT RAISE(ABORT, 'records refused for this test'); END")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER sg_refuse" +
                           (" ON storage_guard_saveattempt" if postgres else ""))
            if postgres:
                cursor.execute("DROP FUNCTION sg_refuse_record()")
