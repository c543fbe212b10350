"""The turn pipeline's reservations: a key's stream slot and a provider's place are held
while a turn generates and given back however it ends — also when it is refused after they
were taken (an unknown session, an unknown collection), and on both endpoints."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

from streamforge.chains.providers.base import BaseProvider, Chunk, GenerationRequest, ProviderBusy
from tests.conftest import AppFactory, asgi_client
from tests.polling import eventually
from tests.sse_client import read_chat

ONE_STREAM = {"concurrent_streams": 1}
MISSING_SESSION = "0190f5f4-0000-7000-8000-000000000000"


class GateProvider(BaseProvider):
    """A provider with room for one generation at a time, like the local model's queue."""

    name = "gate"

    def __init__(self, delay: float = 0.0, name: str = "gate") -> None:
        self.name = name
        self.delay = delay
        self.admitted = 0
        self.most = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        if self.admitted >= 1:
            raise ProviderBusy("the gate is taken", retry_after=2)
        self.admitted += 1
        self.most = max(self.most, self.admitted)
        try:
            yield
        finally:
            self.admitted -= 1

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        for word in ("through", " the", " gate"):
            await asyncio.sleep(self.delay)
            yield Chunk(text=word)


async def test_a_turn_refused_after_its_reservations_gives_them_back(
    app_factory: AppFactory,
) -> None:
    gate = GateProvider()
    app = app_factory(limits=ONE_STREAM)
    async with asgi_client(app) as client:
        app.state.components.providers.register(gate)
        for _ in range(3):
            missing = await client.post(
                "/chat", json={"message": "hi", "provider": "gate", "session_id": MISSING_SESSION}
            )
            assert missing.status_code == 404
            unknown = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "gate",
                    "messages": [{"role": "user", "content": "hi"}],
                    "rag": ["nowhere"],
                },
            )
            assert unknown.status_code == 404
        assert gate.admitted == 0
        # Neither the key's one stream slot nor the gate's one place was kept.
        turn = await read_chat(client, {"message": "hi", "provider": "gate"})
        assert turn.status == 200
        assert turn.text == "through the gate"
        completion = await client.post(
            "/v1/chat/completions",
            json={"model": "gate", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert completion.status_code == 200
        assert completion.json()["choices"][0]["message"]["content"] == "through the gate"
        assert gate.admitted == 0


async def test_reservations_are_held_while_a_turn_generates(app_factory: AppFactory) -> None:
    gate = GateProvider(delay=0.2)
    app = app_factory()
    async with asgi_client(app) as client:
        app.state.components.providers.register(gate)
        first = asyncio.create_task(read_chat(client, {"message": "one", "provider": "gate"}))
        await eventually(lambda: gate.admitted == 1, timeout=2, interval=0.02)
        busy = await client.post("/chat", json={"message": "two", "provider": "gate"})
        assert busy.status_code == 429
        assert busy.json()["error"]["code"] == "rate_limited"
        assert busy.headers["retry-after"] == "2"
        turn = await first
        assert turn.text == "through the gate"
        await eventually(lambda: gate.admitted == 0, timeout=2, interval=0.02)
        assert gate.most == 1


async def test_a_busy_fallback_fails_the_turn_without_keeping_a_place(
    app_factory: AppFactory,
) -> None:
    """The first provider fails before its first token; its fallback is busy: the turn ends
    ``failed`` and both places are free again."""
    # Fallbacks are named among the configured kinds: the gate stands in for one.
    gate = GateProvider(name="simulated")
    app = app_factory(llm={"provider": "simulated", "fallbacks": ["simulated"], "attempts": 1})
    async with asgi_client(app) as client:
        components = app.state.components
        components.providers.register(gate)
        with gate.admit():  # someone else holds the gate
            failing = FailingProvider()
            components.providers.register(failing)
            turn = await read_chat(client, {"message": "hi", "provider": "failing"})
        assert turn.status == 200
        assert turn.done["status"] == "failed"
        assert [error["code"] for error in turn.typed("error")] == ["provider_busy"]
        assert gate.admitted == 0
        again = await read_chat(client, {"message": "hi", "provider": "simulated"})
        assert again.text == "through the gate"


class FailingProvider(BaseProvider):
    name = "failing"

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        raise RuntimeError("no answer")
        yield Chunk()  # an async generator
