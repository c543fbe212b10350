"""Plain Server-Sent Events encoding of the internal event stream."""

from __future__ import annotations

import orjson

from streamforge.streaming.events import EventType, StreamEvent

PING = b": ping\n\n"


def retry_field(milliseconds: int) -> bytes:
    return b"retry: %d\n\n" % milliseconds


def encode(event: StreamEvent) -> bytes:
    if event.type is EventType.MESSAGE:
        # One data line per line of the delta: a parser joins them with "\n", which gives
        # back the delta verbatim (line breaks are already normalised to "\n").
        text: str = event.data
        body = b"data: " + text.replace("\n", "\ndata: ").encode("utf-8") + b"\n"
        return b"id: %d\n%s\n" % (event.id, body)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (
        event.id,
        event.type.value.encode("ascii"),
        orjson.dumps(event.data),
    )


def encode_many(events: list[StreamEvent]) -> bytes:
    return b"".join([encode(event) for event in events])


class SSEEncoder:
    """StreamForge's own SSE wire format (README, "The stream")."""

    def __init__(self, retry_ms: int) -> None:
        self.retry_ms = retry_ms

    def head(self) -> bytes:
        return retry_field(self.retry_ms)

    def encode(self, events: list[StreamEvent]) -> bytes:
        return encode_many(events)

    def tail(self) -> bytes:
        return b""

    def ping(self) -> bytes:
        return PING

    def interrupt(self, error: dict[str, object]) -> bytes:
        # No id: the client's Last-Event-ID stays at the last event it really received.
        return b"event: error\ndata: %s\n\n" % orjson.dumps(error)
