"""Versions that hold several named files (a Wan 2.2 A14B LoRA's high-noise + low-noise pair):
one row per file, each a content-addressed blob. A single-file version has no rows here (its one
file is the version row's own sha256/size/file_format/probe); a multi-file version has one row per
file, the primary (position 0) being the blob the version row names, so every reader of one file
keeps working.

Revision ID: 0009_version_files
Revises: 0008_versions_live_index
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_version_files"
down_revision = "0008_versions_live_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "version_files",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("file_name", sa.String(500), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("file_format", sa.String(64), nullable=False),
        sa.Column("probe", sa.JSON, nullable=False),
        sa.UniqueConstraint("version_id", "name", name="uq_version_files_version_name"),
        sa.UniqueConstraint("version_id", "position", name="uq_version_files_version_position"),
    )
    op.create_index("ix_version_files_sha256", "version_files", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_version_files_sha256", table_name="version_files")
    op.drop_table("version_files")
