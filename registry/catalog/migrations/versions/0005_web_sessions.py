"""Web app sessions: a signed-in browser's session, stored by the sha256 of its id only; and
the two look-ups the web app's image routes make per request: prompt records by image
(``prompt_records.image_sha256``) and versions by preview (``extra.preview_sha256``, an
expression index on SQLite and PostgreSQL).

Revision ID: 0005_web_sessions
Revises: 0004_search_index
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_web_sessions"
down_revision = "0004_search_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("session_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("credential_check", sa.String(64), nullable=False),
        sa.Column("token_id", sa.Integer, nullable=True),
        sa.Column("token_name", sa.String(100), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(100), nullable=True),
        sa.Column("csrf_secret", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_web_sessions_expires", "web_sessions", ["expires_at"])
    op.create_index("ix_prompt_records_image_sha256", "prompt_records", ["image_sha256"])
    expression = PREVIEW_EXPRESSIONS.get(op.get_bind().dialect.name)
    if expression is not None:
        op.execute(f"CREATE INDEX ix_versions_preview_sha256 ON versions (({expression}))")


# The same text as registry/server/web/images.py's query (an expression index is used only for
# the expression it was made on).
PREVIEW_EXPRESSIONS = {"sqlite": "json_extract(extra, '$.preview_sha256')",
                       "postgresql": "extra ->> 'preview_sha256'"}


def downgrade() -> None:
    if op.get_bind().dialect.name in PREVIEW_EXPRESSIONS:
        op.execute("DROP INDEX ix_versions_preview_sha256")
    op.drop_index("ix_prompt_records_image_sha256", table_name="prompt_records")
    op.drop_index("ix_web_sessions_expires", table_name="web_sessions")
    op.drop_table("web_sessions")
