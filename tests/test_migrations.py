"""Alembic: an empty database migrates to head and has the schema the ORM expects; a catalog
made by every released schema revision (tests/fixtures, see tests/_catalog_fixtures.py) upgrades
to head with its data intact and usable."""

from __future__ import annotations

import hashlib
import shutil
import threading

import pytest
from sqlalchemy import create_engine, inspect

from _catalog_fixtures import BLOBS, fixture_path, revisions
from loradex.registry.catalog.store import Catalog
from loradex.registry.catalog.db_schema import Base

# SQLAlchemy's inspector cannot reflect an index on an expression (ix_versions_preview_sha256, on a
# JSON field) and says so; what this module checks (tables, columns, unique constraints) is unaffected
pytestmark = pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")


def _assert_schema_is_the_orms(url: str) -> None:
    insp = inspect(create_engine(url))
    for table in Base.metadata.sorted_tables:
        assert insp.has_table(table.name), table.name
        actual = {c["name"] for c in insp.get_columns(table.name)}
        expected = {c.name for c in table.columns}
        assert actual == expected, (table.name, actual ^ expected)
    uniques = {u["name"] for u in insp.get_unique_constraints("versions")}
    assert {"uq_versions_adapter_version", "uq_versions_adapter_live_blob"} <= uniques


def test_empty_database_migrates_to_head(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    catalog = Catalog(tmp_path, db_url=url)
    assert catalog.schema_revision() == catalog.head_revision()
    _assert_schema_is_the_orms(url)
    # running it again is a no-op
    Catalog(tmp_path, db_url=url)
    assert catalog.schema_revision() == catalog.head_revision()


RELEASED = [path.stem.removeprefix("catalog-") for path in sorted(fixture_path("x").parent.glob("catalog-*.sqlite"))]


def test_every_released_schema_revision_has_a_fixture_db():
    """When a migration is added, the revision it supersedes needs its fixture (regenerate with
    ``python tests/_catalog_fixtures.py REVISION``)."""
    *released, _head = revisions()
    assert released, "no migration chain found"
    assert set(released) <= set(RELEASED), f"missing fixture DBs for {sorted(set(released) - set(RELEASED))}"


@pytest.mark.parametrize("revision", RELEASED)
def test_fixture_db_upgrades_to_head_with_data_intact(revision, loradex_home):
    from loradex.registry.catalog.maintenance import gc, verify
    from loradex.registry.catalog.operations import MoveAlias
    from loradex.registry.catalog.records import PromotionRefused, alias_policies, get_record, latest_card
    from loradex.registry.remotes import get_remote

    shutil.copyfile(fixture_path(revision), loradex_home / "catalog.db")
    old = Catalog(loradex_home, migrate=False)
    assert old.schema_revision() == revision
    for data in BLOBS.values():  # the fixture's blobs (its rows carry their hashes)
        old.blobs.add_bytes(data)

    catalog = Catalog(loradex_home)  # migrates
    assert catalog.schema_revision() == catalog.head_revision()
    _assert_schema_is_the_orms(catalog.url)

    assert [(a.name, a.latest, a.versions, a.aliases) for a in catalog.list_adapters()] == [
        ("blend", "1.0.0", 1, {}), ("neg", "1.0.0", 1, {}),
        ("style", "1.1.0", 2, {"production": "1.1.0", "staging": "1.0.0"})]
    style = catalog.get_adapter("style")
    assert (style.kind, style.base, style.description, style.tags) == ("lora", "sd1", "watercolour style", {"team": "art"})
    assert [v.version for v in catalog.versions("style")] == ["1.0.0", "1.1.0"]
    assert [(v.version, v.deleted) for v in catalog.versions("style", include_deleted=True)] == [
        ("1.0.0", False), ("1.1.0", False), ("2.0.0", True)]
    first = catalog.resolve("style@staging")
    assert (first.version, first.trigger_words, first.message, first.created_by) == ("1.0.0", ("wtrclr",), "first cut", "alice")
    assert first.sha256 == hashlib.sha256(BLOBS["style@1.0.0"]).hexdigest()
    assert first.created_at.replace(tzinfo=None).isoformat() == "2025-01-02T09:00:00"
    assert catalog.resolve(f"sha256:{first.sha256[:12]}").version == "1.0.0"
    assert [(e.action, e.from_version, e.to_version, e.by, e.reason)
            for e in catalog.alias_history("style", "production")] == [
        ("set", None, "1.0.0", "alice", ""), ("set", "1.0.0", "1.1.0", "alice", "sharper"),
        ("rollback", "1.1.0", "1.0.0", "bob", "colour shift"), ("set", "1.0.0", "1.1.0", "alice", "fixed upstream")]
    assert [(e.child, e.parent, e.relation, e.recipe) for e in catalog.lineage("blend@1.0.0")] == [
        ("blend@1.0.0", "style@1.0.0", "merged_from", {"method": "concat", "weight": 0.7}),
        ("blend@1.0.0", "style@1.1.0", "merged_from", {"method": "concat", "weight": -0.3})]
    assert [(e.parent, e.relation) for e in catalog.lineage("neg@1.0.0")] == [("hf://someone/neg@abc123", "pulled_from")]
    card = latest_card(catalog, "style@production")
    assert (card.ref, card.passed, card.card["metrics"]["clip_score"]["value"]) == ("style@1.1.0", True, 0.31)
    assert get_record(catalog, "01234567").versions == ("style@1.1.0",)
    assert get_remote(catalog, "team").url == "http://127.0.0.1:8765/team"

    report = verify(catalog)
    assert report.ok and report.checked_blobs == len(BLOBS) and report.unreferenced == [], report.to_dict()
    assert gc(catalog).removed == []  # every fixture blob is still referenced

    # the migrated catalog takes writes, and the policy (0002 on) still gates production
    has_policy = revision != "0001_initial"
    assert [p.minimums for p in alias_policies(catalog, "style")] == ([{"clip_score": 0.25}] if has_policy else [])
    if has_policy:
        with pytest.raises(PromotionRefused):
            catalog.apply([MoveAlias("style@1.0.0", "production")])
    catalog.apply([MoveAlias("style@1.1.0", "staging", reason="after upgrade")])
    events = catalog.alias_history("style", "staging")
    assert [(e.from_version, e.to_version) for e in events] == [(None, "1.0.0"), ("1.0.0", "1.1.0")]
    assert events[-1].id == 6  # ids continue after the fixture's five events


def test_first_use_migration_waits_for_the_one_in_progress_on_postgres(tmp_path, pg_url):
    """PostgreSQL runs DDL under MVCC, so two first-use processes could both try
    ``CREATE TABLE alembic_version`` (seen in CI as DuplicateTable). Migrations take a
    transaction-scoped advisory lock: while another session holds it, a migration waits and
    creates nothing; once it is released the migration completes."""
    from loradex.registry.catalog.store import _MIGRATION_LOCK_KEY

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
