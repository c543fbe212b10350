"""The turn pipeline: what every endpoint that generates an answer runs.

A turn is refused (429, 503) or admitted before anything is acknowledged. Its reservations —
the key's stream slot under its daily tokens, then a place with the first provider of the
chain that can take it — are held in one exit stack: whatever fails before generation starts
gives every one of them back. Once the stream starts they belong to it: the provider's place
is given back when that provider is done with, the slot when the stream has ended, counting
the tokens it used.

Generation (``services.generation``) then prepares the prompt inside the stream's lifecycle —
the endpoint's own part (a session's template and memory, or the conversation a stateless
request carries) and grounding, which calls ``RetrievalService`` — and runs the provider
chain with retries and fallback. An endpoint is a router that parses its wire format into a
call of ``ChatService`` (sessions) or ``CompletionService`` (stateless), and an encoder.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from streamforge.chains.core.llm_setup import ProviderRegistry
from streamforge.chains.providers.base import GenerationRequest, Provider
from streamforge.chains.rag import grounded_prompt
from streamforge.config.settings import Settings
from streamforge.errors import (
    ProviderBusy,
    ProviderError,
    ProviderUnavailable,
    ServiceUnavailable,
    ValidationFailed,
)
from streamforge.services.auth import Caller
from streamforge.services.generation import Finish, RetryPolicy, generate
from streamforge.services.limits import Quotas, Slot
from streamforge.services.retrieval import RetrievalService
from streamforge.services.streams import StreamManager, StreamRun
from streamforge.streaming.events import EventType
from streamforge.streaming.log import StreamBuffer

logger = logging.getLogger(__name__)

# Builds the generation request once the stream runs (it may log events, like ``sources``).
Prepare = Callable[[StreamRun], Awaitable[GenerationRequest]]


@dataclass(frozen=True, slots=True)
class Grounding:
    """Answer from the owner's documents: these collections (names or ids; all when None),
    this many passages (the configured default when None)."""

    collections: Sequence[str] | None = None
    top_k: int | None = None


class Reservation:
    """A turn's reservations until its stream starts (``TurnPipeline.reserve``)."""

    def __init__(
        self,
        pipeline: TurnPipeline,
        stack: contextlib.AsyncExitStack,
        slot: Slot,
        owner_id: str,
    ) -> None:
        self.pipeline = pipeline
        self.owner_id = owner_id
        self._stack = stack
        self._slot = slot
        # The first provider's place; given back by generation once that provider is done.
        self._admission = stack.enter_context(contextlib.ExitStack())

    def admit(self, chain: Sequence[Provider]) -> list[Provider]:
        """Reserve a place on the first provider of ``chain`` that can take a generation.

        A busy provider answers 429 at once. One that cannot run at all now (the local
        model's process is down) gives way to the next provider of the chain, or, with none
        left, 503. Returns the chain from the admitting provider on."""
        for index, provider in enumerate(chain):
            try:
                self._admission.enter_context(provider.admit())
            except ProviderBusy:
                raise
            except ProviderError as exc:
                if index + 1 < len(chain):
                    logger.warning("provider %s unavailable (%s): falling back", provider.name, exc)
                    continue
                raise ProviderUnavailable(
                    f"the {provider.name} provider is unavailable: {exc.message}",
                    headers={"Retry-After": "5"},
                ) from None
            return list(chain[index:])
        raise ProviderUnavailable("no provider is configured")

    def release_admission(self) -> None:
        """Give the provider's place back now (the turn will not generate after all)."""
        self._admission.close()

    async def launch(
        self,
        stream_id: str,
        chain: Sequence[Provider],
        prepare: Prepare,
        finish: Finish,
        *,
        opening: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> StreamRun:
        """Start generation as the stream's producer; the reservations go with it.

        ``opening``, when given, is logged as the ``session`` event before the producer first
        runs, so it is always event 1. ``message_id`` names the stored reply (in ``done``,
        and for checkpoints)."""
        pipeline = self.pipeline
        admission = self._admission
        extra_done = {"message_id": message_id} if message_id is not None else None

        async def produce(run: StreamRun) -> None:
            await generate(
                run,
                chain,
                functools.partial(prepare, run),
                pipeline.policy,
                finish,
                admission=admission,
                extra_done=extra_done,
            )

        run = pipeline.streams.start(stream_id, produce, self.owner_id)
        held = self._stack.pop_all()
        slot = self._slot

        async def release(buffer: StreamBuffer) -> None:
            usage = (buffer.done or {}).get("usage") or {}
            slot.tokens = int(usage.get("total_tokens") or 0)
            await held.aclose()

        await pipeline.streams.on_done(stream_id, release)
        run.message_id = message_id
        if opening is not None:
            run.buffer.append(EventType.SESSION, opening)
        return run


class TurnPipeline:
    def __init__(
        self,
        settings: Settings,
        providers: ProviderRegistry,
        streams: StreamManager,
        retrieval: RetrievalService,
        quotas: Quotas,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.streams = streams
        self.retrieval = retrieval
        self.quotas = quotas
        self.policy = RetryPolicy(
            attempts=settings.llm.attempts,
            backoff=settings.llm.retry_backoff,
            first_token_timeout=settings.llm.first_token_timeout,
        )

    def check_text(self, text: str, what: str) -> None:
        """One message of a turn, refused when longer than the configured limit."""
        limit = self.settings.limits.max_message_chars
        if len(text) > limit:
            raise ValidationFailed(f"{what} is longer than {limit} characters")

    def check_open(self, what: str) -> None:
        if self.streams.closing:
            raise ServiceUnavailable(f"the server is shutting down; send the {what} again")

    def chain(self, first: Provider) -> list[Provider]:
        """``first``, then the configured fallbacks (each once)."""
        chain = [first]
        for fallback in self.settings.llm.fallbacks:
            if fallback in self.providers and all(p.name != fallback for p in chain):
                chain.append(self.providers.get(fallback))
        return chain

    async def check_grounding(self, owner_id: str, grounding: Grounding | None) -> None:
        """Unknown collections are a 404 now, before anything is stored or streamed."""
        if grounding is not None:
            await self.retrieval.collections(owner_id, grounding.collections)

    @contextlib.asynccontextmanager
    async def reserve(self, caller: Caller) -> AsyncIterator[Reservation]:
        """The caller's stream slot (429 when its key has none left) for one turn; given back
        on leaving unless ``Reservation.launch`` handed it to a stream."""
        async with contextlib.AsyncExitStack() as stack:
            slot = await self.quotas.admit(caller.key_id or caller.user_id)
            stack.push_async_callback(slot.finish)
            yield Reservation(self, stack, slot, caller.user_id)

    async def ground(
        self, run: StreamRun, owner_id: str, question: str, grounding: Grounding, system: str
    ) -> tuple[str, list[dict[str, Any]]]:
        """Retrieve for the question, log ``sources``, and extend the system prompt with the
        passages: the prompt, and the citations to store with the reply."""
        found = await self.retrieval.search(
            owner_id,
            question,
            collections=grounding.collections,
            top_k=grounding.top_k or self.settings.retrieval.top_k,
        )
        snippet = self.settings.retrieval.snippet_chars
        citations = [
            chunk.citation(index, snippet) for index, chunk in enumerate(found.chunks, start=1)
        ]
        run.buffer.append(EventType.SOURCES, {"sources": citations})
        return grounded_prompt(system, found.chunks), citations
