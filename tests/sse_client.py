"""Test helpers that read a StreamForge stream the way a client would."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from httpx_sse import aconnect_sse


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


def parse_sse(text: str) -> list[tuple[str, str, str]]:
    """A whole SSE body as (id, event, data) per event, by the WHATWG rules: lines end at CR,
    LF or CRLF; an event is dispatched at a blank line, and only when it has data."""
    events: list[tuple[str, str, str]] = []
    last_id, name, data = "", "", []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line:
            if data:
                events.append((last_id, name or "message", "\n".join(data)))
            name, data = "", []
            continue
        if line.startswith(":"):
            continue
        field_name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field_name == "data":
            data.append(value)
        elif field_name == "event":
            name = value
        elif field_name == "id":
            last_id = value
    return events


def session_id(response: httpx.Response) -> str:
    """The session id that a buffered ``POST /chat`` response's ``session`` event names."""
    found = [data for _, event, data in parse_sse(response.text) if event == "session"]
    assert found, f"no session event in: {response.text[:300]!r}"
    return str(orjson.loads(found[0])["session_id"])
