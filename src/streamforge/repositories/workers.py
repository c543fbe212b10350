"""Data access for worker processes and the replies they are generating."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from streamforge.models import Message, MessageRole, MessageStatus, Worker
from streamforge.models.base import utcnow


async def add_worker(db: AsyncSession, worker_id: str, host: str, pid: int) -> None:
    db.add(Worker(id=worker_id, host=host, pid=pid))


async def beat(db: AsyncSession, worker_id: str) -> None:
    await db.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat_at=utcnow()))


async def remove_workers(db: AsyncSession, worker_ids: Sequence[str]) -> None:
    await db.execute(delete(Worker).where(Worker.id.in_(worker_ids)))


async def workers(db: AsyncSession) -> list[tuple[str, str, int, datetime]]:
    """(id, host, pid, last heartbeat) of every worker on record."""
    rows = await db.execute(select(Worker.id, Worker.host, Worker.pid, Worker.heartbeat_at))
    return [(row[0], row[1], row[2], row[3]) for row in rows]


async def orphaned_replies(
    db: AsyncSession, live: Sequence[str]
) -> list[tuple[str, str | None, str]]:
    """(id, stream id, text) of the replies still streaming whose worker is not ``live``."""
    rows = await db.execute(
        select(Message.id, Message.stream_id, Message.content).where(
            Message.status == MessageStatus.STREAMING.value,
            Message.role == MessageRole.ASSISTANT.value,
            or_(Message.worker_id.is_(None), Message.worker_id.not_in(live)),
        )
    )
    return [(row[0], row[1], row[2]) for row in rows]


async def store_texts(db: AsyncSession, texts: Sequence[tuple[str, str]]) -> None:
    """Store the text so far of each (reply id, text), in one statement; only while the reply
    is still streaming, never over one that has since been finished."""
    table = cast(Table, Message.__table__)
    await db.execute(
        update(table)
        .where(
            table.c.id == bindparam("message_id"),
            table.c.status == MessageStatus.STREAMING.value,
        )
        .values(content=bindparam("text")),
        [{"message_id": message_id, "text": text} for message_id, text in texts],
    )


async def interrupt_reply(
    db: AsyncSession, message_id: str, text: str, error: dict[str, object]
) -> bool:
    """Mark a reply that is still streaming interrupted, with its text; False if it was not
    streaming any more."""
    result = await db.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == MessageStatus.STREAMING.value)
        .values(
            status=MessageStatus.INTERRUPTED.value,
            content=text,
            error=error,
            updated_at=utcnow(),
        )
    )
    return getattr(result, "rowcount", 1) != 0
