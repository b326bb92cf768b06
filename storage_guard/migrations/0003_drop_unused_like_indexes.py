"""Drop the unused ``_like`` indexes on ``sha256`` and ``request_id``; keep the plain ones.

PostgreSQL got a second, ``varchar_pattern_ops`` index for each of these ``db_index``
CharFields (for ``LIKE 'abc%'``). Nothing queries them that way (only exact lookups: the admin's
search, the report, the spool), yet every record INSERT updated them. The plain B-tree indexes
stay: on PostgreSQL they are only renamed (no rebuild, no long lock on a large table); other
databases, which had no ``_like`` index, drop and create them under the new names.
"""

from django.db import migrations, models

INDEXES = (("sha256", "sg_sha256"), ("request_id", "sg_request_id"))


def _single_column_indexes(schema_editor, table: str, column: str) -> list[str]:
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return sorted(name for name, info in constraints.items()
                  if info["index"] and not info["primary_key"] and not info["unique"]
                  and info["columns"] == [column])


def forwards(apps, schema_editor):
    model = apps.get_model("storage_guard", "SaveAttempt")
    table = model._meta.db_table
    quote = schema_editor.quote_name
    for column, new_name in INDEXES:
        old = [name for name in _single_column_indexes(schema_editor, table, column)
               if name != new_name]
        if schema_editor.connection.vendor == "postgresql":
            plain = [name for name in old if not name.endswith("_like")]
            for name in old:
                if name.endswith("_like"):
                    schema_editor.execute(f"DROP INDEX {quote(name)}")
            if plain:
                schema_editor.execute(f"ALTER INDEX {quote(plain[0])} RENAME TO {quote(new_name)}")
                continue
        else:
            for name in old:
                schema_editor.execute(schema_editor._delete_index_sql(model, name))
        schema_editor.add_index(model, models.Index(fields=[column], name=new_name))


def backwards(apps, schema_editor):
    """The indexes as 0001 made them: the plain one under its old name, and ``_like``."""
    model = apps.get_model("storage_guard", "SaveAttempt")
    for column, new_name in INDEXES:
        schema_editor.remove_index(model, models.Index(fields=[column], name=new_name))
        field = model._meta.get_field(column).clone()
        field.set_attributes_from_name(column)
        field.db_index = True
        schema_editor.execute(schema_editor._create_index_sql(model, fields=[field]))
        like = getattr(schema_editor, "_create_like_index_sql", None)  # PostgreSQL only
        if like is not None and (sql := like(model, field)) is not None:
            schema_editor.execute(sql)


class Migration(migrations.Migration):

    dependencies = [
        ("storage_guard", "0002_attention_cancelled_storage_spec"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards)],
            state_operations=[
                migrations.AlterField(
                    model_name="saveattempt",
                    name="sha256",
                    field=models.CharField(blank=True, max_length=64),
                ),
                migrations.AlterField(
                    model_name="saveattempt",
                    name="request_id",
                    field=models.CharField(blank=True, max_length=128),
                ),
                migrations.AddIndex(
                    model_name="saveattempt",
                    index=models.Index(fields=["sha256"], name="sg_sha256"),
                ),
                migrations.AddIndex(
                    model_name="saveattempt",
                    index=models.Index(fields=["request_id"], name="sg_request_id"),
                ),
            ],
        ),
    ]
