from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from streamforge.db.types import UTCDateTime
from streamforge.models.base import Base, IdMixin, OwnedMixin, TimestampMixin, utcnow


class MessageRole(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class MessageStatus(enum.StrEnum):
    STREAMING = "streaming"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


class ChatSession(IdMixin, OwnedMixin, TimestampMixin, Base):
    __tablename__ = "chat_sessions"
    __table_args__ = (Index("ix_chat_sessions_owner_created", "owner_id", "created_at"),)

    title: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The template version this session renders, fixed at its first turn.
    template_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    template_variables: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    # Rolling summary of the turns that no longer fit the history budget, and the id of the
    # newest message it covers.
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary_until: Mapped[str | None] = mapped_column(String(36), nullable=True)


class Message(IdMixin, OwnedMixin, TimestampMixin, Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_session_id_id", "session_id", "id"),
        # A retried POST /chat finds its first attempt by key (user messages carry it).
        Index("uq_messages_owner_idempotency", "owner_id", "idempotency_key", unique=True),
        # The startup pass looks for replies left ``streaming``.
        Index("ix_messages_status", "status"),
    )

    session_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("chat_sessions.id", ondelete="CASCADE")
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    stream_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The retrieved passages the answer was given, as sent in the stream's ``sources`` event.
    citations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The worker generating a reply while it is ``streaming``: if that worker dies, the others
    # mark the reply interrupted.
    worker_id: Mapped[str | None] = mapped_column(String(36), nullable=True)


class Worker(Base):
    """A server process that is (or was) running, and when it last said so."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
