"""Anthropic's Messages API through the official ``anthropic`` SDK and LangChain's
``ChatAnthropic``, over a real HTTP connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessageChunk

from streamforge.chains.providers.simulated import DEFAULT_ANSWER, SimulatedProvider, split_words
from streamforge.streaming.anthropic import AnthropicEventEncoder
from streamforge.streaming.events import EventType, StreamEvent
from tests.conftest import AppFactory, LiveServer, asgi_client, live_server
from tests.polling import eventually
from tests.test_openai_api import ProbeProvider

WORDS = split_words(DEFAULT_ANSWER)
HELLO: list[Any] = [{"role": "user", "content": "Hello"}]
AUTH = {"enabled": True, "key_cache_seconds": 0}
GREEDY = {"temperature": 0}


@asynccontextmanager
async def served(
    app_factory: AppFactory, **overrides: Any
) -> AsyncIterator[tuple[LiveServer, anthropic.AsyncAnthropic]]:
    async with live_server(app_factory(**overrides)) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="x", max_retries=0)
        async with client:
            yield server, client


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], orjson.loads(fields["data"])))
    return events


async def test_sdk_creates_a_message(app_factory: AppFactory) -> None:
    async with served(app_factory) as (_, client):
        message = await client.messages.create(model="simulated", max_tokens=1024, messages=HELLO)
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "simulated"
    assert len(message.content) == 1
    block = message.content[0]
    assert block.type == "text" and block.text == DEFAULT_ANSWER
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens == 1
    assert message.usage.output_tokens == len(WORDS)


async def test_sdk_streams_a_message(app_factory: AppFactory) -> None:
    async with (
        served(app_factory) as (_, client),
        client.messages.stream(model="simulated", max_tokens=1024, messages=HELLO) as stream,
    ):
        deltas = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert deltas == WORDS
    assert final.content[0].type == "text" and final.content[0].text == DEFAULT_ANSWER
    assert final.stop_reason == "end_turn"
    assert final.stop_sequence is None
    assert final.usage.input_tokens == 1
    assert final.usage.output_tokens == len(WORDS)
    assert final.id.startswith("msg_") and final.model == "simulated"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_answer_cut_at_max_tokens_stops_with_max_tokens(
    app_factory: AppFactory, stream: bool
) -> None:
    async with served(app_factory) as (_, client):
        if stream:
            async with client.messages.stream(
                model="simulated", max_tokens=3, messages=HELLO
            ) as events:
                message = await events.get_final_message()
        else:
            message = await client.messages.create(model="simulated", max_tokens=3, messages=HELLO)
    assert message.content[0].type == "text"
    assert message.content[0].text == "".join(WORDS[:3])
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_answer_ending_on_a_stop_sequence_says_which(
    app_factory: AppFactory, stream: bool
) -> None:
    stops = ["Server-Sent", "simulated"]
    async with served(app_factory) as (_, client):
        if stream:
            async with client.messages.stream(
                model="simulated", max_tokens=1024, messages=HELLO, stop_sequences=stops
            ) as events:
                message = await events.get_final_message()
        else:
            message = await client.messages.create(
                model="simulated", max_tokens=1024, messages=HELLO, stop_sequences=stops
            )
    assert message.content[0].type == "text"
    assert message.content[0].text == DEFAULT_ANSWER[: DEFAULT_ANSWER.index("simulated")]
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "simulated"


async def test_system_prompt_and_text_blocks_reach_the_provider(app_factory: AppFactory) -> None:
    probe = ProbeProvider(["fine"])
    async with served(app_factory) as (server, client):
        server.components.providers.register(probe)
        message = await client.messages.create(
            model="probe",
            max_tokens=50,
            system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "How are you?"},
            ],
            stop_sequences=["END"],
            metadata={"user_id": "someone"},
            # Newer SDKs have no temperature argument; the API still takes the field.
            extra_body={"temperature": 0.3},
        )
    assert message.content[0].type == "text" and message.content[0].text == "fine"
    seen = probe.seen[0]
    assert [(t.role, t.content) for t in seen.messages] == [
        ("system", "Be brief.\nBe kind."),
        ("user", "Hi"),
        ("assistant", "Hello."),
        ("user", "How are you?"),
    ]
    assert seen.temperature == 0.3
    assert seen.max_tokens == 50
    assert seen.stop == ["END"]


async def test_wire_format_is_anthropics(app_factory: AppFactory) -> None:
    interval = 0.1
    stalled = SimulatedProvider(
        delay=0, script=["before\n", " é 😀"], stall_after=1, stall_seconds=interval * 4
    )
    async with served(app_factory, streaming={"heartbeat_interval": interval}) as (server, _):
        server.components.providers.register(stalled)
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.post(
                "/v1/messages",
                json={"model": "simulated", "max_tokens": 10, "messages": HELLO, "stream": True},
            )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert all(name == data["type"] for name, data in events)
    names = [name for name, _ in events if name != "ping"]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert sum(name == "ping" for name, _ in events) >= 2
    start = events[0][1]["message"]
    assert start["content"] == [] and start["role"] == "assistant"
    assert start["stop_reason"] is None and start["id"].startswith("msg_")
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert deltas == [
        {"type": "text_delta", "text": "before\n"},
        {"type": "text_delta", "text": " é 😀"},
    ]
    end = next(data for name, data in events if name == "message_delta")
    assert end["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert end["usage"] == {"input_tokens": 1, "output_tokens": 2}


async def test_unknown_model_is_not_found_in_the_sdk(app_factory: AppFactory) -> None:
    async with served(app_factory) as (_, client):
        with pytest.raises(anthropic.NotFoundError) as caught:
            await client.messages.create(model="nonexistent", max_tokens=10, messages=HELLO)
        with pytest.raises(anthropic.NotFoundError) as streamed:
            async with client.messages.stream(
                model="nonexistent", max_tokens=10, messages=HELLO
            ) as stream:
                await stream.get_final_message()
    for error in (caught.value, streamed.value):
        assert error.status_code == 404
        assert error.body == {
            "type": "error",
            "error": {"type": "not_found_error", "message": error.body["error"]["message"]},  # type: ignore[index]
        }
        assert "nonexistent" in error.body["error"]["message"]  # type: ignore[index]


async def test_keys_in_x_api_key_or_bearer_and_bad_keys_refused(
    app_factory: AppFactory,
) -> None:
    from streamforge.models import Role

    async with live_server(app_factory(auth=AUTH)) as server:
        auth = server.components.auth
        await auth.create_user("ada", Role.USER)
        key = (await auth.create_key("ada"))[0]
        by_header = anthropic.AsyncAnthropic(base_url=server.url, api_key=key, max_retries=0)
        by_bearer = anthropic.AsyncAnthropic(base_url=server.url, auth_token=key, max_retries=0)
        wrong = anthropic.AsyncAnthropic(base_url=server.url, api_key="sf-wrong", max_retries=0)
        async with by_header, by_bearer, wrong:
            first = await by_header.messages.create(model="simulated", max_tokens=2, messages=HELLO)
            second = await by_bearer.messages.create(
                model="simulated", max_tokens=2, messages=HELLO
            )
            with pytest.raises(anthropic.AuthenticationError) as refused:
                await wrong.messages.create(model="simulated", max_tokens=2, messages=HELLO)
        async with httpx.AsyncClient(base_url=server.url) as http:
            missing = await http.post(
                "/v1/messages", json={"model": "simulated", "max_tokens": 2, "messages": HELLO}
            )
    assert first.content[0].type == "text" and first.content[0].text == "".join(WORDS[:2])
    assert second.content[0].type == "text" and second.content[0].text == "".join(WORDS[:2])
    assert refused.value.status_code == 401
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert missing.status_code == 401
    assert missing.json()["type"] == "error"
    assert missing.json()["error"]["type"] == "authentication_error"


async def test_provider_failure_mid_stream_raises_in_the_sdk(app_factory: AppFactory) -> None:
    probe = ProbeProvider(["one", " two", " three"], fail_after=2)
    async with served(app_factory) as (server, client):
        server.components.providers.register(probe)
        received: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with client.messages.stream(
                model="probe", max_tokens=10, messages=HELLO
            ) as stream:
                async for text in stream.text_stream:
                    received.append(text)
    assert received == ["one", " two"]
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert "fell over" in body["error"]["message"]


async def test_provider_failure_without_streaming_is_a_502(app_factory: AppFactory) -> None:
    probe = ProbeProvider(["one", " two", " three"], fail_after=2)
    async with served(app_factory) as (server, client):
        server.components.providers.register(probe)
        with pytest.raises(anthropic.InternalServerError) as caught:
            await client.messages.create(model="probe", max_tokens=10, messages=HELLO)
    assert caught.value.status_code == 502
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "fell over" in caught.value.body["error"]["message"]  # type: ignore[index]


async def test_disconnect_mid_stream_stops_the_provider(app_factory: AppFactory) -> None:
    probe = ProbeProvider([f" word{i}" for i in range(20)], delay=0.3)
    async with served(app_factory) as (server, client):
        server.components.providers.register(probe)
        received: list[str] = []
        async with client.messages.stream(model="probe", max_tokens=100, messages=HELLO) as stream:
            async for text in stream.text_stream:
                received.append(text)
                if len(received) == 2:
                    break
        await asyncio.wait_for(probe.closed.wait(), timeout=probe.delay * 3)
        assert probe.yielded <= 3
        await eventually(lambda: server.components.streams.active == 0, timeout=1, interval=0.02)
        assert server.components.streams.active == 0


BAD_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("max_tokens missing", {"max_tokens": None}),
    ("max_tokens 0", {"max_tokens": 0}),
    ("no messages", {"messages": []}),
    ("system role in messages", {"messages": [{"role": "system", "content": "x"}]}),
    ("content missing", {"messages": [{"role": "user"}]}),
    (
        "image block",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}},
                    ],
                }
            ]
        },
    ),
    ("image block in system", {"system": [{"type": "image"}]}),
    ("tools", {"tools": [{"name": "x", "input_schema": {"type": "object"}}]}),
    ("thinking", {"thinking": {"type": "enabled", "budget_tokens": 1024}}),
    ("temperature 2", {"temperature": 2}),
    ("structured output", {"output_config": {"format": {"type": "json_schema", "schema": {}}}}),
    ("seventeen stop sequences", {"stop_sequences": [str(i) for i in range(17)]}),
    ("empty stop sequence", {"stop_sequences": [""]}),
    ("model missing", {"model": None}),
    ("model with a wrong type", {"model": 5}),
    ("content too long", {"messages": [{"role": "user", "content": "x" * 101}]}),
]


@pytest.mark.parametrize(
    "change", [change for _, change in BAD_REQUESTS], ids=[name for name, _ in BAD_REQUESTS]
)
async def test_bad_input_gets_a_400_in_anthropics_error_shape(
    app_factory: AppFactory, change: dict[str, Any]
) -> None:
    body = {"model": "simulated", "max_tokens": 10, "messages": HELLO, **change}
    body = {key: value for key, value in body.items() if value is not None}
    app = app_factory(limits={"max_message_chars": 100})
    async with asgi_client(app) as client:
        response = await client.post("/v1/messages", json=body)
        active = app.state.components.streams.active
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"]
    assert active == 0


async def test_malformed_json_and_wrong_method_in_anthropics_error_shape(
    app_factory: AppFactory,
) -> None:
    async with asgi_client(app_factory()) as client:
        malformed = await client.post(
            "/v1/messages", content=b"{", headers={"content-type": "application/json"}
        )
        wrong_method = await client.get("/v1/messages")
        unknown = await client.post("/v1/messages/count_tokens", json={})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["type"] == "invalid_request_error"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["type"] == "error"
    assert wrong_method.json()["error"]["message"]
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "not_found_error"


async def test_body_over_the_limit_is_a_413_in_anthropics_error_shape(
    app_factory: AppFactory,
) -> None:
    body = {
        "model": "simulated",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x" * 5000}],
    }
    async with asgi_client(app_factory(limits={"max_body_bytes": 2048})) as client:
        response = await client.post("/v1/messages", json=body)
    assert response.status_code == 413
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "request_too_large"


async def test_langchain_chat_anthropic_streams(app_factory: AppFactory) -> None:
    async with served(app_factory) as (server, _):
        model = ChatAnthropic(  # type: ignore[call-arg]
            model="simulated",
            base_url=server.url,
            api_key="x",  # type: ignore[arg-type]
            max_retries=0,
            max_tokens=1024,
        )
        chunks = [chunk async for chunk in model.astream("Hello")]
        answer = await model.ainvoke("Hello")

    assert len([c for c in chunks if c.text]) == len(WORDS)
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert isinstance(total, AIMessageChunk)
    assert total.text == DEFAULT_ANSWER
    assert total.usage_metadata is not None
    assert total.usage_metadata["output_tokens"] == len(WORDS)
    assert total.usage_metadata["input_tokens"] == 1
    assert answer.text == DEFAULT_ANSWER
    assert answer.response_metadata["stop_reason"] == "end_turn"


async def test_sdk_against_the_local_model(app_factory: AppFactory) -> None:
    story: list[Any] = [
        {"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}
    ]
    async with served(app_factory, llm={"provider": "local"}) as (_, client):
        whole = await client.messages.create(
            model="local", max_tokens=16, extra_body=GREEDY, messages=story, timeout=120
        )
        async with client.messages.stream(
            model="local", max_tokens=16, extra_body=GREEDY, messages=story, timeout=120
        ) as stream:
            deltas = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        short = await client.messages.create(
            model="local",
            max_tokens=200,
            extra_body=GREEDY,
            system="Answer with one word.",
            messages=[{"role": "user", "content": "Say yes."}],
            timeout=120,
        )
    assert whole.content[0].type == "text" and whole.content[0].text.strip()
    assert whole.stop_reason == "max_tokens"
    assert whole.usage.output_tokens == 16
    assert whole.usage.input_tokens > 10
    assert len(deltas) >= 5
    # Same model, same prompt, temperature 0: streamed and whole answers agree.
    assert final.content[0].type == "text"
    assert "".join(deltas) == final.content[0].text == whole.content[0].text
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 16
    # An answer that ends on its own before the limit.
    assert short.stop_reason == "end_turn"
    assert short.usage.output_tokens < 200


async def test_streams_per_key_are_limited_as_everywhere(app_factory: AppFactory) -> None:
    probe = ProbeProvider([f" word{i}" for i in range(10)], delay=0.05)
    async with served(app_factory, limits={"concurrent_streams": 1}) as (server, client):
        server.components.providers.register(probe)
        async with client.messages.stream(model="probe", max_tokens=100, messages=HELLO) as first:
            with pytest.raises(anthropic.RateLimitError) as refused:
                await client.messages.create(model="probe", max_tokens=100, messages=HELLO)
            text = "".join([delta async for delta in first.text_stream])
        after = await client.messages.create(model="probe", max_tokens=100, messages=HELLO)
    assert refused.value.status_code == 429
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert text == "".join(f" word{i}" for i in range(10))
    assert after.stop_reason == "end_turn"


async def test_encoder_writes_any_delta_as_one_data_line() -> None:
    encoder = AnthropicEventEncoder("msg_x", 'a "model"')
    deltas = ["line\nbreak", 'quote " and \\', "ünï 🚀", "\r\n\n", "\u2028", "event: x"]
    events = [StreamEvent(i + 1, EventType.MESSAGE, d) for i, d in enumerate(deltas)]
    parsed = sse_events((encoder.head() + encoder.encode(events)).decode())
    assert parsed[0][1]["message"]["model"] == 'a "model"'
    assert [data["delta"]["text"] for _, data in parsed[2:]] == deltas


@pytest.mark.parametrize("reason", ["interrupted", "cancelled"])
async def test_generation_that_did_not_finish_ends_with_an_error_event(reason: str) -> None:
    encoder = AnthropicEventEncoder("msg_x", "m")
    body = encoder.encode(
        [
            StreamEvent(1, EventType.MESSAGE, "partial"),
            StreamEvent(2, EventType.DONE, {"finish_reason": reason, "usage": None}),
        ]
    )
    names = [name for name, _ in sse_events(body.decode())]
    assert names == ["content_block_delta", "error"]
    error = sse_events(body.decode())[-1][1]
    assert error["type"] == "error"
    assert error["error"]["type"] == "api_error"
    assert reason in error["error"]["message"]
    # A stream the server cuts (the shared event log gone) tells the client to come back.
    cut = sse_events(encoder.interrupt({"code": "event_log_unavailable", "message": "x"}).decode())
    assert cut == [
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "x"}})
    ]
