from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from streamforge.db.types import UTCDateTime
from streamforge.models.base import Base, IdMixin, OwnedMixin, TimestampMixin


class PromptTemplate(IdMixin, OwnedMixin, TimestampMixin, Base):
    """One version of a named template. An update adds a row; rows are never rewritten, so a
    session that used version 1 keeps rendering version 1."""

    __tablename__ = "prompt_templates"
    __table_args__ = (
        UniqueConstraint("owner_id", "name", "version", name="uq_prompt_templates_version"),
        Index("ix_prompt_templates_owner_name", "owner_id", "name"),
    )

    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    system_prompt: Mapped[str] = mapped_column(Text)
    variables: Mapped[list[str]] = mapped_column(JSON, default=list)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
