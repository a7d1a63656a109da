"""The search index (``loradex search``): ``search_docs`` (one row per live version),
``search_adapters`` (one per adapter with live versions), and the full-text part per database:
an FTS5 table ``search_fts`` on SQLite, a weighted ``tsvector`` column with a GIN index on
PostgreSQL. Filled here for the catalog's existing rows.

Revision ID: 0004_search_index
Revises: 0003_serve_tokens
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_search_index"
down_revision = "0003_serve_tokens"
branch_labels = None
depends_on = None

FIELDS = ("name", "triggers", "description", "tags", "metadata", "message", "prompts")


def upgrade() -> None:
    op.create_table(
        "search_docs",
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), primary_key=True, autoincrement=False),
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id"), nullable=False),
        sa.Column("trigger_key", sa.Text, nullable=False),
    )
    op.create_index("ix_search_docs_adapter", "search_docs", ["adapter_id"])
    op.create_table(
        "search_adapters",
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id"), primary_key=True, autoincrement=False),
        sa.Column("latest_version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("live_versions", sa.Integer, nullable=False),
    )
    op.create_index("ix_search_adapters_updated", "search_adapters", ["updated_at"])
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        op.execute("ALTER TABLE search_docs ADD COLUMN document tsvector NOT NULL")
        op.execute("CREATE INDEX ix_search_docs_document ON search_docs USING GIN (document)")
    else:
        op.execute("CREATE VIRTUAL TABLE search_fts USING fts5(" + ", ".join(FIELDS)
                   + ", tokenize = 'unicode61 remove_diacritics 2')")
    from loradex.registry.catalog.search_index import rebuild

    rebuild(conn)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TABLE IF EXISTS search_fts")
    op.drop_index("ix_search_adapters_updated", "search_adapters")
    op.drop_table("search_adapters")
    op.drop_index("ix_search_docs_adapter", "search_docs")
    op.drop_table("search_docs")
