"""Prompt templates (versioned); a session's template version and rolling summary.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prompt_templates",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("system_prompt", sa.Text(), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prompt_templates"),
        sa.UniqueConstraint("owner_id", "name", "version", name="uq_prompt_templates_version"),
    )
    op.create_index("ix_prompt_templates_owner_id", "prompt_templates", ["owner_id"])
    op.create_index("ix_prompt_templates_owner_name", "prompt_templates", ["owner_id", "name"])
    with op.batch_alter_table("chat_sessions") as batch:
        batch.add_column(sa.Column("template_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("template_variables", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("summary", sa.Text(), nullable=True))
        batch.add_column(sa.Column("summary_until", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chat_sessions") as batch:
        batch.drop_column("summary_until")
        batch.drop_column("summary")
        batch.drop_column("template_variables")
        batch.drop_column("template_id")
    op.drop_table("prompt_templates")
