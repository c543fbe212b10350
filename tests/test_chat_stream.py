"""The /chat stream over a real HTTP connection: wire format, timing, heartbeats, disconnects."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse

from streamforge.chains.providers.base import BaseProvider, Chunk, GenerationRequest
from streamforge.chains.providers.simulated import DEFAULT_ANSWER, SimulatedProvider, split_words
from tests.conftest import AppFactory, live_server
from tests.polling import eventually
from tests.sse_client import read_chat


def parse_raw(body: bytes) -> list[dict[str, Any]]:
    """Split a raw SSE body into blocks of fields, comments kept."""
    blocks = []
    for raw in body.decode().split("\n\n"):
        if not raw:
            continue
        block: dict[str, Any] = {"data": [], "comments": []}
        for line in raw.split("\n"):
            if line.startswith(":"):
                block["comments"].append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    block["data"].append(value)
                else:
                    block[name] = value
        blocks.append(block)
    return blocks


class ProbeProvider(BaseProvider):
    """Counts the deltas it yields and notes when its iterator is closed."""

    name = "probe"

    def __init__(self, deltas: list[str], delay: float) -> None:
        self.deltas = deltas
        self.delay = delay
        self.yielded = 0
        self.closed = asyncio.Event()
        self.seen: list[GenerationRequest] = []

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self.seen.append(request)
        try:
            for delta in self.deltas:
                await asyncio.sleep(self.delay)
                self.yielded += 1
                yield Chunk(text=delta)
        finally:
            self.closed.set()


async def test_curl_example_streams_events_over_time(app_factory: AppFactory) -> None:
    delay = 0.05
    app = app_factory(streaming={"simulated_delay": delay})
    async with live_server(app) as server:
        curl = shutil.which("curl")
        assert curl, "curl is part of the README's example"
        process = await asyncio.create_subprocess_exec(
            curl,
            "-sN",
            "-D",
            "-",
            "-X",
            "POST",
            f"{server.url}/chat",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Accept-Encoding: gzip",
            "-d",
            '{"message":"Hello"}',
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        loop = asyncio.get_running_loop()
        arrivals: list[float] = []
        output = b""
        while line := await process.stdout.readline():
            output += line
            if line.startswith(b"data:"):
                arrivals.append(loop.time())
        assert await process.wait() == 0

    head, _, body = output.partition(b"\r\n\r\n")
    headers = head.decode().lower()
    assert "content-type: text/event-stream" in headers
    assert "cache-control: no-cache" in headers
    assert "connection: keep-alive" in headers
    assert "x-accel-buffering: no" in headers
    assert "content-encoding" not in headers

    blocks = parse_raw(body)
    assert blocks[0] == {"data": [], "comments": [], "retry": "3000"}
    events = blocks[1:]
    ids = [int(block["id"]) for block in events]
    assert ids == sorted(set(ids)) and ids[0] == 1
    assert events[0]["event"] == "session"
    assert events[-1]["event"] == "done"
    text = "".join("\n".join(b["data"]) for b in events if "event" not in b)
    assert text == DEFAULT_ANSWER
    words = len(split_words(DEFAULT_ANSWER))
    # The configured delay between words is honoured: the events arrive spread over time.
    assert arrivals[-1] - arrivals[0] >= (words - 2) * delay * 0.8


SCRIPT = [
    "Line one\nline two",
    "\r\nafter CRLF",
    "  two leading spaces",
    " ünïcödé ✓ 日本語 🚀",
    "\n",
    "ends with CR\r",
    "\nstarts with LF",
    "\n\n",
    "trailing space ",
    "data: not a field",
    "id: 99",
    ":not a comment",
    "tab\tseparated",
]


async def test_deltas_round_trip_through_an_sse_parser(app_factory: AppFactory) -> None:
    app = app_factory()
    async with live_server(app) as server:
        server.components.providers.register(SimulatedProvider(delay=0, script=SCRIPT))
        async with httpx.AsyncClient(base_url=server.url) as client:
            result = await read_chat(client, {"message": "edge cases"})
            session_id = result.session["session_id"]
            messages = (await client.get(f"/sessions/{session_id}/messages")).json()["items"]

    expected = "".join(SCRIPT).replace("\r\n", "\n").replace("\r", "\n")
    # Each delta arrives as one event, verbatim but for CR line ends, which SSE cannot carry.
    assert result.text == expected
    assert len(result.deltas) == len(SCRIPT)
    assert result.deltas[0] == "Line one\nline two"
    assert result.deltas[2] == "  two leading spaces"
    assert result.deltas[3] == " ünïcödé ✓ 日本語 🚀"
    assert result.deltas[9] == "data: not a field"
    assert messages[1]["content"] == expected
    assert messages[1]["status"] == "completed"
    ids = [int(event_id) for event_id, _, _ in result.events]
    assert ids == list(range(1, len(ids) + 1))


async def test_stalled_provider_gets_heartbeats(app_factory: AppFactory) -> None:
    interval = 0.2
    app = app_factory(streaming={"heartbeat_interval": interval})
    async with live_server(app) as server:
        server.components.providers.register(
            SimulatedProvider(
                delay=0, script=["before", " after"], stall_after=1, stall_seconds=interval * 3
            )
        )
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.post("/chat", json={"message": "stall"})
    blocks = parse_raw(response.content)
    pings = [b for b in blocks if b["comments"] == ["ping"]]
    assert len(pings) >= 2
    # The pings came between the two deltas, and the stream then finished normally.
    kinds = [
        b.get("event", "ping" if b["comments"] else "message") for b in blocks if "retry" not in b
    ]
    first_ping = kinds.index("ping")
    assert kinds[first_ping - 1] == "message"
    assert kinds[-1] == "done"
    assert "".join("\n".join(b["data"]) for b in blocks if "id" in b and "event" not in b) == (
        "before after"
    )


async def test_disconnect_closes_provider_and_stores_interrupted(app_factory: AppFactory) -> None:
    deltas = [f" word{i}" for i in range(20)]
    probe = ProbeProvider(deltas, delay=0.3)
    app = app_factory()
    async with live_server(app) as server:
        server.components.providers.register(probe)
        await asyncio.sleep(0.1)
        baseline = len(asyncio.all_tasks())
        received: list[str] = []
        async with httpx.AsyncClient(base_url=server.url) as client:
            async with aconnect_sse(
                client, "POST", "/chat", json={"message": "hi", "provider": "probe"}
            ) as source:
                async for sse in source.aiter_sse():
                    if not sse.data:
                        continue
                    if sse.event == "session":
                        session_id = orjson.loads(sse.data)["session_id"]
                    elif sse.event == "message":
                        received.append(sse.data)
                        if len(received) == 3:
                            break
            disconnected_at = asyncio.get_running_loop().time()
            await asyncio.wait_for(probe.closed.wait(), timeout=probe.delay * 2)
            closed_after = asyncio.get_running_loop().time() - disconnected_at

            # The provider was closed before it produced another delta.
            assert closed_after < probe.delay
            assert probe.yielded == 3

            await eventually(lambda: len(asyncio.all_tasks()) <= baseline, timeout=2, interval=0.02)
            assert len(asyncio.all_tasks()) == baseline
            assert server.components.streams.active == 0

            messages = (await client.get(f"/sessions/{session_id}/messages")).json()["items"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["status"] == "interrupted"
    assert messages[1]["content"] == "".join(received) == "".join(deltas[:3])


async def test_client_that_stops_reading_is_dropped(app_factory: AppFactory) -> None:
    # A large answer, a client that never reads and a short send timeout: the server gives up
    # on the connection instead of holding the stream (and its memory) forever.
    app = app_factory(
        streaming={"send_timeout": 0.5, "simulated_delay": 0.001},
        llm={"simulated": {"answer": "x" * 8000 + " ", "min_words": 5000}},
    )
    async with live_server(app) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        body = b'{"message":"hi"}'
        writer.write(
            b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        await asyncio.sleep(0.5)
        await eventually(lambda: server.components.streams.active == 0, timeout=5)
        # Dropped long before the 5 s or more the whole answer would take.
        assert server.components.streams.active == 0
        sessions = await server.components.sessions.list("local", limit=1, offset=0)
        page = await server.components.sessions.messages(
            "local", sessions.items[0].id, limit=10, offset=0
        )
        writer.close()
    assistant = page.items[1]
    assert assistant.status == "interrupted"
    assert 0 < len(assistant.content) < 5000 * 8001


@pytest.mark.parametrize("encoding", ["gzip", "br, gzip, deflate"])
async def test_stream_is_never_compressed(app_factory: AppFactory, encoding: str) -> None:
    app = app_factory()
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post(
            "/chat", json={"message": "hi"}, headers={"Accept-Encoding": encoding}
        )
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert response.text.startswith("retry: ")
