"""Stateless completions: the conversation comes with every request, nothing is stored.

Like OpenAI's own endpoint, ``/v1/chat/completions`` receives the whole conversation with
every request and keeps nothing: no session, no stored messages. It runs on the same turn
pipeline and event log as ``/chat`` — reservations, retries, fallback, cancellation — and
only the wire encoder differs; so will every other stateless wire format.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from streamforge.chains.core.llm_setup import ProviderRegistry
from streamforge.chains.providers.base import ChatTurn, GenerationRequest, Provider
from streamforge.db.ids import new_id
from streamforge.errors import NotFound
from streamforge.services.auth import Caller
from streamforge.services.generation import Outcome
from streamforge.services.pipeline import Grounding, TurnPipeline
from streamforge.services.streams import StreamRun


@dataclass(frozen=True, slots=True)
class Completion:
    stream_id: str
    provider: str
    model: str
    run: StreamRun
    # The answer limit the generation runs with (to tell "length" from "stop").
    limit: int


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    messages: Sequence[ChatTurn]
    temperature: float | None = None
    max_tokens: int | None = None
    stop: Sequence[str] = ()
    grounding: Grounding | None = None


class CompletionService:
    def __init__(self, pipeline: TurnPipeline) -> None:
        self.pipeline = pipeline
        self.providers: ProviderRegistry = pipeline.providers

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

    async def start(self, caller: Caller, request: CompletionRequest) -> Completion:
        pipeline = self.pipeline
        for index, turn in enumerate(request.messages):
            pipeline.check_text(turn.content, f"messages[{index}]")
        requested, model = self.resolve_model(request.model)
        limit = request.max_tokens or requested.default_max_tokens
        owner_id = caller.user_id
        async with pipeline.reserve(caller) as reservation:
            pipeline.check_open("request")
            grounding = request.grounding
            await pipeline.check_grounding(owner_id, grounding)
            chain = reservation.admit(pipeline.chain(requested))
            provider = chain[0]
            if provider is not requested:
                model = None
            generation = GenerationRequest(
                messages=list(request.messages),
                model=model,
                temperature=request.temperature,
                max_tokens=request.max_tokens or provider.default_max_tokens,
                stop=list(request.stop),
            )

            async def prepare(run: StreamRun) -> GenerationRequest:
                if grounding is None:
                    return generation
                question = next(
                    (t.content for t in reversed(generation.messages) if t.role == "user"), ""
                )
                system, _ = await pipeline.ground(run, owner_id, question, grounding, "")
                return dataclasses.replace(
                    generation, messages=[ChatTurn("system", system), *generation.messages]
                )

            async def finish(_: Outcome) -> None:
                return None

            stream_id = new_id()
            run = await reservation.launch(stream_id, chain, prepare, finish)
        return Completion(stream_id, provider.name, model or provider.name, run, limit)
