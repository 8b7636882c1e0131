"""Migration operations shared by the apps."""

from __future__ import annotations

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db.migrations.operations import AddIndex


class AddIndexWithoutLocking(AddIndexConcurrently):
    """CREATE INDEX CONCURRENTLY on PostgreSQL, so a big table takes writes while the index is built; a plain
    AddIndex elsewhere (SQLite has no concurrent build and a local database is small).

    Its migration must set `atomic = False` (PostgreSQL cannot build an index concurrently in a
    transaction). If a concurrent build fails it leaves an invalid index behind: drop it before migrating again.
    The operation needs no "django.contrib.postgres" in INSTALLED_APPS (it registers no field, lookup or type
    handler); importing it only needs psycopg, which requirements.txt installs everywhere.
    """

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)
