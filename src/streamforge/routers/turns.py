"""What every router that starts or follows a turn shares: the grounding a request asks for,
the streamed response in the endpoint's wire format, and the wait for a whole answer.

A new endpoint that generates (another wire format) parses its body into a call of
``ChatService`` or ``CompletionService``, then answers with ``event_stream`` and its own
``Encoder`` (``streaming/openai.py`` is the one to copy; built from its entry in
``streaming/formats.py``), or with ``until_finished`` and one JSON body. A stateless one
(nothing stored, nothing to resume) uses ``stream_stateless`` / ``wait_stateless``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive

from streamforge.deps import Components
from streamforge.models import MessageStatus
from streamforge.schemas.documents import RagField, rag_options
from streamforge.services.pipeline import Grounding
from streamforge.services.streams import StreamManager, StreamRun
from streamforge.streaming.formats import FORMATS, StreamContext
from streamforge.streaming.log import StreamBuffer, StreamReader
from streamforge.streaming.response import Encoder, Ending, EventStreamResponse

# What to do when the client leaves before the stream's end (after counting the disconnect).
OnLeave = Callable[[], Awaitable[None]]

# Status recorded in access logs for a request whose client left before the answer.
CLIENT_CLOSED = 499


def grounding(rag: RagField) -> Grounding | None:
    options = rag_options(rag)
    if options is None:
        return None
    collections = list(options.collections) if options.collections is not None else None
    return Grounding(collections=collections, top_k=options.top_k)


def event_stream(
    components: Components,
    reader: StreamReader,
    *,
    on_leave: OnLeave | None = None,
    encoder: Encoder | None = None,
    last_event_id: int = 0,
    headers: dict[str, str] | None = None,
) -> EventStreamResponse:
    """The stream from ``last_event_id`` on, as ``encoder`` writes it (plain SSE when None)."""

    async def on_end(ending: Ending) -> None:
        if ending != "finished":
            components.metrics.disconnects.inc()
            if on_leave is not None:
                await on_leave()

    streaming = components.settings.streaming
    if encoder is None:
        context = StreamContext(reader.stream_id, retry_ms=streaming.retry_ms)
        encoder = FORMATS["sse"].build(context)
    return EventStreamResponse(
        reader,
        heartbeat_interval=streaming.heartbeat_interval,
        send_timeout=streaming.send_timeout,
        retry_ms=streaming.retry_ms,
        encoder=encoder,
        last_event_id=last_event_id,
        on_end=on_end,
        headers=headers,
    )


def stop_on_leave(streams: StreamManager, stream_id: str) -> OnLeave:
    """For a stateless request: nobody can resume its answer, so generation stops now."""

    async def stop() -> None:
        streams.stop(stream_id, MessageStatus.INTERRUPTED)
        await streams.wait(stream_id)

    return stop


def stream_stateless(
    components: Components, run: StreamRun, encoder: Encoder
) -> EventStreamResponse:
    """A stateless answer streamed; a client that leaves stops its generation."""
    on_leave = stop_on_leave(components.streams, run.stream_id)
    return event_stream(components, run.buffer, on_leave=on_leave, encoder=encoder)


async def wait_stateless(
    components: Components, run: StreamRun, receive: Receive
) -> Response | None:
    """Wait for a stateless answer to end: None then, or the response for a client that left
    first (generation stopped)."""
    if await until_finished(components.streams, run, receive):
        return None
    return Response(status_code=CLIENT_CLOSED)


async def until_finished(streams: StreamManager, run: StreamRun, receive: Receive) -> bool:
    """Wait for the generation to end; False, with generation stopped, if the client left."""
    buffer = run.buffer
    ended = asyncio.ensure_future(_until_closed(buffer))
    left = asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait((ended, left), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (ended, left):
            task.cancel()
        await asyncio.gather(ended, left, return_exceptions=True)
        if not buffer.closed:
            # The client left, or this request task was cancelled: nobody will read the answer.
            streams.stop(run.stream_id, MessageStatus.INTERRUPTED)
    if not buffer.closed:
        await streams.wait(run.stream_id)
        return False
    return True


async def _until_closed(buffer: StreamBuffer) -> None:
    while not buffer.closed:
        await buffer.wait(buffer.last_id, 3600.0)


async def _until_disconnect(receive: Receive) -> None:
    # The body has been read, so the next message the server gives is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass
