"""Test helpers that read a StreamForge stream the way a client would."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from httpx_sse import aconnect_sse

from tests.procs import SSEParser


@dataclass
class ReadStream:
    status: int
    headers: httpx.Headers
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (id, event, data)
    arrivals: list[float] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(data for _, event, data in self.events if event == "message")

    @property
    def deltas(self) -> list[str]:
        return [data for _, event, data in self.events if event == "message"]

    def typed(self, name: str) -> list[dict[str, Any]]:
        return [orjson.loads(data) for _, event, data in self.events if event == name]

    @property
    def session(self) -> dict[str, Any]:
        return self.typed("session")[0]

    @property
    def done(self) -> dict[str, Any]:
        return self.typed("done")[0]


async def read_chat(
    client: httpx.AsyncClient, body: dict[str, Any], *, url: str = "/chat", **kwargs: Any
) -> ReadStream:
    async with aconnect_sse(client, "POST", url, json=body, **kwargs) as source:
        result = ReadStream(source.response.status_code, source.response.headers)
        if source.response.status_code != 200:
            await source.response.aread()
            return result
        async for sse in source.aiter_sse():
            if not sse.data:
                # The SSE standard dispatches no event with an empty data buffer (the opening
                # `retry:` block); httpx-sse reports one, a browser would not.
                continue
            result.events.append((sse.id, sse.event, sse.data))
            result.arrivals.append(time.perf_counter())
    return result


def session_id(response: httpx.Response) -> str:
    """The session id that a buffered ``POST /chat`` response's ``session`` event names,
    read by the tests' one SSE parser (``procs.SSEParser``)."""
    parser = SSEParser()
    events = [*parser.feed(response.content), *parser.end()]
    found = [event for event in events if event.event == "session"]
    assert found, f"no session event in: {response.text[:300]!r}"
    return str(found[0].json()["session_id"])
