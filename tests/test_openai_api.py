"""The OpenAI-compatible API through the official ``openai`` SDK and LangChain's ``ChatOpenAI``,
over a real HTTP connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import orjson
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI

from streamforge.chains.providers.base import BaseProvider, Chunk, GenerationRequest
from streamforge.chains.providers.simulated import DEFAULT_ANSWER, SimulatedProvider, split_words
from streamforge.streaming.events import EventType, StreamEvent
from streamforge.streaming.openai import OpenAIChunkEncoder
from tests.conftest import AppFactory, LiveServer, asgi_client, live_server
from tests.polling import eventually

WORDS = split_words(DEFAULT_ANSWER)
HELLO: list[Any] = [{"role": "user", "content": "Hello"}]


class ProbeProvider(BaseProvider):
    """Yields ``deltas`` with a delay, notes what it was asked and when it was closed; raises
    after ``fail_after`` deltas when set."""

    def __init__(
        self,
        deltas: list[str],
        delay: float = 0.0,
        *,
        name: str = "probe",
        fail_after: int | None = None,
    ) -> None:
        self.name = name
        self.deltas = deltas
        self.delay = delay
        self.fail_after = fail_after
        self.yielded = 0
        self.closed = asyncio.Event()
        self.seen: list[GenerationRequest] = []

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        self.seen.append(request)
        try:
            for delta in self.deltas:
                if self.yielded == self.fail_after:
                    raise RuntimeError("the model fell over")
                await asyncio.sleep(self.delay)
                self.yielded += 1
                yield Chunk(text=delta)
        finally:
            self.closed.set()


@asynccontextmanager
async def served(
    app_factory: AppFactory, **overrides: Any
) -> AsyncIterator[tuple[LiveServer, openai.AsyncOpenAI]]:
    async with live_server(app_factory(**overrides)) as server:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        async with client:
            yield server, client


async def test_sdk_streams_the_answer(app_factory: AppFactory) -> None:
    async with served(app_factory) as (_, client):
        stream = await client.chat.completions.create(
            model="simulated", messages=HELLO, stream=True
        )
        chunks = [chunk async for chunk in stream]

    first, *middle, last = chunks
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content or "" for c in middle) == DEFAULT_ANSWER
    assert [c.choices[0].delta.content for c in middle] == WORDS
    assert last.choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all(c.usage is None for c in chunks)
    assert len({c.id for c in chunks}) == 1 and first.id.startswith("chatcmpl-")
    assert {c.model for c in chunks} == {"simulated"}
    assert {c.object for c in chunks} == {"chat.completion.chunk"}


async def test_include_usage_puts_usage_on_a_last_chunk_without_choices(
    app_factory: AppFactory,
) -> None:
    async with served(app_factory) as (_, client):
        stream = await client.chat.completions.create(
            model="simulated",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

    *earlier, finish, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == len(WORDS)
    assert last.usage.prompt_tokens == 1
    assert last.usage.total_tokens == len(WORDS) + 1
    assert finish.choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in [*earlier, finish])


async def test_sdk_non_streaming_completion(app_factory: AppFactory) -> None:
    async with served(app_factory) as (_, client):
        completion = await client.chat.completions.create(model="simulated", messages=HELLO)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "simulated"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == DEFAULT_ANSWER
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(WORDS)
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + len(WORDS)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_answer_cut_at_the_limit_finishes_with_length(
    app_factory: AppFactory, field: str
) -> None:
    limit: dict[str, Any] = {field: 3}
    async with served(app_factory) as (_, client):
        completion = await client.chat.completions.create(
            model="simulated", messages=HELLO, **limit
        )
        stream = await client.chat.completions.create(
            model="simulated", messages=HELLO, stream=True, **limit
        )
        chunks = [chunk async for chunk in stream]
    assert completion.choices[0].message.content == "".join(WORDS[:3])
    assert completion.choices[0].finish_reason == "length"
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_wire_format_is_exactly_openais(app_factory: AppFactory) -> None:
    async with (
        served(app_factory) as (server, _),
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        response = await http.post(
            "/v1/chat/completions",
            json={
                "model": "simulated",
                "messages": HELLO,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            headers={"Accept-Encoding": "gzip"},
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    blocks = response.text.split("\n\n")
    assert blocks[-1] == ""
    assert blocks[-2] == "data: [DONE]"
    # Only data lines: the SDK would try to parse an id- or retry-only event as JSON.
    assert all(block.startswith("data: ") and "\n" not in block for block in blocks[:-1])
    chunks = [orjson.loads(block[6:]) for block in blocks[:-2]]
    first = chunks[0]
    assert first == {
        "id": first["id"],
        "object": "chat.completion.chunk",
        "created": first["created"],
        "model": "simulated",
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        "usage": None,
    }
    assert isinstance(first["created"], int)
    assert chunks[1]["choices"][0]["delta"] == {"content": WORDS[0]}
    assert chunks[-2]["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == len(WORDS)
    assert {chunk["id"] for chunk in chunks} == {first["id"]}


async def test_encoder_escapes_any_delta_into_one_data_line() -> None:
    encoder = OpenAIChunkEncoder("chatcmpl-x", 'a "model"', 7)
    deltas = ["line\nbreak", 'quote " and \\', "ünï 🚀", "data: [DONE]", "\u2028"]
    events = [StreamEvent(i + 1, EventType.MESSAGE, d) for i, d in enumerate(deltas)]
    body = encoder.encode(events).decode()
    blocks = body.split("\n\n")[:-1]
    assert len(blocks) == len(deltas)
    parsed = [orjson.loads(block.removeprefix("data: ")) for block in blocks]
    assert [p["choices"][0]["delta"]["content"] for p in parsed] == deltas
    assert {p["model"] for p in parsed} == {'a "model"'}


@pytest.mark.parametrize("reason", ["interrupted", "cancelled"])
async def test_generation_that_did_not_finish_ends_with_an_error_chunk(reason: str) -> None:
    encoder = OpenAIChunkEncoder("chatcmpl-x", "m", 7)
    body = encoder.encode(
        [
            StreamEvent(1, EventType.MESSAGE, "partial"),
            StreamEvent(2, EventType.DONE, {"finish_reason": reason, "usage": None}),
        ]
    )
    last = orjson.loads(body.split(b"\n\n")[-2].removeprefix(b"data: "))
    assert last["error"]["code"] == reason
    assert last["error"]["type"] == "server_error"


async def test_langchain_chat_openai_streams_with_usage(app_factory: AppFactory) -> None:
    async with served(app_factory) as (server, _):
        model = ChatOpenAI(
            base_url=f"{server.url}/v1",
            api_key="x",
            model="simulated",
            max_retries=0,
            stream_usage=True,
        )
        chunks = [chunk async for chunk in model.astream("Hello")]
        answer = await model.ainvoke("Hello")

    assert len(chunks) > len(WORDS)
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert isinstance(total, AIMessageChunk)
    assert total.content == DEFAULT_ANSWER
    assert total.usage_metadata is not None
    assert total.usage_metadata["output_tokens"] == len(WORDS)
    assert total.usage_metadata["total_tokens"] == len(WORDS) + 1
    assert answer.content == DEFAULT_ANSWER
    assert answer.response_metadata["finish_reason"] == "stop"


async def test_models_lists_every_provider(app_factory: AppFactory) -> None:
    async with served(app_factory) as (server, client):
        server.components.providers.register(ProbeProvider(["x"], name="probe"))
        listed = await client.models.list()
        ids = [model.id async for model in listed]
        one = await client.models.retrieve("simulated")
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("no-such-model")

    assert "simulated" in ids and "probe" in ids
    assert set(server.components.providers.names()) <= set(ids)
    assert one.id == "simulated" and one.owned_by == "simulated" and one.object == "model"


async def test_model_ids_with_a_slash_can_be_retrieved(app_factory: AppFactory) -> None:
    class Hosted(ProbeProvider):
        def models(self) -> list[str]:
            return ["big-1", "small-2"]

    async with served(app_factory) as (server, client):
        server.components.providers.register(Hosted(["x"], name="hosted"))
        one = await client.models.retrieve("hosted/small-2")
        ids = [model.id async for model in await client.models.list()]
    assert one.id == "hosted/small-2" and one.owned_by == "hosted"
    assert {"hosted", "hosted/big-1", "hosted/small-2"} <= set(ids)


@pytest.mark.parametrize("stream", [False, True])
async def test_unknown_model_is_not_found(app_factory: AppFactory, stream: bool) -> None:
    async with served(app_factory) as (server, client):
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(
                model="no-such-model", messages=HELLO, stream=stream
            )
        assert server.components.streams.active == 0
    assert caught.value.code == "not_found"
    assert "no-such-model" in caught.value.message


async def test_request_reaches_the_provider_translated(app_factory: AppFactory) -> None:
    probe = ProbeProvider(["ok"])
    async with served(app_factory) as (server, client):
        server.components.providers.register(probe)
        completion = await client.chat.completions.create(
            model="probe/some-model",
            messages=[
                {"role": "developer", "content": "Be brief."},
                {"role": "system", "content": [{"type": "text", "text": "Be kind."}]},
                {"role": "user", "content": "Hi", "name": "ann"},
                {"role": "assistant", "content": "Hello."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
                },
            ],
            temperature=0.5,
            max_completion_tokens=40,
            stop="END",
            # Accepted and ignored, as other OpenAI-compatible servers do.
            top_p=0.9,
            seed=1,
            presence_penalty=0.1,
            frequency_penalty=0.1,
            user="someone",
            response_format={"type": "text"},
            extra_body={"some_future_field": {"x": 1}},
        )
    assert completion.choices[0].message.content == "ok"
    assert completion.model == "probe/some-model"
    seen = probe.seen[0]
    assert [(t.role, t.content) for t in seen.messages] == [
        ("system", "Be brief."),
        ("system", "Be kind."),
        ("user", "Hi"),
        ("assistant", "Hello."),
        ("user", "one\ntwo"),
    ]
    assert seen.model == "some-model"
    assert seen.temperature == 0.5
    assert seen.max_tokens == 40
    assert seen.stop == ["END"]


BAD_REQUESTS: list[tuple[str, dict[str, Any], int]] = [
    ("n above 1", {"n": 2}, 400),
    ("tools", {"tools": [{"type": "function", "function": {"name": "f"}}]}, 400),
    ("json mode", {"response_format": {"type": "json_object"}}, 400),
    ("logprobs", {"logprobs": True}, 400),
    ("no messages", {"messages": []}, 422),
    ("messages missing", {"messages": None}, 422),
    ("tool role", {"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, 422),
    ("unknown role", {"messages": [{"role": "wizard", "content": "x"}]}, 422),
    ("user without content", {"messages": [{"role": "user"}]}, 422),
    (
        "image part",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                    ],
                }
            ]
        },
        422,
    ),
    ("temperature 5", {"temperature": 5}, 422),
    ("max_tokens 0", {"max_tokens": 0}, 422),
    ("five stop sequences", {"stop": ["a", "b", "c", "d", "e"]}, 422),
    ("model missing", {"model": None}, 422),
    ("content too long", {"messages": [{"role": "user", "content": "x" * 101}]}, 422),
]


@pytest.mark.parametrize(
    ("change", "status"),
    [(change, status) for _, change, status in BAD_REQUESTS],
    ids=[name for name, _, _ in BAD_REQUESTS],
)
async def test_bad_input_gets_a_4xx_in_the_one_error_shape(
    app_factory: AppFactory, change: dict[str, Any], status: int
) -> None:
    body = {"model": "simulated", "messages": HELLO, **change}
    body = {key: value for key, value in body.items() if value is not None}
    app = app_factory(limits={"max_message_chars": 100})
    async with asgi_client(app) as client:
        response = await client.post("/v1/chat/completions", json=body)
        active = app.state.components.streams.active
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]
    assert active == 0


async def test_sdk_reads_the_error_shape(app_factory: AppFactory) -> None:
    async with served(app_factory) as (_, client):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="simulated", messages=HELLO, n=2)
        with pytest.raises(openai.UnprocessableEntityError) as invalid:
            await client.chat.completions.create(
                model="simulated",
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x"}}],
                    }
                ],
            )
    assert caught.value.code == "bad_request"
    assert "n=1" in caught.value.message
    assert "image_url" in invalid.value.message


async def test_disconnect_mid_stream_closes_the_provider(app_factory: AppFactory) -> None:
    probe = ProbeProvider([f" word{i}" for i in range(20)], delay=0.3)
    async with served(app_factory) as (server, client):
        server.components.providers.register(probe)
        stream = await client.chat.completions.create(model="probe", messages=HELLO, stream=True)
        received: list[str] = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
                if len(received) == 3:
                    break
        await stream.close()
        loop = asyncio.get_running_loop()
        closed_at = loop.time()
        await asyncio.wait_for(probe.closed.wait(), timeout=probe.delay * 2)
        # Closed before the provider produced another delta.
        assert loop.time() - closed_at < probe.delay
        assert probe.yielded == 3
        await eventually(lambda: server.components.streams.active == 0, timeout=1, interval=0.02)
        assert server.components.streams.active == 0


async def test_disconnect_while_waiting_for_a_non_streamed_answer_closes_the_provider(
    app_factory: AppFactory,
) -> None:
    probe = ProbeProvider([f" word{i}" for i in range(20)], delay=0.3)
    async with served(app_factory) as (server, _):
        server.components.providers.register(probe)
        async with httpx.AsyncClient(base_url=server.url, timeout=0.8) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post("/v1/chat/completions", json={"model": "probe", "messages": HELLO})
        await asyncio.wait_for(probe.closed.wait(), timeout=probe.delay * 2)
        assert probe.yielded <= 4
        await eventually(lambda: server.components.streams.active == 0, timeout=1, interval=0.02)
        assert server.components.streams.active == 0


async def test_provider_failure_mid_stream_raises_api_error_in_the_sdk(
    app_factory: AppFactory,
) -> None:
    probe = ProbeProvider(["one", " two", " three"], fail_after=2)
    async with served(app_factory) as (server, client):
        server.components.providers.register(probe)
        stream = await client.chat.completions.create(model="probe", messages=HELLO, stream=True)
        received: list[str] = []
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
    assert received == ["one", " two"]
    assert caught.value.code == "provider_error"
    assert "fell over" in caught.value.message


async def test_provider_failure_without_streaming_is_a_502(app_factory: AppFactory) -> None:
    probe = ProbeProvider(["one", " two", " three"], fail_after=2)
    async with served(app_factory) as (server, client):
        server.components.providers.register(probe)
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="probe", messages=HELLO)
    assert caught.value.status_code == 502
    assert caught.value.code == "provider_error"


async def test_heartbeats_on_a_stalled_stream_are_ignored_by_the_sdk(
    app_factory: AppFactory,
) -> None:
    interval = 0.1
    stalled = SimulatedProvider(
        delay=0, script=["before", " after"], stall_after=1, stall_seconds=interval * 4
    )
    async with served(app_factory, streaming={"heartbeat_interval": interval}) as (
        server,
        client,
    ):
        server.components.providers.register(stalled)
        async with httpx.AsyncClient(base_url=server.url) as http:
            raw = await http.post(
                "/v1/chat/completions",
                json={"model": "simulated", "messages": HELLO, "stream": True},
            )
        stream = await client.chat.completions.create(
            model="simulated", messages=HELLO, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert raw.text.count(": ping\n\n") >= 2
    assert text == "before after"
