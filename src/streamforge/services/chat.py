"""Chat orchestration: store the turn, start generation, record how it ended.

The user message and a ``streaming`` assistant message are committed before generation starts,
so nothing the server acknowledged can be lost. The producer then streams the provider's
deltas into the event log and, however it ends (completed, cancelled, interrupted, failed),
saves exactly the text it logged. Database sessions are opened for each write and closed
again: none is held for the length of a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from streamforge.chains.core.llm_setup import ProviderRegistry
from streamforge.chains.providers.base import (
    ChatTurn,
    GenerationRequest,
    Provider,
    ProviderError,
    Usage,
)
from streamforge.config.settings import Settings
from streamforge.db.ids import is_valid_id, new_id
from streamforge.errors import NotFound, ValidationFailed
from streamforge.models import MessageRole, MessageStatus
from streamforge.repositories import sessions as repo
from streamforge.schemas.chat import ChatRequest
from streamforge.services.streams import StreamManager, StreamRun
from streamforge.streaming.events import EventType, LineBreakNormaliser

logger = logging.getLogger(__name__)

_FINISH_REASON = {
    MessageStatus.COMPLETED: "stop",
    MessageStatus.CANCELLED: "cancelled",
    MessageStatus.INTERRUPTED: "interrupted",
    MessageStatus.FAILED: "error",
}


@dataclass(frozen=True, slots=True)
class Turn:
    """What a started chat turn is known by."""

    session_id: str
    stream_id: str
    user_message_id: str
    assistant_message_id: str
    run: StreamRun


class ChatService:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        providers: ProviderRegistry,
        streams: StreamManager,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.providers = providers
        self.streams = streams

    async def start(self, owner_id: str, request: ChatRequest) -> Turn:
        limit = self.settings.limits.max_message_chars
        if len(request.message) > limit:
            raise ValidationFailed(f"message is longer than {limit} characters")
        if request.session_id is not None and not is_valid_id(request.session_id):
            raise ValidationFailed("session_id is not a valid session id")
        provider = self.providers.get(request.provider)

        stream_id = new_id()
        async with self.sessionmaker.begin() as db:
            if request.session_id is None:
                session = await repo.create_session(db, owner_id, _title_from(request.message))
                earlier: list[ChatTurn] = []
            else:
                found = await repo.get_session(db, owner_id, request.session_id)
                if found is None:
                    raise NotFound(f"session {request.session_id!r} not found")
                session = found
                earlier = [
                    ChatTurn(m.role, m.content)
                    for m in await repo.history(db, owner_id, session.id)
                ]
                await repo.touch_session(db, session.id)
            user = await repo.add_message(
                db,
                owner_id=owner_id,
                session_id=session.id,
                role=MessageRole.USER,
                content=request.message,
                status=MessageStatus.COMPLETED,
                stream_id=stream_id,
            )
            assistant = await repo.add_message(
                db,
                owner_id=owner_id,
                session_id=session.id,
                role=MessageRole.ASSISTANT,
                content="",
                status=MessageStatus.STREAMING,
                provider=provider.name,
                model=request.model,
                stream_id=stream_id,
            )
            session_id, user_id, assistant_id = session.id, user.id, assistant.id

        generation = GenerationRequest(
            messages=[*earlier, ChatTurn(MessageRole.USER, request.message)],
            model=request.model,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
        )
        announcement = {
            "session_id": session_id,
            "stream_id": stream_id,
            "user_message_id": user_id,
            "assistant_message_id": assistant_id,
            "provider": provider.name,
            "model": request.model,
        }

        async def produce(run: StreamRun) -> None:
            await self._produce(run, provider, generation, assistant_id)

        run = self.streams.start(stream_id, produce)
        # Logged before the producer task first runs, so ``session`` is always event 1.
        run.buffer.append(EventType.SESSION, announcement)
        return Turn(session_id, stream_id, user_id, assistant_id, run)

    async def _produce(
        self,
        run: StreamRun,
        provider: Provider,
        request: GenerationRequest,
        message_id: str,
    ) -> None:
        buffer = run.buffer
        started = time.perf_counter()
        first_token_at: float | None = None
        parts: list[str] = []
        usage: Usage | None = None
        error: dict[str, Any] | None = None
        status = MessageStatus.FAILED
        normaliser = LineBreakNormaliser()
        try:
            async with contextlib.aclosing(provider.stream(request)) as chunks:
                async for chunk in chunks:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    text = normaliser.feed(chunk.text) if chunk.text else ""
                    if text:
                        if first_token_at is None:
                            first_token_at = time.perf_counter()
                        parts.append(text)
                        buffer.append(EventType.MESSAGE, text)
            status = MessageStatus.COMPLETED
        except asyncio.CancelledError:
            status = run.stop_reason or MessageStatus.INTERRUPTED
            raise
        except ProviderError as exc:
            error = {"code": exc.code, "message": exc.message, "retryable": exc.retryable}
        except Exception as exc:
            logger.exception("provider %s failed", provider.name)
            error = {
                "code": "provider_error",
                "message": str(exc) or type(exc).__name__,
                "retryable": False,
            }
        finally:
            text = "".join(parts)
            if usage is None:
                usage = Usage(
                    prompt_tokens=_approx_tokens(request.messages),
                    completion_tokens=len(parts),
                )
            # Shielded: the reply must be saved even when this task is cancelled again.
            await asyncio.shield(self._save(message_id, status, text, usage, error))
            timings = {
                "total_ms": round((time.perf_counter() - started) * 1000, 3),
                "ttft_ms": (
                    round((first_token_at - started) * 1000, 3)
                    if first_token_at is not None
                    else None
                ),
            }
            if error is not None:
                buffer.append(EventType.ERROR, error)
            buffer.append(EventType.USAGE, usage.as_dict())
            buffer.append(
                EventType.DONE,
                {
                    "finish_reason": _FINISH_REASON[status],
                    "status": status.value,
                    "message_id": message_id,
                    "usage": usage.as_dict(),
                    "timings": timings,
                },
            )

    async def _save(
        self,
        message_id: str,
        status: MessageStatus,
        text: str,
        usage: Usage,
        error: dict[str, Any] | None,
    ) -> None:
        try:
            async with self.sessionmaker.begin() as db:
                await repo.finish_message(
                    db,
                    message_id,
                    status=status.value,
                    content=text,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    error=error,
                )
        except Exception:
            # The startup pass of a later release marks rows left "streaming" as interrupted.
            logger.exception("could not save assistant message %s", message_id)


def _title_from(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= 60 else line[:59].rstrip() + "…"


def _approx_tokens(turns: list[ChatTurn]) -> int:
    return sum(len(turn.content.split()) for turn in turns)
