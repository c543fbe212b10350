"""Chat orchestration: store the turn, start generation, record how it ended.

The user message and a ``streaming`` assistant message are committed before generation starts,
so nothing the server acknowledged can be lost. Generation then runs as the stream's producer
(``services.generation``) and, however it ends, the reply is saved with exactly the text that
was logged. Database sessions are opened for each write and closed again: none is held for the
length of a stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from streamforge.chains.providers.base import GenerationRequest, Provider
from streamforge.config.settings import Settings
from streamforge.db.database import Database
from streamforge.db.ids import is_valid_id, new_id
from streamforge.errors import Conflict, NotFound, ValidationFailed
from streamforge.models import Message, MessageRole, MessageStatus
from streamforge.repositories import sessions as repo
from streamforge.services.auth import Caller
from streamforge.services.generation import FINISH_REASON, Outcome
from streamforge.services.memory import MemoryService, SessionMemory, StoredTurn
from streamforge.services.pipeline import Grounding, Reservation, TurnPipeline
from streamforge.services.streams import StreamManager, StreamRun
from streamforge.services.templates import TemplateService
from streamforge.streaming.events import EventType
from streamforge.streaming.log import StreamReader, closed_stream

# The namespace of the session ids derived from clients' chat ids.
_CLIENT_CHATS = uuid.UUID("5f1b0e38-8c6a-4d0e-9a55-2c1f0a7d3e61")
# How long a retry waits for the first attempt's stream to appear in a shared event log.
_ATTACH_WAIT = 3.0
# How long a cancel sent to another worker waits for the stream's end.
_CANCEL_WAIT = 10.0


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """A message for a session (a new one when ``session_id`` is None), and how to answer."""

    message: str
    session_id: str | None = None
    provider: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: Sequence[str] = ()
    template: str | None = None
    variables: Mapping[str, str] | None = None
    idempotency_key: str | None = None
    grounding: Grounding | None = None
    # A client that names its own chats: a ``session_id`` that names no session of the
    # caller's creates it with that id.
    create_missing: bool = False
    # Regenerate: the session's last turn (its user message and reply) is deleted first, so
    # this message and its new reply take their place.
    replace_last: bool = False


@dataclass(frozen=True, slots=True)
class Turn:
    """What a started chat turn is known by, and the stream its response reads."""

    session_id: str
    stream_id: str
    user_message_id: str
    assistant_message_id: str
    reader: StreamReader
    # A retry with an idempotency key: the response follows the first attempt's stream.
    attached: bool = False


@dataclass(slots=True)
class _Stored:
    """What ``_store`` wrote, for the producer."""

    session_id: str
    user_id: str
    assistant_id: str
    system: str
    history: list[StoredTurn]
    memory: SessionMemory
    template: dict[str, Any] = field(default_factory=dict)


logger = logging.getLogger(__name__)


class ChatService:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        pipeline: TurnPipeline,
        templates: TemplateService,
        memory: MemoryService,
        worker_id: str | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.settings = settings
        self.database = database
        self.pipeline = pipeline
        self.streams: StreamManager = pipeline.streams
        self.templates = templates
        self.memory = memory

    async def start(self, caller: Caller, request: TurnRequest) -> Turn:
        owner_id = caller.user_id
        pipeline = self.pipeline
        async with pipeline.reserve(caller) as reservation:
            pipeline.check_text(request.message, "message")
            if request.session_id is not None and not is_valid_id(request.session_id):
                raise ValidationFailed("session_id is not a valid session id")
            pipeline.check_open("message")
            key = request.idempotency_key
            if key is not None:
                attached = await self.attach(owner_id, key)
                if attached is not None:
                    return attached  # a retry: no new generation, the slot goes back
            await pipeline.check_grounding(owner_id, request.grounding)
            chain = reservation.admit(pipeline.chain(pipeline.providers.get(request.provider)))
            try:
                return await self._start(reservation, request, chain)
            except IntegrityError:
                # A retry raced the first attempt with the same key: the first one stored it.
                reservation.release_admission()
                if key is not None:
                    attached = await self.attach(owner_id, key)
                    if attached is not None:
                        return attached
                if not request.create_missing:
                    raise
            # Two first turns of a client's chat raced: the other one created its session,
            # which this turn now joins.
            chain = reservation.admit(pipeline.chain(pipeline.providers.get(request.provider)))
            return await self._start(reservation, request, chain)

    async def _start(
        self, reservation: Reservation, request: TurnRequest, chain: list[Provider]
    ) -> Turn:
        owner_id = reservation.owner_id
        provider = chain[0]
        model = provider.model_for(request.model)
        stream_id = new_id()
        stored = await self._store(owner_id, request, stream_id, provider.name, model)
        max_tokens = request.max_tokens or provider.default_max_tokens
        grounding = request.grounding
        pipeline = self.pipeline

        async def prepare(run: StreamRun) -> GenerationRequest:
            system = stored.system
            if grounding is not None:
                system, citations = await pipeline.ground(
                    run, owner_id, request.message, grounding, system
                )
                async with self.database.write() as db:
                    await repo.set_citations(db, stored.assistant_id, citations)
            assembled = await self.memory.assemble(
                owner_id=owner_id,
                session_id=stored.session_id,
                provider=provider,
                system=system,
                history=stored.history,
                memory=stored.memory,
                message=request.message,
                max_tokens=max_tokens,
            )
            return GenerationRequest(
                messages=assembled.messages,
                model=request.model,
                temperature=request.temperature,
                max_tokens=max_tokens,
                stop=list(request.stop),
            )

        async def finish(outcome: Outcome) -> None:
            async with self.database.write() as db:
                await repo.finish_message(
                    db,
                    stored.assistant_id,
                    status=outcome.status.value,
                    content=outcome.text,
                    provider=outcome.provider,
                    model=outcome.model or model,
                    prompt_tokens=outcome.usage.prompt_tokens,
                    completion_tokens=outcome.usage.completion_tokens,
                    error=outcome.error,
                )

        run = await reservation.launch(
            stream_id,
            chain,
            prepare,
            finish,
            message_id=stored.assistant_id,
            opening={
                "session_id": stored.session_id,
                "stream_id": stream_id,
                "user_message_id": stored.user_id,
                "assistant_message_id": stored.assistant_id,
                "provider": provider.name,
                "model": model,
                "template": stored.template,
            },
        )
        return Turn(stored.session_id, stream_id, stored.user_id, stored.assistant_id, run.buffer)

    async def _store(
        self, owner_id: str, request: TurnRequest, stream_id: str, provider: str, model: str
    ) -> _Stored:
        """Commit the user message and a ``streaming`` reply (a new session first, if asked
        for), before anything is acknowledged."""
        async with self.database.write() as db:
            found = None
            if request.session_id is not None:
                found = await repo.get_session(db, owner_id, request.session_id)
                if found is None and not request.create_missing:
                    raise NotFound(f"session {request.session_id!r} not found")
            if found is None:
                template = await self.templates.resolve(owner_id, request.template)
                variables = dict(request.variables or {})
                system = self.templates.render(template, variables)
                session = await repo.create_session(
                    db, owner_id, _title_from(request.message), request.session_id
                )
                session.template_id = template.id
                session.template_variables = variables
                history: list[StoredTurn] = []
            else:
                session = found
                if request.replace_last:
                    await self._drop_last_turn(db, owner_id, session.id)
                if request.template is not None:
                    template = await self.templates.resolve(owner_id, request.template)
                    session.template_id = template.id
                else:
                    template = await self.templates.get_version_by_id(owner_id, session.template_id)
                if request.variables is not None:
                    session.template_variables = dict(request.variables)
                system = self.templates.render(template, session.template_variables or {})
                history = [
                    StoredTurn(m.id, m.role, m.content)
                    for m in await repo.history(db, owner_id, session.id)
                ]
                await repo.touch_session(db, session.id)
            memory = SessionMemory(session.summary, session.summary_until)
            user = await repo.add_message(
                db,
                owner_id=owner_id,
                session_id=session.id,
                role=MessageRole.USER,
                content=request.message,
                status=MessageStatus.COMPLETED,
                stream_id=stream_id,
                idempotency_key=request.idempotency_key,
            )
            assistant = await repo.add_message(
                db,
                owner_id=owner_id,
                session_id=session.id,
                role=MessageRole.ASSISTANT,
                content="",
                status=MessageStatus.STREAMING,
                provider=provider,
                model=model,
                stream_id=stream_id,
                worker_id=self.worker_id,
            )
            shown = {"name": template.name, "version": template.version}
            return _Stored(session.id, user.id, assistant.id, system, history, memory, shown)

    async def _drop_last_turn(self, db: AsyncSession, owner_id: str, session_id: str) -> None:
        reply = await repo.last_reply(db, owner_id, session_id)
        if reply is None or reply.stream_id is None:
            return
        if reply.status == MessageStatus.STREAMING:
            raise Conflict("the last reply is still being generated; stop it first")
        await repo.delete_turn(db, owner_id, reply.stream_id)

    async def active_stream(self, owner_id: str, session_id: str) -> StreamReader | None:
        """The stream generating the session's last reply, while it is generating."""
        async with self.database.read() as db:
            reply = await repo.last_reply(db, owner_id, session_id)
        if reply is None or reply.stream_id is None or reply.status != MessageStatus.STREAMING:
            return None
        return await self.open_stream(owner_id, reply.stream_id)

    async def attach(self, owner_id: str, key: str) -> Turn | None:
        """The turn a POST /chat with this idempotency key started, if there was one: its
        stream while the event log keeps it, else a replay of the stored reply."""
        async with self.database.read() as db:
            user = await repo.by_idempotency_key(db, owner_id, key)
            if user is None or user.stream_id is None:
                return None
            reply = await repo.reply_of(db, owner_id, user.stream_id)
        if reply is None:
            return None
        stream_id = user.stream_id
        deadline = time.monotonic() + _ATTACH_WAIT
        while True:
            reader = await self.open_stream(owner_id, stream_id)
            # Another worker may not have copied the stream into the shared log yet.
            if reader is not None or reply.status != MessageStatus.STREAMING:
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        if reader is None:
            async with self.database.read() as db:
                reply = await repo.reply_of(db, owner_id, stream_id) or reply
            reader = _replay(user, reply)
        return Turn(user.session_id, stream_id, user.id, reply.id, reader, attached=True)

    async def open_stream(self, owner_id: str, stream_id: str) -> StreamReader | None:
        """A stream while the event log retains it, on any worker, if it is this owner's."""
        reader = await self.streams.log.open(stream_id)
        if reader is None or reader.owner_id != owner_id:
            return None
        return reader

    async def cancel(self, owner_id: str, stream_id: str) -> bool:
        """Stop a running generation, on whichever worker runs it; the reply is stored
        ``cancelled`` with its text so far. True when the stream ended cancelled, by this call
        or an earlier one; False when it ended some other way (completed, failed,
        interrupted) or its end did not come in time."""
        reader = await self.open_stream(owner_id, stream_id)
        if reader is None:
            raise NotFound(f"stream {stream_id!r} not found")
        done = await self.streams.cancel(reader, timeout=_CANCEL_WAIT)
        return done is not None and done.get("status") == MessageStatus.CANCELLED.value


