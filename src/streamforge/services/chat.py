"""Chat orchestration: store the turn, start generation, record how it ended.

The user message and a ``streaming`` assistant message are committed before generation starts,
so nothing the server acknowledged can be lost. Generation then runs as the stream's producer
(``services.generation``) and, however it ends, the reply is saved with exactly the text that
was logged. Database sessions are opened for each write and closed again: none is held for the
length of a stream.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from streamforge.chains.core.llm_setup import ProviderRegistry
from streamforge.chains.providers.base import GenerationRequest, Provider, ProviderBusy
from streamforge.chains.rag import StreamForgeRetriever, from_document, grounded_prompt
from streamforge.config.settings import Settings
from streamforge.db.database import Database
from streamforge.db.ids import is_valid_id, new_id
from streamforge.errors import NotFound, TooManyRequests, ValidationFailed
from streamforge.models import MessageRole, MessageStatus
from streamforge.repositories import sessions as repo
from streamforge.schemas.chat import ChatRequest
from streamforge.schemas.documents import RagOptions, rag_options
from streamforge.services.generation import Outcome, RetryPolicy, generate
from streamforge.services.memory import MemoryService, SessionMemory, StoredTurn
from streamforge.services.retrieval import RetrievalService
from streamforge.services.streams import StreamManager, StreamRun
from streamforge.services.templates import TemplateService
from streamforge.streaming.events import EventType
from streamforge.streaming.log import StreamBuffer


@dataclass(frozen=True, slots=True)
class Turn:
    """What a started chat turn is known by."""

    session_id: str
    stream_id: str
    user_message_id: str
    assistant_message_id: str
    run: StreamRun


def busy(exc: ProviderBusy) -> TooManyRequests:
    seconds = max(1, round(exc.retry_after))
    return TooManyRequests(exc.message, headers={"Retry-After": str(seconds)})


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
    ) -> None:
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
        rag = rag_options(request.rag)
        if rag is not None:
            # Unknown collections are a 404 now, before anything is stored or streamed.
            await self.retrieval.collections(owner_id, rag.collections)
        chain = self.provider_chain(request.provider)
        provider = chain[0]
        admission = provider.admit()
        try:
            admission.__enter__()
        except ProviderBusy as exc:
            raise busy(exc) from None
        try:
            return await self._start(owner_id, request, chain, admission)
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
                "model": request.model,
                "template": {"name": template.name, "version": template.version},
            },
        )
        return Turn(session_id, stream_id, user_id, assistant_id, run)

    def find_stream(self, owner_id: str, stream_id: str) -> StreamBuffer | None:
        """A stream's event log while it is retained, if it is this owner's."""
        buffer = self.streams.log.get(stream_id)
        if buffer is None or buffer.owner_id != owner_id:
            return None
        return buffer

    async def cancel(self, owner_id: str, stream_id: str) -> bool:
        """Stop a running generation; the reply is stored ``cancelled`` with its text so far.
        False when the stream had already ended."""
        if self.find_stream(owner_id, stream_id) is None:
            raise NotFound(f"stream {stream_id!r} not found")
        stopped = self.streams.stop(stream_id, MessageStatus.CANCELLED)
        if stopped:
            await self.streams.wait(stream_id)
        return stopped

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


def _title_from(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= 60 else line[:59].rstrip() + "…"
