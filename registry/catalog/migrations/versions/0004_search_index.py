"""The search index (``loradex search``, see ``registry/catalog/search_index.py``): per live
version its words (``search_versions``), per adapter a summary (``search_adapters``), its tags
(``search_tags``) and its full-text document: an FTS5 table ``search_fts`` (rowid = adapter id)
on SQLite, ``search_docs`` with a weighted ``tsvector`` and a GIN index (plus ``head``, the
part that is ranked) on PostgreSQL. Filled
here for the catalog's existing rows.

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
    TS = sa.DateTime(timezone=True)
    op.create_table(
        "search_versions",
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), primary_key=True, autoincrement=False),
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id"), nullable=False),
        sa.Column("trigger_key", sa.Text, nullable=False),
        *(sa.Column(name, sa.Text, nullable=False) for name in ("triggers", "metadata", "message", "prompts")),
    )
    op.create_index("ix_search_versions_adapter", "search_versions", ["adapter_id"])
    op.create_table(
        "search_adapters",
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id"), primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("base", sa.String(32), nullable=False),
        sa.Column("latest_version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("live_versions", sa.Integer, nullable=False),
    )
    op.create_index("ix_search_adapters_kind_base", "search_adapters", ["kind", "base"])
    op.create_index("ix_search_adapters_updated", "search_adapters", ["updated_at"])
    op.create_table(
        "search_tags",
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id"), primary_key=True, autoincrement=False),
        sa.Column("tag", sa.String(200), primary_key=True),
    )
    op.create_index("ix_search_tags_tag", "search_tags", ["tag"])
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        op.execute("CREATE TABLE search_docs (adapter_id integer PRIMARY KEY REFERENCES adapters(id), "
                   "document tsvector NOT NULL, head tsvector NOT NULL)")
        op.execute("CREATE INDEX ix_search_docs_document ON search_docs USING GIN (document)")
    else:
        op.execute("CREATE VIRTUAL TABLE search_fts USING fts5(" + ", ".join(FIELDS)
                   + ", tokenize = 'unicode61 remove_diacritics 2')")
    from loradex.registry.catalog.search_index import rebuild

    rebuild(conn)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS search_docs" if op.get_bind().dialect.name == "postgresql"
               else "DROP TABLE IF EXISTS search_fts")
    op.drop_index("ix_search_tags_tag", "search_tags")
    op.drop_table("search_tags")
    op.drop_index("ix_search_adapters_updated", "search_adapters")
    op.drop_index("ix_search_adapters_kind_base", "search_adapters")
    op.drop_table("search_adapters")
    op.drop_index("ix_search_versions_adapter", "search_versions")
    op.drop_table("search_versions")
