"""Migration operations shared by the apps."""

from __future__ import annotations

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db.migrations.operations import AddIndex


class AddIndexWithoutLocking(AddIndexConcurrently):
    """CREATE INDEX CONCURRENTLY on PostgreSQL, so a big table takes writes while the index is built; a plain
    AddIndex elsewhere (SQLite has no concurrent build and a local database is small).

    Its migration must set `atomic = False` (PostgreSQL cannot build an index concurrently in a
    transaction). A concurrent build that fails (a deadlock, a statement timeout, the migration
    interrupted) leaves an invalid index of that name behind, which PostgreSQL keeps updating but never
    reads: migrating again drops it first, so the build is simply made again. The operation needs no
    "django.contrib.postgres" in INSTALLED_APPS (it registers no field, lookup or type handler);
    importing it only needs psycopg, which requirements.txt installs everywhere.
    """

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            drop_invalid_index(schema_editor, self.index.name)
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


def drop_invalid_index(schema_editor, name: str) -> None:
    """DROP INDEX CONCURRENTLY the index `name` if an earlier concurrent build left it invalid (PostgreSQL)."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_index JOIN pg_class ON pg_class.oid = pg_index.indexrelid "
            "WHERE pg_class.relname = %s AND pg_class.relnamespace = current_schema()::regnamespace "
            "AND NOT pg_index.indisvalid",
            [name],
        )
        invalid = cursor.fetchone() is not None
    if invalid:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(name)}")
