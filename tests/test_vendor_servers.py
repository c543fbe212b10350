"""The loopback vendor servers, proven with the official SDKs and the LangChain partner
packages, so later tests can trust them as stand-ins for OpenAI, Anthropic and Ollama."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import httpx2
import ollama
import openai
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI

from tests.vendors import (
    DEFAULT_TOKENS,
    AnthropicServer,
    Behaviour,
    OllamaServer,
    OpenAIServer,
    VendorServer,
    aclose_chat_model,
)

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5-20251001"
OLLAMA_MODEL = "llama3.2"
SYSTEM = "You are terse."
QUESTION = "Say hello."
PROMPT_TOKENS = Behaviour().prompt_tokens


@pytest.fixture(autouse=True)
def _no_outside_world(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in the environment may point a client elsewhere or turn on tracing."""
    for name in (
        "OPENAI_BASE_URL",
        "OPENAI_API_BASE",
        "OPENAI_API_KEY",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
        "OLLAMA_HOST",
        "OLLAMA_API_KEY",
        "LANGSMITH_TRACING",
        "LANGCHAIN_TRACING_V2",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


# -- each client, driven the same way ---------------------------------------------------------

Usage = tuple[int, int]  # (input tokens, output tokens)
StreamFn = Callable[[str, list[str]], Awaitable[Usage | None]]


async def openai_sdk(base_url: str, out: list[str]) -> Usage | None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model=OPENAI_MODEL,
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": QUESTION},
            ],
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                out.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        return usage


async def anthropic_sdk(base_url: str, out: list[str]) -> Usage | None:
    async with anthropic.AsyncAnthropic(base_url=base_url, api_key="test", max_retries=0) as client:
        async with client.messages.stream(
            model=ANTHROPIC_MODEL,
            max_tokens=4096,
            system=SYSTEM,
            messages=[{"role": "user", "content": QUESTION}],
        ) as stream:
            async for text in stream.text_stream:
                out.append(text)
            message = await stream.get_final_message()
        return (message.usage.input_tokens, message.usage.output_tokens)


async def ollama_sdk(base_url: str, out: list[str]) -> Usage | None:
    async with ollama.AsyncClient(host=base_url) as client:
        usage = None
        parts = await client.chat(
            model=OLLAMA_MODEL,
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": QUESTION},
            ],
            stream=True,
        )
        async for part in parts:
            if part.message.content:
                out.append(part.message.content)
            if part.done:
                assert part.prompt_eval_count is not None and part.eval_count is not None
                usage = (part.prompt_eval_count, part.eval_count)
        return usage


async def langchain_stream(model: Any, out: list[str], **options: Any) -> Usage | None:
    total: AIMessageChunk | None = None
    messages = [SystemMessage(SYSTEM), HumanMessage(QUESTION)]
    try:
        async for chunk in model.astream(messages, **options):
            assert isinstance(chunk, AIMessageChunk)
            if chunk.text:
                out.append(chunk.text)
            total = chunk if total is None else total + chunk
    finally:
        await aclose_chat_model(model)
    assert total is not None
    usage = total.usage_metadata
    if usage is None:
        return None
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    return (usage["input_tokens"], usage["output_tokens"])


async def langchain_openai(base_url: str, out: list[str]) -> Usage | None:
    model = ChatOpenAI(
        model=OPENAI_MODEL, base_url=base_url, api_key="test", max_retries=0, stream_usage=True
    )
    return await langchain_stream(model, out)


async def langchain_anthropic(base_url: str, out: list[str]) -> Usage | None:
    model = ChatAnthropic(
        model=ANTHROPIC_MODEL, base_url=base_url, api_key="test", max_retries=0, max_tokens=256
    )
    return await langchain_stream(model, out)


async def langchain_ollama(base_url: str, out: list[str]) -> Usage | None:
    return await langchain_stream(ChatOllama(model=OLLAMA_MODEL, base_url=base_url), out)


