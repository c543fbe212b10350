"""The reference for ``stream_load.py``: the least a Starlette SSE endpoint can hold per stream.

``POST /chat`` answers a plain Starlette ``StreamingResponse`` that sends one event, then a
``: ping`` comment every ``BARE_SSE_HEARTBEAT_INTERVAL`` seconds (default 15) until the client
leaves. No database, no event log, no producer task: what an idle stream costs here is what
uvicorn and Starlette cost. ``GET /health`` answers 200 so the benchmark can wait for it.

Run it the way the benchmark does, from the repository root::

    python -m uvicorn bare_sse:app --app-dir benchmarks --port 8001 --no-access-log
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

HEARTBEAT_INTERVAL = float(os.environ.get("BARE_SSE_HEARTBEAT_INTERVAL", "15"))
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

_stream_ids = itertools.count(1)


async def _events(stream_id: int) -> AsyncIterator[bytes]:
    yield b'retry: 3000\n\nid: 1\nevent: session\ndata: {"stream_id":"%d"}\n\n' % stream_id
    while True:
        await asyncio.sleep(HEARTBEAT_INTERVAL)
        yield b": ping\n\n"


async def chat(request: Request) -> Response:
    await request.body()
    return StreamingResponse(
        _events(next(_stream_ids)), media_type="text/event-stream", headers=SSE_HEADERS
    )


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/chat", chat, methods=["POST"]), Route("/health", health)])
