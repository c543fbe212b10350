"""Stateless completions for the OpenAI-compatible API.

Like OpenAI's own endpoint, ``/v1/chat/completions`` receives the whole conversation with
every request and keeps nothing: no session, no stored messages. It runs on the same
generation core and event log as ``/chat`` — retries, fallback, cancellation — and only the
wire encoder differs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from streamforge.chains.core.llm_setup import ProviderRegistry
from streamforge.chains.providers.base import ChatTurn, GenerationRequest, Provider
from streamforge.db.ids import new_id
from streamforge.errors import NotFound, ServiceUnavailable
from streamforge.models.base import LOCAL_OWNER
from streamforge.schemas.documents import RagOptions
from streamforge.services.chat import ChatService, admit_first
from streamforge.services.generation import Outcome, generate
from streamforge.services.streams import StreamManager, StreamRun


@dataclass(frozen=True, slots=True)
class Completion:
    stream_id: str
    provider: str
    model: str
    run: StreamRun


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    messages: list[ChatTurn]
    temperature: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    rag: RagOptions | None = None


class CompletionService:
    def __init__(
        self, providers: ProviderRegistry, streams: StreamManager, chat: ChatService
    ) -> None:
        self.providers = providers
        self.streams = streams
        self.chat = chat

    def resolve_model(self, spec: str) -> tuple[Provider, str | None]:
        """``local`` or ``openai`` (a provider's default model) or ``openai/gpt-4o-mini``."""
        name, _, model = spec.partition("/")
        if name not in self.providers:
            raise NotFound(
                f"model {spec!r} does not exist; see GET /v1/models",
            )
        return self.providers.get(name), (model or None)

    def models(self) -> list[tuple[str, str, str]]:
        """(model id, owning provider, the provider's model it is answered by) for every
        configured model; a provider's own name stands for its default model."""
        listed: list[tuple[str, str, str]] = []
        for provider in self.providers:
            listed.append((provider.name, provider.name, provider.model_for(None)))
            for model in provider.models():
                if model != provider.name:
                    listed.append((f"{provider.name}/{model}", provider.name, model))
        return listed

    async def start(self, request: CompletionRequest, owner_id: str = LOCAL_OWNER) -> Completion:
        if self.streams.closing:
            raise ServiceUnavailable("the server is shutting down; send the request again")
        provider, model = self.resolve_model(request.model)
        rag = request.rag
        if rag is not None:
            await self.chat.retrieval.collections(owner_id, rag.collections)
        chain = [provider] + [p for p in self.chat.provider_chain(None)[1:] if p is not provider]
        chain, admission = admit_first(chain)
        if chain[0] is not provider:
            provider, model = chain[0], None
        generation = GenerationRequest(
            messages=request.messages,
            model=model,
            temperature=request.temperature,
            max_tokens=request.max_tokens or provider.default_max_tokens,
            stop=list(request.stop),
        )

        run_ref: list[StreamRun] = []

        async def prepare() -> GenerationRequest:
            if rag is None:
                return generation
            question = next((t.content for t in reversed(request.messages) if t.role == "user"), "")
            grounding = await self.chat.ground(run_ref[0], owner_id, question, rag, "", None)
            return dataclasses.replace(
                generation, messages=[ChatTurn("system", grounding), *generation.messages]
            )

        async def finish(_: Outcome) -> None:
            return None

        async def produce(run: StreamRun) -> None:
            await generate(run, chain, prepare, self.chat.policy, finish, admitted=admission)

        stream_id = new_id()
        try:
            run = self.streams.start(stream_id, produce, owner_id)
            run_ref.append(run)
        except BaseException:
            admission.__exit__(None, None, None)
            raise
        return Completion(stream_id, provider.name, model or provider.name, run)
