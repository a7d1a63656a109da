"""Datasets as versioned catalog objects (issue 21): ``datasets``, ``dataset_versions`` (the
manifest of image blobs + captions + per-image facts, and the ``dataset check`` report made on
add), ``dataset_aliases`` and their history ``dataset_alias_events``. A trained adapter version
names the dataset version it was trained from with a ``trained_from`` lineage edge whose
``parent_ref`` is ``dataset:NAME@X.Y.Z`` (its recipe holds the manifest sha256), so the lineage
table is unchanged.

Revision ID: 0010_datasets
Revises: 0009_version_files
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_datasets"
down_revision = "0009_version_files"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id"), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("sort_key", sa.String(128), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("training_sha256", sa.String(64), nullable=False),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("num_images", sa.Integer, nullable=False),
        sa.Column("total_bytes", sa.BigInteger, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_by", sa.String(200), nullable=True),
        sa.UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_dataset_version"),
    )
    op.create_index("ix_dataset_versions_dataset_sort", "dataset_versions", ["dataset_id", "sort_key"])
    op.create_index("ix_dataset_versions_manifest", "dataset_versions", ["manifest_sha256"])
    op.create_table(
        "dataset_aliases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("dataset_versions.id"), nullable=False),
        sa.UniqueConstraint("dataset_id", "name", name="uq_dataset_aliases_dataset_name"),
    )
    op.create_table(
        "dataset_alias_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id"), nullable=False),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_version_id", sa.Integer, sa.ForeignKey("dataset_versions.id"), nullable=True),
        sa.Column("to_version_id", sa.Integer, sa.ForeignKey("dataset_versions.id"), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_dataset_alias_events_dataset_alias", "dataset_alias_events", ["dataset_id", "alias", "id"])


def downgrade() -> None:
    op.drop_index("ix_dataset_alias_events_dataset_alias", table_name="dataset_alias_events")
    op.drop_table("dataset_alias_events")
    op.drop_table("dataset_aliases")
    op.drop_index("ix_dataset_versions_manifest", table_name="dataset_versions")
    op.drop_index("ix_dataset_versions_dataset_sort", table_name="dataset_versions")
    op.drop_table("dataset_versions")
    op.drop_table("datasets")
