"""An ASGI response that sends a logged stream as Server-Sent Events.

The writer and the disconnect listener run as sibling tasks; whichever ends first cancels the
other. The writer sends every event already logged in one body chunk (so a fast producer does
not cost one ``send`` per token), sends a heartbeat comment when the stream is silent, and
gives up on a client that stops reading after ``send_timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from streamforge.streaming.events import StreamEvent
from streamforge.streaming.log import EventLogUnavailable, StreamReader
from streamforge.streaming.sse import SSEEncoder

SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]

# "interrupted": the response ended early on the server's side (shutdown, or the shared event
# log unreachable) after telling the client, with a retryable error, to reconnect.
Ending = Literal["finished", "disconnected", "send_timeout", "interrupted"]


class Encoder(Protocol):
    """A wire format for the internal event stream."""

    def head(self) -> bytes: ...

    def encode(self, events: list[StreamEvent]) -> bytes: ...

    def tail(self) -> bytes: ...

    def ping(self) -> bytes: ...

    def interrupt(self, error: dict[str, object]) -> bytes:
        """The end of a response cut short by the server: a retryable error, no event id."""
        ...


OnEnd = Callable[[Ending], Awaitable[None]]


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        buffer: StreamReader,
        *,
        heartbeat_interval: float,
        send_timeout: float,
        retry_ms: int = 3000,
        encoder: Encoder | None = None,
        last_event_id: int = 0,
        on_end: OnEnd | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.buffer = buffer
        self.heartbeat_interval = heartbeat_interval
        self.send_timeout = send_timeout
        self.encoder = encoder or SSEEncoder(retry_ms)
        self.last_event_id = last_event_id
        self.on_end = on_end
        self.status_code = 200
        self.background = None
        self.body = b""
        self.raw_headers = SSE_HEADERS + [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ending: Ending = "disconnected"
        try:
            ending = await self._run(receive, send)
        finally:
            if self.on_end is not None:
                # Shielded: recording the end (for example, an interrupted message) must finish
                # even when the server cancels this request task.
                await asyncio.shield(self.on_end(ending))

    async def _run(self, receive: Receive, send: Send) -> Ending:
        writer = asyncio.ensure_future(self._write(send))
        listener = asyncio.ensure_future(self._listen_for_disconnect(receive))
        try:
            await asyncio.wait((writer, listener), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (writer, listener):
                if not task.done():
                    task.cancel()
            await asyncio.gather(writer, listener, return_exceptions=True)
        if writer.done() and not writer.cancelled() and writer.exception() is None:
            return writer.result()
        if (
            writer.done()
            and not writer.cancelled()
            and isinstance(writer.exception(), TimeoutError)
        ):
            return "send_timeout"
        return "disconnected"

    async def _send(self, send: Send, message: Message) -> None:
        async with asyncio.timeout(self.send_timeout):
            await send(message)

    async def _body(self, send: Send, body: bytes, *, more: bool = True) -> None:
        await self._send(send, {"type": "http.response.body", "body": body, "more_body": more})

    async def _write(self, send: Send) -> Ending:
        await self._send(
            send,
            {
                "type": "http.response.start",
                "status": 200,
                "headers": self.raw_headers,
            },
        )
        encoder = self.encoder
        head = encoder.head()
        cursor = self.last_event_id
        buffer = self.buffer
        while True:
            try:
                events = await buffer.read(cursor, self.heartbeat_interval)
            except EventLogUnavailable as exc:
                error = {"code": exc.code, "message": exc.message, "retryable": True}
                await self._body(send, head + encoder.interrupt(error), more=False)
                return "interrupted"
            if events:
                cursor = events[-1].id
                body = head + encoder.encode(events)
                head = b""
                finished = events[-1].is_terminal
                if finished:
                    body += encoder.tail()
                await self._body(send, body, more=not finished)
                if finished:
                    return "finished"
                continue
            if head:
                await self._body(send, head)
                head = b""
            if buffer.closed:
                await self._body(send, encoder.tail(), more=False)
                return "finished"
            await self._body(send, encoder.ping())

    async def _listen_for_disconnect(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
