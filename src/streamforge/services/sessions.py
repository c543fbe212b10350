"""Sessions and their messages: create, list, read, rename, delete.

Deleting a session stops its replies still being generated, on whichever worker: their
streams end like a cancel (``done`` with status ``cancelled``, reason ``session_deleted``).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession

from streamforge.db.database import Database
from streamforge.db.ids import is_valid_id
from streamforge.errors import NotFound
from streamforge.models import ChatSession, Message
from streamforge.repositories import sessions as repo
from streamforge.services.pages import Page
from streamforge.services.streams import StreamManager
from streamforge.streaming.log import EventLogUnavailable

logger = logging.getLogger(__name__)

# How long a delete waits for the generations it stopped to end.
_STOP_WAIT = 10.0


def _not_found(session_id: str) -> NotFound:
    return NotFound(f"session {session_id!r} not found")


class SessionService:
    def __init__(self, database: Database, streams: StreamManager | None = None) -> None:
        self.database = database
        self.streams = streams

    async def create(self, owner_id: str, title: str | None) -> ChatSession:
        async with self.database.write() as db:
            return await repo.create_session(db, owner_id, title)

    async def list(self, owner_id: str, *, limit: int, offset: int) -> Page[ChatSession]:
        async with self.database.read() as db:
            rows, total = await repo.list_sessions(db, owner_id, limit=limit, offset=offset)
        return Page(items=list(rows), total=total, limit=limit, offset=offset)

    async def get(self, owner_id: str, session_id: str) -> ChatSession:
        async with self.database.read() as db:
            return await self._load(db, owner_id, session_id)

    async def rename(self, owner_id: str, session_id: str, title: str) -> ChatSession:
        async with self.database.write() as db:
            session = await self._load(db, owner_id, session_id)
            session.title = title
            await db.flush()
            return session

    async def delete(self, owner_id: str, session_id: str) -> None:
        if not is_valid_id(session_id):
            raise _not_found(session_id)
        async with self.database.write() as db:
            streaming = await repo.delete_session(db, owner_id, session_id)
            if streaming is None:
                raise _not_found(session_id)
        # Once the rows are gone, so that no turn started meanwhile escapes; the end of a
        # stopped reply then updates nothing.
        if streaming and self.streams is not None:
            await asyncio.gather(*(self._stop(owner_id, s) for s in streaming))

    async def _stop(self, owner_id: str, stream_id: str) -> None:
        assert self.streams is not None
        try:
            reader = await self.streams.log.open(stream_id)
            if reader is None or reader.owner_id != owner_id:
                return
            await self.streams.cancel(reader, "session_deleted", timeout=_STOP_WAIT)
        except EventLogUnavailable as exc:
            # The rows are gone already; the generation, unreachable, runs to its end.
            logger.warning("could not stop stream %s of a deleted session: %s", stream_id, exc)

    async def messages(
        self, owner_id: str, session_id: str, *, limit: int, offset: int
    ) -> Page[Message]:
        async with self.database.read() as db:
            await self._load(db, owner_id, session_id)
            rows, total = await repo.list_messages(
                db, owner_id, session_id, limit=limit, offset=offset
            )
        return Page(items=list(rows), total=total, limit=limit, offset=offset)

    @staticmethod
    async def _load(db: AsyncSession, owner_id: str, session_id: str) -> ChatSession:
        # A malformed id names no session: the same 404 as a missing or foreign one.
        if not is_valid_id(session_id):
            raise _not_found(session_id)
        session = await repo.get_session(db, owner_id, session_id)
        if session is None:
            raise _not_found(session_id)
        return session
