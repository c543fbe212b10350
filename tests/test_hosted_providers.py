"""The hosted providers end to end: StreamForge's ``POST /chat`` on a real server, the official
SDK or LangChain partner package inside it, and a loopback vendor server behind that.

For ``openai``, ``anthropic``, ``ollama`` and ``openai_compatible``: deltas arrive in order;
usage is recorded; a 429 followed by success is retried; a 500 falls back to the next
provider; a connection cut after three tokens yields an ``error`` event and a ``failed``
message holding those three tokens; an error that cannot be helped by retrying is not retried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import AppFactory, live_server
from tests.sse_client import ReadStream, read_chat
from tests.vendors import SERVERS, Behaviour, VendorServer

PROVIDERS = ["openai", "anthropic", "ollama", "openai_compatible"]
MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5-20251001",
    "ollama": "llama3.2",
    "openai_compatible": "qwen2.5-7b-instruct",
}
# Each provider's fallback in the fallback test: every provider is a primary once and a
# fallback once.
NEXT = {
    "openai": "anthropic",
    "anthropic": "ollama",
    "ollama": "openai_compatible",
    "openai_compatible": "openai",
}
SYSTEM = "You are a helpful assistant."  # the default template's system prompt
QUESTION = "Tell me about loopback servers."
MAX_TOKENS = 64
TOKENS = ("Loopback", " servers", " answer", " on", " 127.0.0.1", " only", ".")
# Usage numbers no estimate would produce, so the recorded ones must be the vendor's.
PROMPT_TOKENS = 37
COMPLETION_TOKENS = 41


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


# Sent with a vendor's last response in a test. ChatOpenAI and ChatAnthropic share
# process-wide HTTP clients cached per base URL, which StreamForge leaves open (closing them
# would break the next model reusing one): a connection still pooled when the test's event
# loop ends surfaces as an "unclosed transport" ResourceWarning once the client is collected
# (at the latest when the interpreter exits). "Connection: close" leaves nothing in the pool.
# Earlier responses (the 429 below) keep their connection alive, as a vendor's would.
LAST = {"Connection": "close"}


def answer(**options: Any) -> Behaviour:
    """The scripted answer, as the vendor's last response."""
    return Behaviour(tokens=TOKENS, headers=LAST, **options)


def failing(status: int) -> Behaviour:
    """Every request fails with ``status``, each response closing its connection."""
    return Behaviour(fail_status=status, headers=LAST)


@dataclass
class Rig:
    """StreamForge on a live port, configured for ``provider`` and ``fallbacks``, each of them
    talking to its own loopback vendor server."""

    client: httpx.AsyncClient
    provider: str
    servers: dict[str, VendorServer]

    @property
    def primary(self) -> VendorServer:
        return self.servers[self.provider]

    async def chat(self, **body: Any) -> ReadStream:
        request = {"message": QUESTION, "max_tokens": MAX_TOKENS, **body}
        stream = await read_chat(self.client, request)
        assert stream.status == 200
        return stream

    async def reply(self, stream: ReadStream) -> dict[str, Any]:
        """The assistant message of the stream's session, as ``GET /sessions/{id}/messages``
        returns it."""
        session_id = stream.session["session_id"]
        response = await self.client.get(f"/sessions/{session_id}/messages")
        assert response.status_code == 200
        items: list[dict[str, Any]] = response.json()["items"]
        assert [item["role"] for item in items] == ["user", "assistant"]
        assert items[0]["content"] == QUESTION
        assert items[1]["id"] == stream.session["assistant_message_id"]
        return items[1]


@asynccontextmanager
async def rig(
    app_factory: AppFactory, provider: str, *, fallbacks: Sequence[str] = ()
) -> AsyncIterator[Rig]:
    async with AsyncExitStack() as stack:
        servers: dict[str, VendorServer] = {}
        for name in (provider, *fallbacks):
            servers[name] = await stack.enter_async_context(SERVERS[name]())
        hosted = {
            name: {"base_url": server.base_url, "api_key": "test", "model": MODELS[name]}
            for name, server in servers.items()
        }
        app = app_factory(
            llm={
                "provider": provider,
                "fallbacks": list(fallbacks),
                "attempts": 3,
                "retry_backoff": 0.01,
                "first_token_timeout": 10.0,
                **hosted,
            }
        )
        live = await stack.enter_async_context(live_server(app))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=live.url, timeout=20.0))
        yield Rig(client, provider, servers)


def assert_vendor_got_the_turn(server: VendorServer, provider: str) -> None:
    """The vendor received the default template's system prompt, the user's message, the
    configured model and the answer's token limit, each in its own wire format."""
    body = server.last_chat.json
    assert body["model"] == MODELS[provider]
    assert body["stream"] is True
    user = {"role": "user", "content": QUESTION}
    if provider == "anthropic":
        # The system prompt goes in the top-level field, never among the messages.
        assert body["system"] == SYSTEM
        assert body["messages"] == [user]
        assert body["max_tokens"] == MAX_TOKENS
        return
    assert body["messages"] == [{"role": "system", "content": SYSTEM}, user]
    if provider == "ollama":
        assert body["options"]["num_predict"] == MAX_TOKENS
    elif provider == "openai":
        assert body["max_completion_tokens"] == MAX_TOKENS
        assert body["stream_options"] == {"include_usage": True}
    else:
        assert body["max_tokens"] == MAX_TOKENS
        assert body["stream_options"] == {"include_usage": True}
    if provider in ("openai", "openai_compatible"):
        assert server.last_chat.headers["authorization"] == "Bearer test"


def event_names(stream: ReadStream) -> list[str]:
    return [event for _, event, _ in stream.events]


