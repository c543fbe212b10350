"""The integration-test harness itself: server processes, a private Redis, the raw SSE client."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.polling import eventually
from tests.procs import (
    Event,
    SSEParser,
    read_sse,
    redis_server,
    server_process,
)

SLOW = {
    "STREAMFORGE_STREAMING__SIMULATED_DELAY": "0.01",
    "STREAMFORGE_LLM__SIMULATED__MIN_WORDS": "60",
}

STANDARD = (
    b"\xef\xbb\xbfretry: 2500\r\n\r\n"
    b": ping\n\n"
    b"id: 1\nevent: session\ndata: {}\n\n"
    b"id: 2\ndata: two\r\ndata:  lines\r\r"
    b"data: no id\n\n"
    b"id: 3\nevent: empty\n\n"
    b"data:x\ndata\nunknown: field\n\n"
    b"id: 4\ndata: never finished"
)
EXPECTED = [
    Event("1", "session", "{}"),
    Event("2", "message", "two\n lines"),
    Event(None, "message", "no id"),
    Event(None, "message", "x\n"),
]


@pytest.mark.parametrize("piece", [1, 2, 7, len(STANDARD)])
def test_parser_follows_the_standard_however_the_bytes_arrive(piece: int) -> None:
    parser = SSEParser()
    events: list[Event] = []
    for start in range(0, len(STANDARD), piece):
        events += parser.feed(STANDARD[start : start + piece])
    events += parser.end()
    assert events == EXPECTED
    assert parser.retry == 2500
    assert parser.comments == ["ping"]
    assert parser.last_id == "4"  # set by its line, though its event never completed


def test_parser_takes_a_final_lone_cr_as_a_line_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r\r") == []  # the last CR may yet be the start of a CRLF
    assert parser.end() == [Event(None, "message", "a")]


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def fake_server(handler: Handler) -> AsyncIterator[str]:
    """A raw TCP server answering every connection with ``handler``."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


async def test_stop_after_resets_the_connection_right_after_that_event() -> None:
    seen_by_server: list[str] = []
    request: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request.append(await reader.readuntil(b"\r\n\r\n"))
        events = b"".join(b"id: %d\ndata: e%d\n\n" % (i, i) for i in range(1, 11))
        writer.write(SSE_HEAD + chunk(b"retry: 100\n\n: ping\n\n") + chunk(events))
        await writer.drain()
        try:
            seen_by_server.append(repr(await reader.read()))
        except ConnectionResetError:
            seen_by_server.append("reset")
        writer.close()

    arrived: list[Event] = []

    async def on_event(event: Event) -> None:
        arrived.append(event)

    async with fake_server(handler) as url:
        result = await read_sse(
            f"{url}/chat?x=1",
            "POST",
            json={"message": "hi"},
            headers={"Last-Event-ID": "0"},
            stop_after=3,
            on_event=on_event,
        )
        await eventually(lambda: seen_by_server, timeout=5, interval=0.01)

    assert request[0].startswith(b"POST /chat?x=1 HTTP/1.1\r\n")
    assert b"\r\nLast-Event-ID: 0\r\n" in request[0]
    assert b"\r\nContent-Type: application/json\r\n" in request[0]
    assert result.status == 200
    assert result.ended == "cut"
    assert [e.data for e in result.events] == ["e1", "e2", "e3"]
    assert arrived == result.events
    assert result.last_id == "3"  # although e4..e10 came in the same chunk
    assert (result.retry, result.pings) == (100, 1)
    assert seen_by_server == ["reset"]  # a TCP reset, not a clean end of the stream

    async with fake_server(handler) as url:
        at_once = await read_sse(url, stop_after=0)
    assert (at_once.status, at_once.ended, at_once.events) == (200, "cut", [])


