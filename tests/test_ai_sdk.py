"""The AI SDK's chat protocol (``POST /ai-sdk/chat``), spoken by the ``ai`` package itself.

The ``ai`` package from the npm registry, pinned in ``tests/js/package-lock.json``, runs under
the machine's Node.js: its ``DefaultChatTransport`` sends the messages and reconnects, its
``readUIMessageStream`` assembles the reply (``tests/js/ai_sdk_chat.mjs``). The tests compare
what it assembled with what StreamForge stored.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamforge.chains.providers.base import BaseProvider, Chunk, GenerationRequest
from streamforge.errors import ProviderError
from tests.conftest import AppFactory, live_server
from tests.polling import eventually
from tests.rag_support import BEES, ROUTER, create_collection, ingest, markdown_bytes

JS = Path(__file__).parent / "js"
SCRIPT = JS / "ai_sdk_chat.mjs"
LONG = {"provider": "simulated", "simulated": {"min_words": 80}}


@pytest.fixture(scope="module")
def node() -> str:
    """Node.js with the locked ``ai`` package installed into tests/js (``npm ci``)."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "these tests need Node.js 20+ and npm on PATH (Debian: apt-get install nodejs npm)"
        )
    if not (JS / "node_modules" / "ai" / "package.json").exists():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci in {JS} failed:\n{done.stdout}\n{done.stderr}")
    return node


async def run_client(node: str, server_url: str, **plan: Any) -> dict[str, Any]:
    plan.setdefault("api", f"{server_url}/ai-sdk/chat")
    process = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        json.dumps(plan),
        cwd=JS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    result: dict[str, Any] = json.loads(stdout)
    return result


def user(text: str, message_id: str = "u1") -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


def text_of(message: dict[str, Any]) -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")