@dataclass(frozen=True)
class Client:
    name: str
    server: type[VendorServer]
    stream: StreamFn
    rate_limit_error: type[BaseException]
    # What the client raises when the connection drops mid-body.
    cut_error: type[BaseException]


CLIENTS = [
    Client("openai", OpenAIServer, openai_sdk, openai.RateLimitError, openai.APIConnectionError),
    Client(
        "langchain-openai",
        OpenAIServer,
        langchain_openai,
        openai.RateLimitError,
        openai.APIConnectionError,
    ),
    # The Anthropic SDK (2.x) wraps a cut transport in its own APIConnectionError, as the
    # OpenAI SDK does; langchain-anthropic raises a subclass of it.
    Client(
        "anthropic",
        AnthropicServer,
        anthropic_sdk,
        anthropic.RateLimitError,
        anthropic.APIConnectionError,
    ),
    Client(
        "langchain-anthropic",
        AnthropicServer,
        langchain_anthropic,
        anthropic.RateLimitError,
        anthropic.APIConnectionError,
    ),
    Client("ollama", OllamaServer, ollama_sdk, ollama.ResponseError, httpx.RemoteProtocolError),
    Client(
        "langchain-ollama",
        OllamaServer,
        langchain_ollama,
        ollama.ResponseError,
        httpx.RemoteProtocolError,
    ),
]


@pytest.fixture(params=CLIENTS, ids=[client.name for client in CLIENTS])
def client(request: pytest.FixtureRequest) -> Client:
    chosen: Client = request.param
    return chosen


@pytest.fixture
async def server(client: Client) -> AsyncIterator[VendorServer]:
    async with client.server() as running:
        yield running


async def test_streams_every_token_and_the_usage(client: Client, server: VendorServer) -> None:
    out: list[str] = []
    usage = await client.stream(server.base_url, out)
    assert out == list(DEFAULT_TOKENS)
    assert usage == (PROMPT_TOKENS, len(DEFAULT_TOKENS))
    record = server.last_chat
    assert record.outcome == "ok" and record.tokens_sent == len(DEFAULT_TOKENS)
    assert not record.disconnected


async def test_usage_numbers_are_scriptable(client: Client, server: VendorServer) -> None:
    server.behaviour = Behaviour.reply("One two three", prompt_tokens=40, completion_tokens=99)
    out: list[str] = []
    assert await client.stream(server.base_url, out) == (40, 99)
    assert out == ["One", " two", " three"]


async def test_rate_limit_once_then_success(client: Client, server: VendorServer) -> None:
    server.behaviour = Behaviour.failing(429, times=1, retry_after=7)
    with pytest.raises(client.rate_limit_error) as raised:
        await client.stream(server.base_url, [])
    error = raised.value
    if isinstance(error, ollama.ResponseError):
        assert error.status_code == 429
    else:
        assert isinstance(error, openai.APIStatusError | anthropic.APIStatusError)
        assert error.status_code == 429
        assert error.response.headers["retry-after"] == "7"

    out: list[str] = []
    await client.stream(server.base_url, out)
    assert out == list(DEFAULT_TOKENS)
    assert [request.outcome for request in server.chat_requests] == ["failed", "ok"]
    assert [request.status for request in server.chat_requests] == [429, 200]


async def test_cut_after_three_tokens_raises(client: Client, server: VendorServer) -> None:
    server.behaviour = Behaviour(cut_after=3)
    out: list[str] = []
    with pytest.raises(client.cut_error):
        await client.stream(server.base_url, out)
    assert out == list(DEFAULT_TOKENS[:3])
    assert server.last_chat.outcome == "cut"
    assert server.last_chat.tokens_sent == 3


async def test_cut_before_the_final_frames_still_raises(
    client: Client, server: VendorServer
) -> None:
    server.behaviour = Behaviour(cut_after=len(DEFAULT_TOKENS))
    out: list[str] = []
    with pytest.raises(client.cut_error):
        await client.stream(server.base_url, out)
    assert out == list(DEFAULT_TOKENS)


