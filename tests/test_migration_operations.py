"""Indexes added to big tables on PostgreSQL are built without a long lock, and a failed build does not block the next."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader

INDEX = "flows_flowr_company_5532ca_idx"  # flows 0014: the run log's (company, finished_at) index

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql",
                                reason="concurrent index builds and invalid indexes are PostgreSQL's")


def index_state() -> bool | None:
    """Whether the index is valid; None when there is none."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_index.indisvalid FROM pg_index JOIN pg_class ON pg_class.oid = pg_index.indexrelid "
                       "WHERE pg_class.relname = %s", [INDEX])
        row = cursor.fetchone()
    return None if row is None else row[0]


@pytest.mark.django_db(transaction=True)
def test_migrating_again_after_a_failed_concurrent_build_replaces_the_invalid_index():
    assert index_state() is True
    # What an interrupted CREATE INDEX CONCURRENTLY leaves: an index of that name, marked invalid.
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = '{INDEX}'::regclass")
    assert index_state() is False
    loader = MigrationLoader(connection)
    before = loader.project_state(("flows", "0013_run_deferrals"), at_end=True)
    after = loader.project_state(("flows", "0014_run_retention_index"), at_end=True)
    (operation,) = loader.get_migration("flows", "0014_run_retention_index").operations

    with connection.schema_editor(atomic=False) as editor:
        operation.database_forwards("flows", editor, before, after)

    assert index_state() is True