async def stored(client: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/sessions/{session_id}/messages", params={"limit": 100})
    assert response.status_code == 200, response.text
    body = response.json()
    items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
    return items


async def test_the_ai_sdk_assembles_the_stored_reply(
    app_factory: AppFactory, database_url: str, node: str
) -> None:
    app = app_factory(database_url)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        first = await run_client(node, server.url, chatId="chat-a", messages=[user("Hello")])
        message = first["message"]
        assert first["errors"] == []
        assert first["types"][0] == "start"
        assert first["types"][-1] == "finish"
        metadata = message["metadata"]
        session_id = metadata["session_id"]
        messages = await stored(client, session_id)
        assert [m["role"] for m in messages] == ["user", "assistant"]
        reply = messages[1]
        assert reply["status"] == "completed"
        assert message["id"] == reply["id"] == metadata["assistant_message_id"]
        assert text_of(message) == reply["content"] != ""
        assert metadata["usage"]["completion_tokens"] > 0
        assert metadata["status"] == "completed"

        # The same chat id continues the same session; the reply sees the earlier turn.
        history = [user("Hello"), {**message, "role": "assistant"}, user("Again", "u2")]
        second = await run_client(node, server.url, chatId="chat-a", messages=history)
        assert second["message"]["metadata"]["session_id"] == session_id
        messages = await stored(client, session_id)
        assert [m["content"] for m in messages if m["role"] == "user"] == ["Hello", "Again"]
        assert text_of(second["message"]) == messages[-1]["content"]

        # Nothing is being generated for the chat: the AI SDK's resume gets 204.
        resumed = await client.get("/ai-sdk/chat/chat-a/stream")
        assert resumed.status_code == 204


async def test_regenerate_replaces_the_last_reply(
    app_factory: AppFactory, database_url: str, node: str
) -> None:
    app = app_factory(database_url)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        first = await run_client(node, server.url, chatId="chat-r", messages=[user("Hi")])
        old = first["message"]
        session_id = old["metadata"]["session_id"]
        again = await run_client(
            node,
            server.url,
            chatId="chat-r",
            messages=[user("Hi")],
            trigger="regenerate-message",
        )
        new = again["message"]
        assert new["id"] != old["id"]
        messages = await stored(client, session_id)
        assert [(m["role"], m["content"]) for m in messages] == [
            ("user", "Hi"),
            ("assistant", text_of(new)),
        ]
        assert messages[1]["id"] == new["id"]


async def test_sources_arrive_before_the_text_and_name_the_documents(
    app_factory: AppFactory, node: str
) -> None:
    app = app_factory()
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        await create_collection(client, "manuals")
        for name, text in (("bees.md", BEES), ("router.md", ROUTER)):
            await ingest(client, server.components, "manuals", name, markdown_bytes(name, [text]))
        result = await run_client(
            node,
            server.url,
            chatId="chat-rag",
            messages=[user("What does error E-4471 on the Harlow KT-9 mean?")],
            body={"rag": {"collections": ["manuals"], "top_k": 2}},
        )
        types = result["types"]
        assert "source-document" in types
        last_source = len(types) - 1 - types[::-1].index("source-document")
        assert last_source < types.index("text-start")
        message = result["message"]
        parts = message["parts"]
        sources = [p for p in parts if p["type"] == "source-document"]
        assert sources[0]["title"] == "router.md"
        assert {s["title"] for s in sources} <= {"router.md", "bees.md"}
        assert "E-4471" in sources[0]["providerMetadata"]["streamforge"]["snippet"]
        first_text = next(i for i, p in enumerate(parts) if p["type"] == "text")
        assert all(parts.index(s) < first_text for s in sources)
        messages = await stored(client, message["metadata"]["session_id"])
        assert text_of(message) == messages[-1]["content"]


async def test_reconnect_mid_answer_yields_the_rest(app_factory: AppFactory, node: str) -> None:
    streaming = {"simulated_delay": 0.03, "disconnect_policy": "continue", "disconnect_grace": 30}
    app = app_factory(streaming=streaming, llm=LONG)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        result = await run_client(
            node,
            server.url,
            chatId="chat-cut",
            messages=[user("Tell me a long story")],
            cutAfterChars=30,
            reconnect=True,
        )
        cut = result["cut"]["text"]
        resumed = result["resumed"]
        assert resumed is not None, "the AI SDK's resume found no active stream"
        message = resumed["message"]
        assembled = text_of(message)
        assert assembled.startswith(cut)
        assert len(assembled) > len(cut)
        assert resumed["types"][0] == "start"
        assert resumed["types"][-1] == "finish"
        messages = await stored(client, message["metadata"]["session_id"])
        reply = messages[-1]
        assert reply["status"] == "completed"
        assert reply["id"] == message["id"]
        assert assembled == reply["content"]


async def test_stop_leaves_the_reply_cancelled(app_factory: AppFactory, node: str) -> None:
    app = app_factory(streaming={"simulated_delay": 0.03}, llm=LONG)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        result = await run_client(
            node,
            server.url,
            chatId="chat-stop",
            messages=[user("Tell me a long story")],
            cutAfterChars=30,
        )
        cut = result["cut"]["text"]
        session = await client.get("/sessions")
        session_id = next(
            s["id"] for s in session.json()["items"] if s["title"] == "Tell me a long story"
        )

        async def reply() -> dict[str, Any]:
            return (await stored(client, session_id))[-1]

        ended = await eventually(
            reply, until=lambda m: m["status"] != "streaming", what="the reply to end"
        )
        assert ended["status"] == "cancelled"
        assert ended["content"].startswith(cut)
        # The stopped answer is over: the AI SDK's resume finds nothing to reattach to.
        assert (await client.get("/ai-sdk/chat/chat-stop/stream")).status_code == 204


class FailingProvider(BaseProvider):
    """Streams a little text, then fails the way a provider's API does."""

    name = "failing"

    async def stream(self, request: GenerationRequest) -> Any:
        yield Chunk(text="Partial")
        raise ProviderError("upstream exploded", retryable=False)


async def test_a_provider_failure_is_an_error_part(app_factory: AppFactory) -> None:
    app = app_factory()
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        server.components.providers.register(FailingProvider())
        response = await client.post(
            "/ai-sdk/chat",
            json={"id": "chat-f", "messages": [user("Hi")], "provider": "failing"},
        )
        assert response.status_code == 200
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        events = [e for e in response.text.split("\n\n") if e.startswith("id: ")]
        ids = [int(e.split("\n")[0][4:]) for e in events]
        assert ids == sorted(ids)
        parts = [json.loads(e.split("\n")[1].removeprefix("data: ")) for e in events]
        kinds = [p["type"] for p in parts]
        assert kinds[0] == "start"
        assert "error" in kinds
        error = parts[kinds.index("error")]
        assert "upstream exploded" in error["errorText"]
        assert parts[-1] == {
            "type": "finish",
            "finishReason": "error",
            "messageMetadata": parts[-1]["messageMetadata"],
        }
        assert parts[-1]["messageMetadata"]["status"] == "failed"
        assert response.text.endswith("data: [DONE]\n\n")


async def test_bad_requests_are_clear_4xx(app_factory: AppFactory) -> None:
    app = app_factory()
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        assistant_last = {
            "id": "c",
            "messages": [
                {"id": "a", "role": "assistant", "parts": [{"type": "text", "text": "x"}]}
            ],
        }
        for body in (
            assistant_last,
            {"id": "c", "messages": []},
            {"id": "", "messages": [user("Hi")]},
            {"id": "c", "messages": [user("Hi")], "trigger": "resume"},
            {"id": "c", "messages": [user("Hi")], "temprature": 1},
        ):
            response = await client.post("/ai-sdk/chat", json=body)
            assert response.status_code == 422, (body, response.text)
            assert "error" in response.json() or "detail" in response.json()
        response = await client.get(
            "/ai-sdk/chat/c/stream", headers={"Last-Event-ID": "not-a-number"}
        )
        assert response.status_code == 400


def parse_events(raw: str) -> list[tuple[int | None, dict[str, Any]]]:
    """The ``(id, part)`` of each event of a UI message stream, ``[DONE]`` left out."""
    events: list[tuple[int | None, dict[str, Any]]] = []
    for block in raw.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        data = fields.get("data")
        if data is None or data == "[DONE]":
            continue
        events.append((int(fields["id"]) if "id" in fields else None, json.loads(data)))
    return events


def deltas(events: list[tuple[int | None, dict[str, Any]]]) -> str:
    return "".join(part["delta"] for _, part in events if part["type"] == "text-delta")


async def test_last_event_id_resumes_with_exactly_the_rest(app_factory: AppFactory) -> None:
    streaming = {"simulated_delay": 0.03, "disconnect_policy": "continue", "disconnect_grace": 30}
    app = app_factory(streaming=streaming, llm=LONG)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        body = {"id": "chat-leid", "messages": [user("Tell me a long story")]}
        received = ""
        async with client.stream("POST", "/ai-sdk/chat", json=body) as response:
            assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
            async for chunk in response.aiter_text():
                received += chunk
                complete = received[: received.rfind("\n\n") + 2]
                if deltas(parse_events(complete)).count(" ") >= 5:
                    received = complete
                    break
        first = parse_events(received)
        assert all(event_id is not None for event_id, _ in first)
        last_id = first[-1][0]
        session_id = first[0][1]["messageMetadata"]["session_id"]

        rest = await client.get(
            "/ai-sdk/chat/chat-leid/stream", headers={"Last-Event-ID": str(last_id)}
        )
        assert rest.status_code == 200
        assert rest.headers["x-vercel-ai-ui-message-stream"] == "v1"
        resumed = parse_events(rest.text)
        assert resumed[0][0] is not None and resumed[0][0] > (last_id or 0)
        kinds = [part["type"] for _, part in resumed]
        assert kinds[0] == "text-start"
        assert kinds[-3:] == ["text-end", "message-metadata", "finish"]
        assert rest.text.endswith("data: [DONE]\n\n")
        reply = (await stored(client, session_id))[-1]
        assert reply["status"] == "completed"
        assert deltas(first) + deltas(resumed) == reply["content"]


async def test_first_turns_sent_at_once_share_the_chat_session(
    app_factory: AppFactory, database_url: str
) -> None:
    app = app_factory(database_url)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:

        async def send(text: str) -> list[tuple[int | None, dict[str, Any]]]:
            body = {"id": "chat-race", "messages": [user(text)]}
            response = await client.post("/ai-sdk/chat", json=body)
            assert response.status_code == 200, response.text
            return parse_events(response.text)

        answers = await asyncio.gather(*(send(f"Question {n}") for n in range(4)))
        sessions = {events[0][1]["messageMetadata"]["session_id"] for events in answers}
        assert len(sessions) == 1
        messages = await stored(client, sessions.pop())
        assert sorted(m["content"] for m in messages if m["role"] == "user") == [
            f"Question {n}" for n in range(4)
        ]
        assert [m["status"] for m in messages if m["role"] == "assistant"] == ["completed"] * 4