# -- the acceptance item ------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_deltas_arrive_in_order_and_usage_is_recorded(
    app_factory: AppFactory, provider: str
) -> None:
    async with rig(app_factory, provider) as setup:
        setup.primary.behaviour = answer(
            prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS
        )
        stream = await setup.chat()
        reply = await setup.reply(stream)

    # Each vendor chunk is its own delta, in order, nothing merged, split or dropped.
    assert stream.deltas == list(TOKENS)
    assert [int(id_) for id_, _, _ in stream.events] == list(range(1, len(stream.events) + 1))
    names = event_names(stream)
    assert names[0] == "session" and names[-2:] == ["usage", "done"]
    assert set(names) == {"session", "message", "usage", "done"}
    usage = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }
    assert stream.typed("usage") == [usage]
    done = stream.done
    assert done["status"] == "completed" and done["finish_reason"] == "stop"
    assert done["provider"] == provider
    assert done["usage"] == usage
    assert done["message_id"] == reply["id"]

    assert reply["status"] == "completed"
    assert reply["content"] == "".join(TOKENS)
    assert reply["provider"] == provider
    assert (reply["prompt_tokens"], reply["completion_tokens"]) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )
    assert reply["error"] is None

    assert_vendor_got_the_turn(setup.primary, provider)
    assert [request.outcome for request in setup.primary.chat_requests] == ["ok"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_429_then_success_is_retried(app_factory: AppFactory, provider: str) -> None:
    async with rig(app_factory, provider) as setup:
        setup.primary.enqueue(Behaviour.failing(429), answer())
        stream = await setup.chat()
        reply = await setup.reply(stream)

    requests = setup.primary.chat_requests
    assert [(request.status, request.outcome) for request in requests] == [
        (429, "failed"),
        (200, "ok"),
    ]
    assert stream.deltas == list(TOKENS)
    assert stream.typed("error") == []
    assert stream.done["status"] == "completed" and stream.done["provider"] == provider
    assert reply["status"] == "completed" and reply["content"] == "".join(TOKENS)
    assert reply["error"] is None
    # The retry sent the same turn again.
    assert requests[0].json == requests[1].json
    assert_vendor_got_the_turn(setup.primary, provider)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_500_falls_back_to_the_next_provider(
    app_factory: AppFactory, provider: str
) -> None:
    fallback = NEXT[provider]
    async with rig(app_factory, provider, fallbacks=[fallback]) as setup:
        setup.primary.behaviour = failing(500)
        setup.servers[fallback].behaviour = answer(prompt_tokens=PROMPT_TOKENS)
        stream = await setup.chat()
        reply = await setup.reply(stream)

    # A 500 may be transient: the primary is tried as often as configured, then left.
    assert [request.status for request in setup.primary.chat_requests] == [500] * 3
    assert [request.outcome for request in setup.servers[fallback].chat_requests] == ["ok"]
    assert stream.session["provider"] == provider  # what was chosen...
    assert stream.deltas == list(TOKENS)
    assert stream.typed("error") == []
    done = stream.done
    assert done["status"] == "completed" and done["provider"] == fallback  # ...what answered
    assert done["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert reply["status"] == "completed" and reply["content"] == "".join(TOKENS)
    assert reply["provider"] == fallback
    assert reply["prompt_tokens"] == PROMPT_TOKENS
    assert reply["completion_tokens"] == len(TOKENS)
    assert_vendor_got_the_turn(setup.primary, provider)
    assert_vendor_got_the_turn(setup.servers[fallback], fallback)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_cut_after_three_tokens_fails_with_those_tokens(
    app_factory: AppFactory, provider: str
) -> None:
    # A fallback is configured too: once text has streamed, neither a retry nor a fallback
    # may continue it.
    fallback = NEXT[provider]
    async with rig(app_factory, provider, fallbacks=[fallback]) as setup:
        setup.primary.behaviour = answer(cut_after=3)
        stream = await setup.chat()
        reply = await setup.reply(stream)

    assert [request.outcome for request in setup.primary.chat_requests] == ["cut"]
    assert setup.primary.last_chat.tokens_sent == 3
    assert setup.servers[fallback].chat_requests == []

    assert stream.deltas == list(TOKENS[:3])
    names = event_names(stream)
    assert names == ["session", "message", "message", "message", "error", "usage", "done"]
    [error] = stream.typed("error")
    assert set(error) == {"code", "message", "retryable"}
    assert error["code"] == "provider_unavailable"
    assert error["retryable"] is True
    assert provider in error["message"]
    done = stream.done
    assert done["status"] == "failed" and done["finish_reason"] == "error"
    assert done["provider"] == provider

    assert reply["status"] == "failed"
    assert reply["content"] == "".join(TOKENS[:3])
    assert reply["provider"] == provider
    assert reply["error"] == error


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [400, 401])
async def test_an_error_retrying_cannot_help_is_not_retried(
    app_factory: AppFactory, provider: str, status: int
) -> None:
    async with rig(app_factory, provider) as setup:
        setup.primary.behaviour = failing(status)
        stream = await setup.chat()
        reply = await setup.reply(stream)

    assert [request.status for request in setup.primary.chat_requests] == [status]
    assert stream.deltas == []
    assert event_names(stream) == ["session", "error", "usage", "done"]
    [error] = stream.typed("error")
    assert error["code"] == "provider_http_error"
    assert error["retryable"] is False
    assert str(status) in error["message"]
    assert stream.done["status"] == "failed" and stream.done["provider"] == provider
    assert reply["status"] == "failed" and reply["content"] == ""
    assert reply["error"] == error
