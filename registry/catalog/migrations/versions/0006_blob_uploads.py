"""Uploads to a shared blob store in progress (gc on any replica keeps what they name).

Revision ID: 0006_blob_uploads
Revises: 0005_web_sessions
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_blob_uploads"
down_revision = "0005_web_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_uploads",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("staging_key", sa.String(1100), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_blob_uploads_sha256", "blob_uploads", ["sha256"])
    op.create_index("ix_blob_uploads_started", "blob_uploads", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_blob_uploads_started", table_name="blob_uploads")
    op.drop_index("ix_blob_uploads_sha256", table_name="blob_uploads")
    op.drop_table("blob_uploads")
