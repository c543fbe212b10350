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


def parse_events(raw: str | bytes) -> list[tuple[str, str, str]]:
    """(id, event, data) of each event in a whole ``text/event-stream`` body, by the SSE
    standard's rules (comments and ``retry:`` skipped, ``data:`` lines joined)."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    events: list[tuple[str, str, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event_id, name, data = "", "message", []
        for line in block.split("\n"):
            field_name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field_name == "id":
                event_id = value
            elif field_name == "event":
                name = value
            elif field_name == "data":
                data.append(value)
        if data:
            events.append((event_id, name, "\n".join(data)))
    return events


def session_id_of(raw: str | bytes) -> str:
    """The session id a ``/chat`` stream's ``session`` event announced."""
    session = next(data for _, name, data in parse_events(raw) if name == "session")
    return str(orjson.loads(session)["session_id"])
