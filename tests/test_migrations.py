"""Alembic: an empty database migrates to head and has the schema the ORM expects."""

from __future__ import annotations

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
