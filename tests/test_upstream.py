"""The lean upstream HTTP/1.1 client (``chains/providers/upstream.py``) against a loopback
server that writes exact bytes: the framings an upstream may choose (chunked, a length, until
close, gzip, an interim 100 response), arriving one byte at a time, keep-alive reuse, and the
broken responses that must end in an ``UpstreamError`` rather than a hang or a wrong body.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest

from streamforge.chains.providers.upstream import (
    UpstreamDisconnected,
    UpstreamError,
    UpstreamPool,
)

BODY = b'data: {"choices":[{"delta":{"content":"hello"}}]}\n\ndata: [DONE]\n\n'


def chunked(body: bytes, size: int = 7) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(BODY)


@asynccontextmanager
async def upstream(
    answers: Sequence[bytes], *, trickle: bool = False, close_after: bool = False
) -> AsyncIterator[tuple[str, list[int]]]:
    """A server that answers the n-th request on any connection with ``answers[n]``; yields
    its URL and, per request, which connection (numbered from 0) it came on."""
    served: list[int] = []
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        number, connections = connections, connections + 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                answer = answers[len(served)]
                served.append(number)
                if trickle:
                    for index in range(len(answer)):
                        writer.write(answer[index : index + 1])
                        await writer.drain()
                        await asyncio.sleep(0)
                else:
                    writer.write(answer)
                    await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1/chat/completions", served
    finally:
        server.close()


async def fetch(pool: UpstreamPool) -> tuple[int, bytes]:
    connection = await pool.post(b"{}")
    try:
        return connection.status, await connection.read_all()
    finally:
        pool.release(connection)


def new_pool(url: str) -> UpstreamPool:
    return UpstreamPool(url, headers={"Content-Type": "application/json"}, read_timeout=5)


@pytest.mark.parametrize("trickle", [False, True], ids=["whole", "byte-by-byte"])
async def test_chunked_body_arrives_whole_and_the_connection_is_reused(trickle: bool) -> None:
    async with upstream([CHUNKED, CHUNKED], trickle=trickle) as (url, served):
        pool = new_pool(url)
        assert await fetch(pool) == (200, BODY)
        assert await fetch(pool) == (200, BODY)
        pool.clear()
    assert served == [0, 0]


async def test_content_length_after_an_interim_response() -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 19\r\nX-A: 1\r\nX-A: 2\r\n\r\n"
        b'{"error":"slow on"}'
    )
    async with upstream([answer]) as (url, _):
        pool = new_pool(url)
        connection = await pool.post(b"{}")
        assert connection.status == 429
        assert connection.headers["x-a"] == "1, 2"
        assert await connection.read_all() == b'{"error":"slow on"}'
        pool.release(connection)
        pool.clear()


async def test_body_until_close_is_read_to_the_end_and_not_reused() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + BODY
    async with upstream([answer, answer], close_after=True) as (url, served):
        pool = new_pool(url)
        assert await fetch(pool) == (200, BODY)
        assert await fetch(pool) == (200, BODY)
        pool.clear()
    assert served == [0, 1]


async def test_gzip_body_is_decoded() -> None:
    packed = gzip.compress(BODY)
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(packed, 5)
    )
    async with upstream([answer], trickle=True) as (url, _):
        pool = new_pool(url)
        assert await fetch(pool) == (200, BODY)
        pool.clear()


async def test_bytes_after_the_response_keep_the_connection_from_reuse() -> None:
    async with upstream([CHUNKED + b"HTTP/1.1 200 OK\r\n", CHUNKED]) as (url, served):
        pool = new_pool(url)
        assert await fetch(pool) == (200, BODY)
        await asyncio.sleep(0.05)
        assert await fetch(pool) == (200, BODY)
        pool.clear()
    assert served == [0, 1]


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(BODY)[:30],
            UpstreamDisconnected,
            "without sending complete message body",
        ),
        (b"", UpstreamDisconnected, "without sending a response"),
        (b"SMTP ready\r\n\r\n", UpstreamError, "invalid HTTP response"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            UpstreamError,
            "invalid HTTP response",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nhi",
            UpstreamError,
            "unsupported content-encoding 'br'",
        ),
    ],
    ids=["cut-mid-body", "closed-at-once", "not-http", "bad-chunk-size", "unknown-encoding"],
)
async def test_broken_responses_are_upstream_errors(
    answer: bytes, error: type[Exception], words: str
) -> None:
    async with upstream([answer], close_after=True) as (url, _):
        pool = new_pool(url)
        with pytest.raises(error, match=words):
            await fetch(pool)
        pool.clear()
