"""Chat orchestration: store the turn, start generation, record how it ended.

The user message and a ``streaming`` assistant message are committed before generation starts,
so nothing the server acknowledged can be lost. Generation then runs as the stream's producer
(``services.generation``) and, however it ends, the reply is saved with exactly the text that
was logged. Database sessions are opened for each write and closed again: none is held for the
length of a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from streamforge.chains.core.llm_setup import ProviderRegistry
from streamforge.chains.providers.base import (
    GenerationRequest,
    Provider,
    ProviderBusy,
    ProviderError,
)
from streamforge.chains.rag import StreamForgeRetriever, from_document, grounded_prompt
from streamforge.config.settings import Settings
from streamforge.db.database import Database
from streamforge.db.ids import is_valid_id, new_id
from streamforge.errors import (
    NotFound,
    ProviderUnavailable,
    ServiceUnavailable,
    TooManyRequests,
    ValidationFailed,
)
from streamforge.models import Message, MessageRole, MessageStatus
from streamforge.repositories import sessions as repo
from streamforge.schemas.chat import ChatRequest
from streamforge.schemas.documents import RagOptions, rag_options
from streamforge.services.generation import FINISH_REASON, Outcome, RetryPolicy, generate
from streamforge.services.memory import MemoryService, SessionMemory, StoredTurn
from streamforge.services.retrieval import RetrievalService
from streamforge.services.streams import StreamManager, StreamRun
from streamforge.services.templates import TemplateService
from streamforge.streaming.events import EventType
from streamforge.streaming.log import (
    EventLogUnavailable,
    StreamReader,
    closed_stream,
)

# How long a retry waits for the first attempt's stream to appear in a shared event log.
_ATTACH_WAIT = 3.0
# How long a cancel sent to another worker waits for the stream's end.
_CANCEL_WAIT = 10.0


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


logger = logging.getLogger(__name__)


def busy(exc: ProviderBusy) -> TooManyRequests:
    seconds = max(1, round(exc.retry_after))
    return TooManyRequests(exc.message, headers={"Retry-After": str(seconds)})


def admit_first(
    chain: list[Provider],
) -> tuple[list[Provider], contextlib.AbstractContextManager[None]]:
    """Reserve a place for one generation on the first provider of ``chain`` that can take it.

    A busy provider answers 429 at once. One that cannot run at all now (the local model's
    process is down) gives way to the next provider of the chain, or, with none left, 503.
    Returns the chain from the admitting provider on, and its reservation (entered)."""
    for index, provider in enumerate(chain):
        admission = provider.admit()
        try:
            admission.__enter__()
        except ProviderBusy as exc:
            raise busy(exc) from None
        except ProviderError as exc:
            if index + 1 < len(chain):
                logger.warning("provider %s unavailable (%s): falling back", provider.name, exc)
                continue
            raise ProviderUnavailable(
                f"the {provider.name} provider is unavailable: {exc.message}",
                headers={"Retry-After": "5"},
            ) from None
        return chain[index:], admission
    raise ProviderUnavailable("no provider is configured")


class ChatService:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        providers: ProviderRegistry,
        streams: StreamManager,
        templates: TemplateService,
        memory: MemoryService,
        retrieval: RetrievalService,
        worker_id: str | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.settings = settings
        self.database = database
        self.providers = providers
        self.streams = streams
        self.templates = templates
        self.memory = memory
        self.retrieval = retrieval
        self.policy = RetryPolicy(
            attempts=settings.llm.attempts,
            backoff=settings.llm.retry_backoff,
            first_token_timeout=settings.llm.first_token_timeout,
        )

    def provider_chain(self, name: str | None) -> list[Provider]:
        """The chosen provider, then the configured fallbacks (each once)."""
        primary = self.providers.get(name)
        chain = [primary]
        for fallback in self.settings.llm.fallbacks:
            if fallback in self.providers and all(p.name != fallback for p in chain):
                chain.append(self.providers.get(fallback))
        return chain

    async def start(self, owner_id: str, request: ChatRequest) -> Turn:
        limit = self.settings.limits.max_message_chars
        if len(request.message) > limit:
            raise ValidationFailed(f"message is longer than {limit} characters")
        if request.session_id is not None and not is_valid_id(request.session_id):
            raise ValidationFailed("session_id is not a valid session id")
        if self.streams.closing:
            raise ServiceUnavailable("the server is shutting down; send the message again")
        key = request.idempotency_key
        if key is not None:
            attached = await self.attach(owner_id, key)
            if attached is not None:
                return attached
        rag = rag_options(request.rag)
        if rag is not None:
            # Unknown collections are a 404 now, before anything is stored or streamed.
            await self.retrieval.collections(owner_id, rag.collections)
        chain, admission = admit_first(self.provider_chain(request.provider))
        try:
            return await self._start(owner_id, request, chain, admission)
        except IntegrityError:
            admission.__exit__(None, None, None)
            # A retry raced the first attempt with the same key: the first one stored it.
            if key is not None:
                attached = await self.attach(owner_id, key)
                if attached is not None:
                    return attached
            raise
        except BaseException:
            admission.__exit__(None, None, None)
            raise

    async def _start(
        self,
        owner_id: str,
        request: ChatRequest,
        chain: list[Provider],
        admission: contextlib.AbstractContextManager[None],
    ) -> Turn:
        provider = chain[0]
        model = provider.model_for(request.model)
        stream_id = new_id()
        async with self.database.write() as db:
            if request.session_id is None:
                template = await self.templates.resolve(owner_id, request.template)
                variables = dict(request.variables or {})
                system = self.templates.render(template, variables)
                session = await repo.create_session(db, owner_id, _title_from(request.message))
                session.template_id = template.id
                session.template_variables = variables
                history: list[StoredTurn] = []
            else:
                found = await repo.get_session(db, owner_id, request.session_id)
                if found is None:
                    raise NotFound(f"session {request.session_id!r} not found")
                session = found
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
                provider=provider.name,
                model=model,
                stream_id=stream_id,
                worker_id=self.worker_id,
            )
            session_id, user_id, assistant_id = session.id, user.id, assistant.id

        max_tokens = request.max_tokens or provider.default_max_tokens
        rag = rag_options(request.rag)
        run_ref: list[StreamRun] = []

        async def prepare() -> GenerationRequest:
            grounded = system
            if rag is not None:
                grounded = await self.ground(
                    run_ref[0], owner_id, request.message, rag, system, assistant_id
                )
            assembled = await self.memory.assemble(
                owner_id=owner_id,
                session_id=session_id,
                provider=provider,
                system=grounded,
                history=history,
                memory=memory,
                message=request.message,
                max_tokens=max_tokens,
            )
            return GenerationRequest(
                messages=assembled.messages,
                model=request.model,
                temperature=request.temperature,
                max_tokens=max_tokens,
                stop=list(request.stop or []),
            )

        async def finish(outcome: Outcome) -> None:
            async with self.database.write() as db:
                await repo.finish_message(
                    db,
                    assistant_id,
                    status=outcome.status.value,
                    content=outcome.text,
                    provider=outcome.provider,
                    model=outcome.model or model,
                    prompt_tokens=outcome.usage.prompt_tokens,
                    completion_tokens=outcome.usage.completion_tokens,
                    error=outcome.error,
                )

        async def produce(run: StreamRun) -> None:
            await generate(
                run,
                chain,
                prepare,
                self.policy,
                finish,
                admitted=admission,
                extra_done={"message_id": assistant_id},
            )

        run = self.streams.start(stream_id, produce, owner_id)
        run.message_id = assistant_id
        run_ref.append(run)
        # Logged before the producer task first runs, so ``session`` is always event 1.
        run.buffer.append(
            EventType.SESSION,
            {
                "session_id": session_id,
                "stream_id": stream_id,
                "user_message_id": user_id,
                "assistant_message_id": assistant_id,
                "provider": provider.name,
                "model": model,
                "template": {"name": template.name, "version": template.version},
            },
        )
        return Turn(session_id, stream_id, user_id, assistant_id, run.buffer)

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
        try:
            reader = await self.open_stream(owner_id, stream_id)
        except EventLogUnavailable as exc:
            raise ServiceUnavailable(exc.message) from None
        if reader is None:
            raise NotFound(f"stream {stream_id!r} not found")
        try:
            done = await self.streams.cancel(reader, timeout=_CANCEL_WAIT)
        except EventLogUnavailable as exc:
            raise ServiceUnavailable(exc.message) from None
        return done is not None and done.get("status") == MessageStatus.CANCELLED.value

    async def ground(
        self,
        run: StreamRun,
        owner_id: str,
        question: str,
        rag: RagOptions,
        system: str,
        assistant_id: str | None,
    ) -> str:
        """Retrieve for the question, log ``sources``, store them, and extend the prompt."""
        retriever = StreamForgeRetriever(
            service=self.retrieval,
            owner_id=owner_id,
            collections=rag.collections,
            top_k=rag.top_k or self.settings.retrieval.top_k,
        )
        chunks = [from_document(d) for d in await retriever.ainvoke(question)]
        snippet = self.settings.retrieval.snippet_chars
        citations = [chunk.citation(index, snippet) for index, chunk in enumerate(chunks, start=1)]
        run.buffer.append(EventType.SOURCES, {"sources": citations})
        if assistant_id is not None:
            async with self.database.write() as db:
                await repo.set_citations(db, assistant_id, citations)
        return grounded_prompt(system, chunks)


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


def _title_from(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= 60 else line[:59].rstrip() + "…"