async def test_bodies_by_length_and_broken_streams() -> None:
    async def json_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"error": {"message": "nope"}}'
        writer.write(
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%b" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    async def dies_mid_chunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(SSE_HEAD + chunk(b"id: 1\ndata: a\n\n") + b"40\r\nid: 2\nda")
        await writer.drain()
        writer.close()

    async with fake_server(json_answer) as url:
        missing = await read_sse(f"{url}/sessions/x")
    assert (missing.status, missing.reason, missing.events) == (404, "Not Found", [])
    assert missing.body == {"error": {"message": "nope"}}

    async with fake_server(dies_mid_chunk) as url:
        broken = await read_sse(url)
    assert broken.ended == "broken"
    assert broken.events == [Event("1", "message", "a")]
    assert broken.last_id == "1"


async def test_server_process_streams_cuts_resumes_and_stops_cleanly(tmp_path: Path) -> None:
    async with server_process(tmp_path, SLOW) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        health = await read_sse(f"{server.url}/health")
        assert health.status == 200
        assert health.body["status"] == "ok"

        whole = await read_sse(f"{server.url}/chat", "POST", json={"message": "hi"})
        assert whole.status == 200
        assert whole.ended == "complete"
        assert whole.headers["content-type"].startswith("text/event-stream")
        assert whole.events[0].event == "session"
        assert whole.events[-1].event == "done"
        assert whole.done["status"] == "completed"
        assert whole.ids == [str(i) for i in range(1, len(whole.events) + 1)]
        assert whole.last_id == str(len(whole.events))
        assert whole.text

        cut = await read_sse(f"{server.url}/chat", "POST", json={"message": "hi"}, stop_after=5)
        assert cut.ended == "cut"
        assert cut.ids == ["1", "2", "3", "4", "5"]
        assert cut.last_id == "5"

        # The answer went on without the client; it resumes after the last id it saw.
        stream_url = f"{server.url}/chat/streams/{cut.session['stream_id']}"
        rest = await read_sse(stream_url, headers={"Last-Event-ID": "5"})
        assert rest.status == 200
        assert rest.ids[0] == "6"
        assert rest.events[-1].event == "done"
        assert (await read_sse(stream_url, headers={"Last-Event-ID": rest.ids[-1]})).status == 204

        # on_event acts mid-stream: a cancel once the sixth event has arrived.
        cancelled: list[int] = []
        whole_stream: dict[str, str] = {}

        async def cancel_at_six(event: Event) -> None:
            if event.id == "6":
                stream_id = whole_stream["stream_id"]
                async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
                    answer = await client.post(f"/chat/streams/{stream_id}/cancel")
                cancelled.append(answer.status_code)
            elif event.event == "session":
                whole_stream.update(event.json())

        stopped = await read_sse(
            f"{server.url}/chat",
            "POST",
            json={"message": "a long answer"},
            on_event=cancel_at_six,
        )
        assert cancelled == [200]
        assert stopped.done["finish_reason"] == "cancelled"

        started = time.monotonic()
        # uvicorn (since 0.29) shuts down gracefully, then raises the signal again with its
        # default action: a single-process server ends "killed by SIGTERM".
        assert await server.terminate(timeout=20) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 15
        assert not server.running
        assert server.group_pids() == []
        assert "Traceback" not in server.log()


async def test_a_killed_server_breaks_its_streams_and_leaves_nothing(tmp_path: Path) -> None:
    async with server_process(tmp_path, SLOW, name="victim") as server:

        def crash_at_five(event: Event) -> None:
            if event.id == "5":
                server.kill()

        result = await read_sse(
            f"{server.url}/chat", "POST", json={"message": "hi"}, on_event=crash_at_five
        )
        assert result.ended == "broken"
        assert result.ids[:5] == ["1", "2", "3", "4", "5"]
        assert not result.typed("done")
        assert server.returncode == -signal.SIGKILL
        assert server.group_pids() == []
    assert (tmp_path / "victim.log").exists()


async def test_redis_server_restarts_empty_on_the_same_port(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as redis:
        assert redis.url == f"redis://127.0.0.1:{redis.port}/0"
        assert await redis.ping()
        assert await redis.command("SET", "key", "value") == "OK"
        assert await redis.command("GET", "key") == b"value"
        port = redis.port

        await redis.restart(down_for=0.2)
        assert redis.port == port
        assert await redis.ping()
        assert await redis.command("GET", "key") is None  # a crash: nothing was kept

        redis.kill()
        assert not await redis.ping()
        await redis.start()
        assert await redis.ping()
    assert not redis.running
    assert not await redis.ping()
