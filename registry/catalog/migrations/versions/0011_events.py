"""Events and promotion requests (issue 22).

``webhooks``: where events go (url, the event names it subscribed to, the signing secret — kept
because every delivery is signed with it — and a lease so that one delivery worker at a time
sends a hook's events, in order). ``outbox``: one row per catalog change others care about,
written in the same transaction as the change (its ``delivery_id`` is stable across retries).
``webhook_deliveries``: one row per (hook, outbox row) with its status, attempts and back-off.
``alias_protections``: aliases that move only through an approved promotion request (and who may
approve); ``promotion_requests``: the requests, open or decided.

Revision ID: 0011_events
Revises: 0010_datasets
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_events"
down_revision = "0010_datasets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("delivery_id", sa.String(36), nullable=False, unique=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("hook_id", sa.Integer, sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("outbox_id", sa.Integer, sa.ForeignKey("outbox.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("hook_id", "outbox_id", name="uq_webhook_deliveries_hook_outbox"),
    )
    op.create_index("ix_webhook_deliveries_hook_status", "webhook_deliveries", ["hook_id", "status", "outbox_id"])
    op.create_table(
        "alias_protections",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id"), nullable=False),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("approvers", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.UniqueConstraint("adapter_id", "alias", name="uq_alias_protections_adapter_alias"),
    )
    op.create_table(
        "promotion_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id"), nullable=False),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sa.Text, nullable=False),
    )
    op.create_index("ix_promotion_requests_state", "promotion_requests", ["state", "id"])


def downgrade() -> None:
    op.drop_index("ix_promotion_requests_state", table_name="promotion_requests")
    op.drop_table("promotion_requests")
    op.drop_table("alias_protections")
    op.drop_index("ix_webhook_deliveries_hook_status", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("outbox")
    op.drop_table("webhooks")
