"""``loradex serve`` API tokens (stored as sha256 only) and the audit log of writes.

Revision ID: 0003_serve_tokens
Revises: 0002_alias_policies
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_serve_tokens"
down_revision = "0002_alias_policies"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "serve_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "serve_audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_id", sa.Integer, nullable=True),
        sa.Column("token_name", sa.String(100), nullable=False),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("path", sa.String(2000), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("client", sa.String(100), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("serve_audit")
    op.drop_table("serve_tokens")