# -- OpenAI -----------------------------------------------------------------------------------


@pytest.fixture
async def openai_server() -> AsyncIterator[OpenAIServer]:
    async with OpenAIServer() as running:
        yield running


def sse_events(body: str) -> list[tuple[str | None, str]]:
    """(event, data) per SSE block; asserts the framing is exactly lines + blank lines."""
    assert body.endswith("\n\n")
    events = []
    for block in body.removesuffix("\n\n").split("\n\n"):
        event = None
        data = []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            else:
                assert field == "data", line
                data.append(value)
        events.append((event, "\n".join(data)))
    return events


async def test_openai_wire_format(openai_server: OpenAIServer) -> None:
    async with httpx.AsyncClient(base_url=openai_server.base_url) as http:
        response = await http.post(
            "/chat/completions",
            json={
                "model": OPENAI_MODEL,
                "messages": [{"role": "user", "content": QUESTION}],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["transfer-encoding"] == "chunked"
    events = sse_events(response.text)
    assert all(event is None for event, _ in events)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk["model"] == OPENAI_MODEL for chunk in chunks)
    first, *content, finish, usage = chunks
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert [chunk["choices"][0]["delta"] for chunk in content] == [
        {"content": token} for token in DEFAULT_TOKENS
    ]
    assert finish["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert usage["choices"] == []
    assert usage["usage"]["total_tokens"] == PROMPT_TOKENS + len(DEFAULT_TOKENS)


async def test_openai_without_include_usage_sends_no_usage_chunk(
    openai_server: OpenAIServer,
) -> None:
    async with openai.AsyncOpenAI(
        base_url=openai_server.base_url, api_key="test", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model=OPENAI_MODEL, messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_openai_non_streaming_and_models(openai_server: OpenAIServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=openai_server.base_url, api_key="test", max_retries=0
    ) as client:
        completion = await client.chat.completions.create(
            model=OPENAI_MODEL,
            messages=[{"role": "user", "content": QUESTION}],
            temperature=0.2,
            max_completion_tokens=50,
        )
        models = [model.id async for model in client.models.list()]
        model = await client.models.retrieve(OPENAI_MODEL)
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("no-such-model")
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "".join(DEFAULT_TOKENS)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == PROMPT_TOKENS
    assert completion.usage.completion_tokens == len(DEFAULT_TOKENS)
    assert OPENAI_MODEL in models and model.id == OPENAI_MODEL
    body = openai_server.last_chat.json
    assert body["temperature"] == 0.2 and body["max_completion_tokens"] == 50
    assert "stream" not in body


async def test_langchain_openai_sends_what_streamforge_sets(openai_server: OpenAIServer) -> None:
    model = ChatOpenAI(
        model=OPENAI_MODEL,
        base_url=openai_server.base_url,
        api_key="test",
        max_retries=0,
        stream_usage=True,
    )
    out: list[str] = []
    await langchain_stream(model, out, temperature=0.3, max_completion_tokens=3)
    # Three tokens at most: the server truncates and says why, as OpenAI does.
    assert out == list(DEFAULT_TOKENS[:3])
    record = openai_server.last_chat
    assert record.headers["authorization"] == "Bearer test"
    assert record.json["model"] == OPENAI_MODEL
    assert record.json["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTION},
    ]
    assert record.json["stream"] is True
    assert record.json["stream_options"] == {"include_usage": True}
    assert record.json["temperature"] == 0.3
    assert record.json["max_completion_tokens"] == 3


async def test_openai_max_tokens_gives_finish_reason_length(openai_server: OpenAIServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=openai_server.base_url, api_key="test", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model=OPENAI_MODEL,
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            max_tokens=2,
        )
        chunks = [chunk async for chunk in stream]
    assert [c.choices[0].delta.content for c in chunks[1:3]] == list(DEFAULT_TOKENS[:2])
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_openai_server_errors_and_in_stream_errors(openai_server: OpenAIServer) -> None:
    openai_server.enqueue(Behaviour.failing(500), Behaviour(error_after=2))
    async with openai.AsyncOpenAI(
        base_url=openai_server.base_url, api_key="test", max_retries=0
    ) as client:
        with pytest.raises(openai.InternalServerError) as raised:
            await client.chat.completions.create(
                model=OPENAI_MODEL, messages=[{"role": "user", "content": QUESTION}]
            )
        assert raised.value.body == {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
        stream = await client.chat.completions.create(
            model=OPENAI_MODEL, messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        seen: list[str] = []
        with pytest.raises(openai.APIError, match="server had an error"):
            async for chunk in stream:
                seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "".join(DEFAULT_TOKENS[:2])
    assert openai_server.last_chat.outcome == "stream_error"


async def test_openai_validates_like_the_real_api(openai_server: OpenAIServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=openai_server.base_url, api_key="test", max_retries=0
    ) as client:
        with pytest.raises(openai.BadRequestError, match="only allowed when 'stream'"):
            await client.chat.completions.create(
                model=OPENAI_MODEL,
                messages=[{"role": "user", "content": QUESTION}],
                stream_options={"include_usage": True},
            )
    async with httpx.AsyncClient(base_url=openai_server.url) as http:
        missing = await http.post("/v1/chat/completions", json={"model": OPENAI_MODEL})
        unknown = await http.post("/v1/nothing", json={})
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "missing_required_parameter"
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "Invalid URL (POST /v1/nothing)"


async def test_openai_sdk_retries_honour_retry_after(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = Behaviour.failing(429, times=1, retry_after=0.01)
    async with openai.AsyncOpenAI(
        base_url=openai_server.base_url, api_key="test", max_retries=1
    ) as client:
        started = time.monotonic()
        completion = await client.chat.completions.create(
            model=OPENAI_MODEL, messages=[{"role": "user", "content": QUESTION}]
        )
    assert time.monotonic() - started < 0.4  # not the SDK's default backoff
    assert completion.choices[0].message.content == "".join(DEFAULT_TOKENS)
    retries = [request.headers["x-stainless-retry-count"] for request in openai_server.requests]
    assert retries == ["0", "1"]


# -- Anthropic --------------------------------------------------------------------------------


@pytest.fixture
async def anthropic_server() -> AsyncIterator[AnthropicServer]:
    async with AnthropicServer() as running:
        yield running


async def test_anthropic_wire_format(anthropic_server: AnthropicServer) -> None:
    async with httpx.AsyncClient(base_url=anthropic_server.url) as http:
        response = await http.post(
            "/v1/messages",
            json={
                "model": ANTHROPIC_MODEL,
                "max_tokens": 100,
                "stream": True,
                "messages": [{"role": "user", "content": QUESTION}],
            },
        )
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = sse_events(response.text)
    names = [event for event, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * len(DEFAULT_TOKENS),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [json.loads(data) for _, data in events]
    assert [payload["type"] for payload in payloads] == names
    assert payloads[0]["message"]["usage"]["input_tokens"] == PROMPT_TOKENS
    assert payloads[0]["message"]["content"] == []
    assert payloads[3]["delta"] == {"type": "text_delta", "text": DEFAULT_TOKENS[0]}
    assert payloads[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert payloads[-2]["usage"]["output_tokens"] == len(DEFAULT_TOKENS)


async def test_anthropic_raw_events_and_non_streaming(anthropic_server: AnthropicServer) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=anthropic_server.base_url, api_key="test", max_retries=0
    ) as client:
        stream = await client.messages.create(
            model=ANTHROPIC_MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
        )
        kinds = [event.type async for event in stream]
        message = await client.messages.create(
            model=ANTHROPIC_MODEL,
            max_tokens=2,
            system=SYSTEM,
            messages=[{"role": "user", "content": QUESTION}],
        )
        count = await client.messages.count_tokens(
            model=ANTHROPIC_MODEL, messages=[{"role": "user", "content": QUESTION}]
        )
    # The SDK drops ping events.
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * len(DEFAULT_TOKENS),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert message.content[0].type == "text"
    assert message.content[0].text == "".join(DEFAULT_TOKENS[:2])
    assert message.stop_reason == "max_tokens"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (PROMPT_TOKENS, 2)
    assert count.input_tokens == PROMPT_TOKENS
    assert anthropic_server.last_chat.json["system"] == SYSTEM


async def test_langchain_anthropic_sends_what_streamforge_sets(
    anthropic_server: AnthropicServer,
) -> None:
    model = ChatAnthropic(
        model=ANTHROPIC_MODEL,
        base_url=anthropic_server.base_url,
        api_key="test",
        max_retries=0,
        max_tokens=64,
    )
    out: list[str] = []
    usage = await langchain_stream(model, out, temperature=0.5, stop=["END"])
    assert out == list(DEFAULT_TOKENS)
    assert usage == (PROMPT_TOKENS, len(DEFAULT_TOKENS))
    record = anthropic_server.last_chat
    # This SDK generation sends the API key as a bearer token, not as x-api-key.
    assert record.headers["authorization"] == "Bearer test"
    assert "anthropic-version" in record.headers
    body = record.json
    assert body["system"] == SYSTEM
    assert body["messages"] == [{"role": "user", "content": QUESTION}]
    assert body["max_tokens"] == 64 and body["temperature"] == 0.5
    assert body["stop_sequences"] == ["END"]
    assert body["stream"] is True


async def test_anthropic_errors(anthropic_server: AnthropicServer) -> None:
    anthropic_server.enqueue(Behaviour.failing(529), Behaviour(error_after=1, error_status=529))
    async with anthropic.AsyncAnthropic(
        base_url=anthropic_server.base_url, api_key="test", max_retries=0
    ) as client:
        with pytest.raises(anthropic.OverloadedError) as raised:
            await client.messages.create(
                model=ANTHROPIC_MODEL,
                max_tokens=10,
                messages=[{"role": "user", "content": QUESTION}],
            )
        body = raised.value.body
        assert isinstance(body, dict)
        assert body["type"] == "error"
        assert body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
        # An error event arrives on a 200 response, so it is a plain APIStatusError.
        seen: list[str] = []
        with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
            async with client.messages.stream(
                model=ANTHROPIC_MODEL,
                max_tokens=10,
                messages=[{"role": "user", "content": QUESTION}],
            ) as stream:
                async for text in stream.text_stream:
                    seen.append(text)
        assert seen == [DEFAULT_TOKENS[0]]
        # The system prompt belongs in the top-level field, never among the messages.
        with pytest.raises(anthropic.BadRequestError, match="'user' or 'assistant'"):
            await client.messages.create(
                model=ANTHROPIC_MODEL,
                max_tokens=10,
                messages=[
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": QUESTION},
                ],
            )


# -- Ollama -----------------------------------------------------------------------------------


@pytest.fixture
async def ollama_server() -> AsyncIterator[OllamaServer]:
    async with OllamaServer() as running:
        yield running


async def test_ollama_wire_format(ollama_server: OllamaServer) -> None:
    async with httpx.AsyncClient(base_url=ollama_server.url) as http:
        response = await http.post(
            "/api/chat",
            # No "stream" field: Ollama streams by default.
            json={"model": OLLAMA_MODEL, "messages": [{"role": "user", "content": QUESTION}]},
        )
        loaded = await http.post("/api/chat", json={"model": OLLAMA_MODEL, "stream": False})
        missing = await http.post("/api/chat", json={"messages": []})
        unknown = await http.get("/api/nothing")
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.text.endswith("}\n")
    lines = [json.loads(line) for line in response.text.splitlines()]
    *parts, final = lines
    assert [part["message"] for part in parts] == [
        {"role": "assistant", "content": token} for token in DEFAULT_TOKENS
    ]
    assert all(part["done"] is False and part["model"] == OLLAMA_MODEL for part in parts)
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["prompt_eval_count"] == PROMPT_TOKENS
    assert final["eval_count"] == len(DEFAULT_TOKENS)
    assert final["total_duration"] >= final["eval_duration"] > 0
    assert loaded.json()["done_reason"] == "load"
    assert (missing.status_code, missing.json()) == (400, {"error": "model is required"})
    assert (unknown.status_code, unknown.text) == (404, "404 page not found")


async def test_ollama_non_streaming_and_model_endpoints(ollama_server: OllamaServer) -> None:
    async with ollama.AsyncClient(host=ollama_server.base_url) as client:
        response = await client.chat(
            model=OLLAMA_MODEL,
            messages=[{"role": "user", "content": QUESTION}],
            options={"num_predict": 3, "temperature": 0.1},
        )
        listed = await client.list()
        shown = await client.show(OLLAMA_MODEL)
        with pytest.raises(ollama.ResponseError) as raised:
            await client.show("no-such-model")
    assert response.message.content == "".join(DEFAULT_TOKENS[:3])
    assert response.done_reason == "length"
    assert (response.prompt_eval_count, response.eval_count) == (PROMPT_TOKENS, 3)
    assert [model.model for model in listed.models] == ollama_server.models
    assert shown.capabilities == ["completion", "tools"]
    assert raised.value.status_code == 404
    assert ollama_server.last_chat.json["options"] == {"num_predict": 3, "temperature": 0.1}
    async with httpx.AsyncClient(base_url=ollama_server.url) as http:
        assert (await http.get("/api/version")).json() == {"version": "0.12.6"}
        assert (await http.get("/")).text == "Ollama is running"


async def test_langchain_ollama_sends_what_streamforge_sets(ollama_server: OllamaServer) -> None:
    model = ChatOllama(
        model=OLLAMA_MODEL, base_url=ollama_server.base_url, client_kwargs={"timeout": 10}
    )
    out: list[str] = []
    usage = await langchain_stream(
        model, out, options={"temperature": 0.4, "num_predict": 100, "stop": ["END"]}
    )
    assert out == list(DEFAULT_TOKENS)
    assert usage == (PROMPT_TOKENS, len(DEFAULT_TOKENS))
    body = ollama_server.last_chat.json
    assert body["model"] == OLLAMA_MODEL and body["stream"] is True
    assert body["messages"][0] == {"role": "system", "content": SYSTEM}
    assert body["options"]["temperature"] == 0.4
    assert body["options"]["num_predict"] == 100
    assert body["options"]["stop"] == ["END"]


async def test_ollama_in_stream_error(ollama_server: OllamaServer) -> None:
    ollama_server.behaviour = Behaviour(error_after=2)
    out: list[str] = []
    with pytest.raises(ollama.ResponseError, match="error was encountered"):
        await ollama_sdk(ollama_server.base_url, out)
    assert out == list(DEFAULT_TOKENS[:2])


def test_chat_ollama_validate_model_on_init_needs_a_threaded_server() -> None:
    # validate_model_on_init lists models with the *sync* client, which would block an
    # in-loop server; a threaded one serves it.
    # A model that fails validation is never returned, so nothing could close its pooled
    # connection; "Connection: close" keeps the pool empty.
    options: dict[str, Any] = {
        "validate_model_on_init": True,
        "client_kwargs": {"headers": {"Connection": "close"}},
    }
    with OllamaServer() as server:
        ChatOllama(model=OLLAMA_MODEL, base_url=server.base_url, **options)
        with pytest.raises(ValueError, match="not found in Ollama"):
            ChatOllama(model="absent", base_url=server.base_url, **options)
        assert [request.path for request in server.requests] == ["/api/tags"] * 2


# -- the scripting itself ---------------------------------------------------------------------


async def test_queued_behaviours_apply_in_order_then_the_default(
    openai_server: OpenAIServer,
) -> None:
    openai_server.enqueue(Behaviour.failing(429), Behaviour.failing(503), Behaviour.reply("Hi"))
    assert openai_server.pending == 3
    statuses = []
    async with httpx.AsyncClient(base_url=openai_server.base_url) as http:
        for _ in range(4):
            response = await http.post(
                "/chat/completions",
                json={"model": OPENAI_MODEL, "messages": []},
            )
            statuses.append(response.status_code)
            if response.status_code == 200:
                statuses.append(response.json()["choices"][0]["message"]["content"])
    assert statuses == [429, 503, 200, "Hi", 200, "".join(DEFAULT_TOKENS)]
    assert openai_server.pending == 0


async def test_a_client_leaving_mid_stream_is_recorded(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = Behaviour.many(100, fast=False, delay=0.02)
    async with openai.AsyncOpenAI(
        base_url=openai_server.base_url, api_key="test", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model=OPENAI_MODEL, messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        received = 0
        async for chunk in stream:
            received += bool(chunk.choices[0].delta.content)
            if received == 2:
                break
        await stream.close()
    await openai_server.settled()
    record = openai_server.last_chat
    assert record.outcome == "disconnected" and record.disconnected
    assert 2 <= record.tokens_sent < 10


async def test_latency_lets_a_client_time_out(anthropic_server: AnthropicServer) -> None:
    anthropic_server.behaviour = Behaviour(latency=5)
    async with anthropic.AsyncAnthropic(
        base_url=anthropic_server.base_url, api_key="test", max_retries=0, timeout=0.2
    ) as client:
        with pytest.raises(anthropic.APITimeoutError):
            await client.messages.create(
                model=ANTHROPIC_MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )


@pytest.mark.parametrize("server_type", [OpenAIServer, AnthropicServer, OllamaServer])
async def test_fast_mode_streams_many_chunks(server_type: type[VendorServer]) -> None:
    count = 2_000
    async with server_type(Behaviour.many(count)) as running:
        for _ in range(2):  # the second request is served from the encoded cache
            out: list[str] = []
            stream = {OpenAIServer: openai_sdk, AnthropicServer: anthropic_sdk}.get(
                server_type, ollama_sdk
            )
            usage = await stream(running.base_url, out)
            assert len(out) == count and out[-1] == f" w{count - 1}"
            assert usage == (PROMPT_TOKENS, count)


def test_threaded_server_serves_sync_clients() -> None:
    with OpenAIServer(Behaviour.reply("Sync works.")) as server:
        with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client:
            stream = client.chat.completions.create(
                model=OPENAI_MODEL,
                messages=[{"role": "user", "content": QUESTION}],
                stream=True,
            )
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        assert text == "Sync works."
        assert server.last_chat.outcome == "ok"


def test_threaded_server_cut_is_seen_by_sync_clients() -> None:
    with AnthropicServer(Behaviour(cut_after=3)) as server:
        client = anthropic.Anthropic(base_url=server.base_url, api_key="test", max_retries=0)
        seen: list[str] = []
        with (
            client,
            pytest.raises(anthropic.APIConnectionError) as raised,
            client.messages.stream(
                model=ANTHROPIC_MODEL,
                max_tokens=10,
                messages=[{"role": "user", "content": QUESTION}],
            ) as stream,
        ):
            seen.extend(stream.text_stream)
        assert seen == list(DEFAULT_TOKENS[:3])
        # The transport's own error is the cause: a cut body, not a refused connection.
        assert isinstance(raised.value.__cause__, httpx2.RemoteProtocolError)
