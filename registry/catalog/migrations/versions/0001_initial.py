"""Initial catalog schema: adapters, versions, aliases, events, lineage, records, cards,
remotes, sync state, import cache.

Revision ID: 0001_initial
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("base", sa.String(32), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id"), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("sort_key", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("live_sha256", sa.String(64), nullable=True),
        sa.Column("autov1", sa.String(16), nullable=True),
        sa.Column("autov2", sa.String(16), nullable=False),
        sa.Column("autov3", sa.String(64), nullable=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("file_format", sa.String(64), nullable=False),
        sa.Column("file_name", sa.String(500), nullable=False),
        sa.Column("probe", sa.JSON, nullable=False),
        sa.Column("file_metadata", sa.JSON, nullable=False),
        sa.Column("trigger_words", sa.JSON, nullable=False),
        sa.Column("extra", sa.JSON, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("deleted_at", TS, nullable=True),
        sa.Column("deleted_by", sa.String(200), nullable=True),
        sa.UniqueConstraint("adapter_id", "version", name="uq_versions_adapter_version"),
        sa.UniqueConstraint("adapter_id", "live_sha256", name="uq_versions_adapter_live_blob"),
    )
    op.create_index("ix_versions_adapter_sort", "versions", ["adapter_id", "sort_key"])
    op.create_index("ix_versions_sha256", "versions", ["sha256"])
    op.create_index("ix_versions_autov2", "versions", ["autov2"])
    op.create_index("ix_versions_autov3", "versions", ["autov3"])
    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.UniqueConstraint("adapter_id", "name", name="uq_aliases_adapter_name"),
    )
    op.create_table(
        "alias_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id"), nullable=False),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=True),
        sa.Column("to_version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_alias_events_adapter_alias", "alias_events", ["adapter_id", "alias", "id"])
    op.create_table(
        "lineage",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("child_version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("parent_version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=True),
        sa.Column("parent_ref", sa.String(500), nullable=True),
        sa.Column("relation", sa.String(32), nullable=False),
        sa.Column("recipe", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_lineage_child", "lineage", ["child_version_id"])
    op.create_table(
        "prompt_records",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("record", sa.JSON, nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "prompt_record_versions",
        sa.Column("record_id", sa.String(40), sa.ForeignKey("prompt_records.id"), primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), primary_key=True),
    )
    op.create_table(
        "eval_cards",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("card", sa.JSON, nullable=False),
        sa.Column("passed", sa.Boolean, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "remotes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("url", sa.String(1000), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "sync_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("remote_id", sa.Integer, sa.ForeignKey("remotes.id"), nullable=False),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("remote_ref", sa.String(1000), nullable=False),
        sa.Column("remote_oid", sa.String(128), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.UniqueConstraint("remote_id", "version_id", "direction", name="uq_sync_remote_version_dir"),
    )
    op.create_table(
        "file_cache",
        sa.Column("path", sa.String(2000), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("inode", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("outcome", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "file_cache", "sync_state", "remotes", "eval_cards", "prompt_record_versions",
        "prompt_records", "lineage", "alias_events", "aliases", "versions", "adapters",
    ):
        op.drop_table(table)
