from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from starlette.responses import JSONResponse, Response

from streamforge.deps import CallerDep, ChatServiceDep, ComponentsDep, OwnerDep
from streamforge.errors import BadRequest, EventLogUnavailable
from streamforge.routers.turns import OnLeave, event_stream, grounding
from streamforge.schemas.chat import ChatRequest
from streamforge.schemas.common import ErrorResponse, StorableText
from streamforge.services.chat import TurnRequest
from streamforge.services.health import chat_health
from streamforge.streaming.events import MAX_EVENT_ID
from streamforge.streaming.log import StreamReader, Unreachable
from streamforge.streaming.response import EventStreamResponse

router = APIRouter(prefix="/chat", tags=["chat"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 422)
}

_STREAM_DOC = (
    "A `text/event-stream`: `retry:` first, then events that each have an increasing `id:`. "
    "`event: session` (JSON) comes first and `event: done` (JSON) last; text deltas are events "
    "without an `event:` field whose `data:` lines carry the text verbatim. Idle streams get "
    "`: ping` comments."
)


@router.post(
    "",
    summary="Stream an answer to a message",
    response_class=EventStreamResponse,
    status_code=200,
    responses={200: {"content": {"text/event-stream": {}}, "description": _STREAM_DOC}, **_ERRORS},
)
async def chat(
    body: ChatRequest,
    caller: CallerDep,
    service: ChatServiceDep,
    components: ComponentsDep,
) -> EventStreamResponse:
    # The body's fields are the turn's, but for retrieval and the stop list.
    fields = body.model_dump(exclude={"rag", "stop"})
    request = TurnRequest(**fields, stop=tuple(body.stop or ()), grounding=grounding(body.rag))
    turn = await service.start(caller, request)
    streams = components.streams
    # A retry attached to a stream that is still going follows it like a resume does.
    follows = turn.attached and not turn.reader.closed
    if follows:
        await streams.reader_joined(turn.stream_id)

    async def leave() -> None:
        # The client is gone: the disconnect policy decides whether generation goes on.
        await streams.reader_left(turn.stream_id)

    on_leave = leave if follows or not turn.attached else None
    return event_stream(components, turn.reader, on_leave=on_leave)


_RESUME_DOC = (
    "Replays the events after `Last-Event-ID` (the header a browser's `EventSource` sends "
    "when it reconnects, or the `last_event_id` query parameter), then follows the stream "
    "live until its `done` event, on any worker when the event log is Redis. A stream that "
    "is unknown, expired, or finished with nothing after that id answers `204 No Content`, "
    "which tells `EventSource` to stop reconnecting. An id that is not decimal digits, or is "
    "above 9223372036854775807, is a `400`. When the shared event log cannot be reached the "
    "stream answers one `event: error` with `retryable: true` and closes, so `EventSource` "
    "tries again after the `retry:` delay."
)


@router.get(
    "/streams/{stream_id}",
    summary="Resume a stream after the last event received",
    description=_RESUME_DOC,
    response_class=EventStreamResponse,
    status_code=200,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": _STREAM_DOC},
        204: {"description": "Nothing more will come: do not reconnect."},
        **_ERRORS,
    },
)
async def resume(
    stream_id: str,
    owner: OwnerDep,
    service: ChatServiceDep,
    components: ComponentsDep,
    last_event_id: Annotated[StorableText | None, Query(max_length=20)] = None,
    last_event_id_header: Annotated[
        StorableText | None, Header(alias="Last-Event-ID", max_length=20)
    ] = None,
) -> Response:
    after = _event_id(last_event_id_header if last_event_id_header is not None else last_event_id)
    stream: StreamReader | None
    try:
        stream = await service.open_stream(owner, stream_id)
    except EventLogUnavailable as exc:
        stream = Unreachable(stream_id, exc)
    if stream is None or (stream.closed and after >= stream.last_id):
        return Response(status_code=204)
    streams = components.streams
    components.metrics.resumes.inc()
    # An unreachable log: the response is one retryable error, nothing to follow.
    follows = not stream.closed and not isinstance(stream, Unreachable)
    if follows:
        await streams.reader_joined(stream_id)

    async def leave() -> None:
        await streams.reader_left(stream_id)

    on_leave: OnLeave | None = leave if follows else None
    return event_stream(components, stream, on_leave=on_leave, last_event_id=after)


@router.post(
    "/streams/{stream_id}/cancel",
    summary="Stop a generation",
    responses=_ERRORS,
)
async def cancel(
    stream_id: str, owner: OwnerDep, service: ChatServiceDep, components: ComponentsDep
) -> dict[str, Any]:
    """Stops the generation at once; the reply is stored `cancelled` with its text so far,
    and the stream ends with `done` (`finish_reason` `cancelled`). The answer comes once the
    stream has ended: `cancelled` is true when it ended cancelled (by this call or an earlier
    one, also when several arrive at once), false when it had ended some other way
    (completed, failed, interrupted)."""
    cancelled = await service.cancel(owner, stream_id)
    if cancelled:
        components.metrics.cancels.inc()
    return {"stream_id": stream_id, "cancelled": cancelled}


def _event_id(raw: str | None) -> int:
    """The same rule whichever event log holds the stream: decimal digits, at most
    ``MAX_EVENT_ID`` (a larger id names no event of any stream)."""
    if raw is None or raw == "":
        return 0
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_EVENT_ID:
        raise BadRequest("Last-Event-ID must be an event id received from this stream")
    return int(raw)


@router.get("/health", summary="Chat service health")
async def health(components: ComponentsDep) -> JSONResponse:
    report = await chat_health(components)
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)
