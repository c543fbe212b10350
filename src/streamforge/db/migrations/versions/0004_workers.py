"""Workers and their heartbeats; the worker and idempotency key of messages.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
    )
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(200), nullable=True))
        batch.add_column(sa.Column("worker_id", sa.String(36), nullable=True))
    op.create_index(
        "uq_messages_owner_idempotency",
        "messages",
        ["owner_id", "idempotency_key"],
        unique=True,
    )
    op.create_index("ix_messages_status", "messages", ["status"])


def downgrade() -> None:
    op.drop_index("ix_messages_status", table_name="messages")
    op.drop_index("uq_messages_owner_idempotency", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("worker_id")
        batch.drop_column("idempotency_key")
    op.drop_table("workers")
