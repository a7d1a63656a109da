"""Alembic: an empty database migrates to head and has the schema the ORM expects."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, inspect

from loradex.registry.catalog import Catalog
from loradex.registry.db_schema import Base


def test_empty_database_migrates_to_head(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    catalog = Catalog(tmp_path, db_url=url)
    assert catalog.schema_revision() == catalog.head_revision()
    insp = inspect(create_engine(url))
    for table in Base.metadata.sorted_tables:
        assert insp.has_table(table.name), table.name
        actual = {c["name"] for c in insp.get_columns(table.name)}
        expected = {c.name for c in table.columns}
        assert actual == expected, (table.name, actual ^ expected)
    uniques = {u["name"] for u in insp.get_unique_constraints("versions")}
    assert {"uq_versions_adapter_version", "uq_versions_adapter_live_blob"} <= uniques
    # running it again is a no-op
    Catalog(tmp_path, db_url=url)
    assert catalog.schema_revision() == catalog.head_revision()



@pytest.mark.postgres
def test_first_use_migration_waits_for_the_one_in_progress_on_postgres(tmp_path, pg_url):
    """PostgreSQL runs DDL under MVCC, so two first-use processes could both try
    ``CREATE TABLE alembic_version`` (seen in CI as DuplicateTable). Migrations take a
    transaction-scoped advisory lock: while another session holds it, a migration waits and
    creates nothing; once it is released the migration completes."""
    from loradex.registry.catalog import _MIGRATION_LOCK_KEY

    holder = create_engine(pg_url).connect()
    holder.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
    outcome: list[str] = []
    worker = threading.Thread(target=lambda: (Catalog(tmp_path, db_url=pg_url), outcome.append("done")))
    worker.start()
    worker.join(timeout=3)
    assert worker.is_alive() and not outcome, "the migration did not wait for the advisory lock"
    assert not inspect(create_engine(pg_url)).has_table("alembic_version")
    holder.rollback()  # releases the lock
    worker.join(timeout=60)
    assert outcome == ["done"]
    holder.close()
    catalog = Catalog(tmp_path, db_url=pg_url)
    assert catalog.schema_revision() == catalog.head_revision()
