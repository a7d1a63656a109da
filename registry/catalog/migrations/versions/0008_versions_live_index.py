"""A partial covering index for the listing of adapters (``loradex list``, the light reader's
``list_adapters`` and ``Catalog.list_adapters``): each adapter's newest live version and its
count of live versions, read from the index alone instead of every version row (the query reads
``deleted_at``, ``version`` and ``size`` of all rows otherwise; bench/RESULTS.md, "Read commands
as whole processes").

Revision ID: 0008_versions_live_index
Revises: 0007_hub_repos
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_versions_live_index"
down_revision = "0007_hub_repos"
branch_labels = None
depends_on = None

LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    op.create_index("ix_versions_live_latest", "versions", ["adapter_id", "sort_key", "deleted_at", "version", "size"],
                    sqlite_where=LIVE, postgresql_where=LIVE)


def downgrade() -> None:
    op.drop_index("ix_versions_live_latest", table_name="versions")
