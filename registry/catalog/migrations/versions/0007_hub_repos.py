"""The Hub server's repositories in the database, and the signing secrets every replica shares
(stateless ``loradex serve`` replicas).

Revision ID: 0007_hub_repos
Revises: 0006_blob_uploads
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_hub_repos"
down_revision = "0006_blob_uploads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hub_repos",
        sa.Column("repo_id", sa.String(200), primary_key=True),
        sa.Column("namespace", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("meta", sa.Text, nullable=False),
    )
    op.create_table(
        "hub_commits",
        sa.Column("repo_id", sa.String(200), primary_key=True),
        sa.Column("oid", sa.String(40), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
    )
    op.create_table(
        "hub_refs",
        sa.Column("repo_id", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("target", sa.String(40), nullable=False),
        sa.Column("message", sa.Text, nullable=False, server_default=""),
    )
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
    op.drop_table("hub_refs")
    op.drop_table("hub_commits")
    op.drop_table("hub_repos")