def _replay(user: Message, reply: Message) -> StreamReader:
    """A finished stream rebuilt from storage, for a retry after the log let go of it."""
    status = MessageStatus(reply.status)
    events: list[tuple[EventType, Any]] = [
        (
            EventType.SESSION,
            {
                "session_id": user.session_id,
                "stream_id": reply.stream_id,
                "user_message_id": user.id,
                "assistant_message_id": reply.id,
                "provider": reply.provider,
                "model": reply.model,
                "replayed": True,
            },
        )
    ]
    if reply.content:
        events.append((EventType.MESSAGE, reply.content))
    if reply.error:
        events.append((EventType.ERROR, reply.error))
    usage = {
        "prompt_tokens": reply.prompt_tokens or 0,
        "completion_tokens": reply.completion_tokens or 0,
        "total_tokens": (reply.prompt_tokens or 0) + (reply.completion_tokens or 0),
    }
    events.append(
        (
            EventType.DONE,
            {
                "finish_reason": FINISH_REASON.get(status, "interrupted"),
                "status": status.value,
                "provider": reply.provider,
                "model": reply.model,
                "message_id": reply.id,
                "usage": usage,
                "replayed": True,
            },
        )
    )
    return closed_stream(reply.stream_id or "", user.owner_id, events)


def client_session_id(owner_id: str, chat_id: str) -> str:
    """The session a client's own chat id stands for: the same id for the same owner and
    chat id, on every worker, and never another owner's."""
    return str(uuid.uuid5(_CLIENT_CHATS, f"{owner_id}\n{chat_id}"))


def _title_from(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= 60 else line[:59].rstrip() + "…"
