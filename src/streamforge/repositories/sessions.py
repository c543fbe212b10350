"""Data access for chat sessions and their messages. Every query is filtered by owner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from streamforge.models import ChatSession, Message, MessageRole, MessageStatus
from streamforge.models.base import utcnow


async def create_session(
    db: AsyncSession, owner_id: str, title: str | None, session_id: str | None = None
) -> ChatSession:
    session = ChatSession(owner_id=owner_id, title=title)
    if session_id is not None:
        session.id = session_id
    db.add(session)
    await db.flush()
    return session


async def get_session(db: AsyncSession, owner_id: str, session_id: str) -> ChatSession | None:
    result = await db.execute(
        select(ChatSession).where(ChatSession.id == session_id, ChatSession.owner_id == owner_id)
    )
    return result.scalar_one_or_none()


async def list_sessions(
    db: AsyncSession, owner_id: str, *, limit: int, offset: int
) -> tuple[Sequence[ChatSession], int]:
    total = await db.scalar(
        select(func.count()).select_from(ChatSession).where(ChatSession.owner_id == owner_id)
    )
    result = await db.execute(
        select(ChatSession)
        .where(ChatSession.owner_id == owner_id)
        .order_by(ChatSession.created_at.desc(), ChatSession.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return result.scalars().all(), int(total or 0)


async def delete_session(db: AsyncSession, owner_id: str, session_id: str) -> list[str] | None:
    """Delete a session and its messages. Returns the streams of the replies it deleted while
    they were still being generated, or None when there was no such session."""
    # Messages go explicitly too: SQLite enforces ON DELETE CASCADE only with foreign keys on.
    deleted = await db.execute(
        delete(Message)
        .where(Message.session_id == session_id, Message.owner_id == owner_id)
        .returning(Message.stream_id, Message.role, Message.status)
    )
    streaming = [
        stream_id
        for stream_id, role, status in deleted.all()
        if stream_id is not None
        and role == MessageRole.ASSISTANT.value
        and status == MessageStatus.STREAMING.value
    ]
    result = await db.execute(
        delete(ChatSession).where(ChatSession.id == session_id, ChatSession.owner_id == owner_id)
    )
    return streaming if getattr(result, "rowcount", 0) else None


async def list_messages(
    db: AsyncSession, owner_id: str, session_id: str, *, limit: int, offset: int
) -> tuple[Sequence[Message], int]:
    condition = (Message.session_id == session_id, Message.owner_id == owner_id)
    total = await db.scalar(select(func.count()).select_from(Message).where(*condition))
    result = await db.execute(
        select(Message).where(*condition).order_by(Message.id).limit(limit).offset(offset)
    )
    return result.scalars().all(), int(total or 0)


async def history(db: AsyncSession, owner_id: str, session_id: str) -> Sequence[Message]:
    """The turns a provider should see: every earlier message that has text, oldest first."""
    result = await db.execute(
        select(Message)
        .where(
            Message.session_id == session_id,
            Message.owner_id == owner_id,
            Message.content != "",
        )
        .order_by(Message.id)
    )
    return result.scalars().all()


async def add_message(db: AsyncSession, **fields: Any) -> Message:
    message = Message(**fields)
    db.add(message)
    await db.flush()
    return message


async def finish_message(db: AsyncSession, message_id: str, **fields: Any) -> None:
    await db.execute(
        update(Message).where(Message.id == message_id).values(updated_at=utcnow(), **fields)
    )


async def touch_session(db: AsyncSession, session_id: str) -> None:
    await db.execute(
        update(ChatSession).where(ChatSession.id == session_id).values(updated_at=utcnow())
    )


async def set_summary(
    db: AsyncSession, owner_id: str, session_id: str, summary: str | None, until: str
) -> None:
    await db.execute(
        update(ChatSession)
        .where(ChatSession.id == session_id, ChatSession.owner_id == owner_id)
        .values(summary=summary, summary_until=until)
    )


async def set_citations(db: AsyncSession, message_id: str, citations: list[dict[str, Any]]) -> None:
    await db.execute(update(Message).where(Message.id == message_id).values(citations=citations))


async def by_idempotency_key(db: AsyncSession, owner_id: str, key: str) -> Message | None:
    """The user message a POST /chat with this key stored."""
    result = await db.execute(
        select(Message).where(
            Message.owner_id == owner_id,
            Message.idempotency_key == key,
            Message.role == MessageRole.USER.value,
        )
    )
    return result.scalars().first()


async def reply_of(db: AsyncSession, owner_id: str, stream_id: str) -> Message | None:
    """The assistant message generated by a stream."""
    result = await db.execute(
        select(Message).where(
            Message.owner_id == owner_id,
            Message.stream_id == stream_id,
            Message.role == MessageRole.ASSISTANT.value,
        )
    )
    return result.scalars().first()


async def last_reply(db: AsyncSession, owner_id: str, session_id: str) -> Message | None:
    """The session's newest assistant message."""
    result = await db.execute(
        select(Message)
        .where(
            Message.session_id == session_id,
            Message.owner_id == owner_id,
            Message.role == MessageRole.ASSISTANT.value,
        )
        .order_by(Message.id.desc())
        .limit(1)
    )
    return result.scalars().first()


async def delete_turn(db: AsyncSession, owner_id: str, stream_id: str) -> None:
    """Delete one turn: the user message and the reply its stream generated."""
    await db.execute(
        delete(Message).where(Message.owner_id == owner_id, Message.stream_id == stream_id)
    )
