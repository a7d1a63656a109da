"""Alias policies: what a version needs before an alias (e.g. production) may point at it.

Revision ID: 0002_alias_policies
Revises: 0001_initial
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_alias_policies"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alias_policies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id"), nullable=False),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("require_pass", sa.Boolean, nullable=False),
        sa.Column("minimums", sa.JSON, nullable=False),
        sa.Column("maximums", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.UniqueConstraint("adapter_id", "alias", name="uq_alias_policies_adapter_alias"),
    )


def downgrade() -> None:
    op.drop_table("alias_policies")
