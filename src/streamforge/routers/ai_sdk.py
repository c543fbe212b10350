"""The AI SDK's chat protocol: ``useChat({ transport: new DefaultChatTransport({ api:
'<server>/ai-sdk/chat' }) })`` works against StreamForge unchanged.

The client's chat id names a StreamForge session of the caller's (created on first use), its
last user message is the turn, and the answer streams as the UI message stream
(``streaming/ai_sdk.py``) over the same event log as ``/chat``: resume, retrieval with
citations and memory work as there. The AI SDK stops an answer by aborting the request, so a
client leaving ends the generation ``cancelled`` when the disconnect policy is ``cancel``;
with ``continue`` it goes on for the grace period, for ``GET /ai-sdk/chat/{id}/stream``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path
from starlette.responses import Response

from streamforge.deps import CallerDep, ChatServiceDep, Components, ComponentsDep, OwnerDep
from streamforge.errors import EventLogUnavailable
from streamforge.models import MessageStatus
from streamforge.routers.chat import _event_id
from streamforge.routers.turns import OnLeave, event_stream, grounding
from streamforge.schemas.ai_sdk import AiSdkChatRequest
from streamforge.schemas.common import ErrorResponse, StorableText
from streamforge.services.chat import TurnRequest, client_session_id
from streamforge.streaming.formats import FORMATS, StreamContext
from streamforge.streaming.log import StreamReader, Unreachable
from streamforge.streaming.response import EventStreamResponse

router = APIRouter(prefix="/ai-sdk", tags=["ai-sdk"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 409, 413, 422)
}

_STREAM_DOC = (
    "The AI SDK's UI message stream (header `x-vercel-ai-ui-message-stream: v1`): one JSON part "
    "per `data:` line — `start` (the assistant message id, StreamForge's ids as metadata), "
    "`source-document` parts when answering from documents, `text-start`/`text-delta`/"
    "`text-end`, `error`, `message-metadata` (usage), `finish` — then `data: [DONE]`. Every "
    "event has an `id:`, as on `/chat`."
)


@router.post(
    "/chat",
    summary="Answer the AI SDK's chat transport (useChat)",
    response_class=EventStreamResponse,
    status_code=200,
    responses={200: {"content": {"text/event-stream": {}}, "description": _STREAM_DOC}, **_ERRORS},
)
async def chat(
    body: AiSdkChatRequest,
    caller: CallerDep,
    service: ChatServiceDep,
    components: ComponentsDep,
) -> EventStreamResponse:
    """`submit-message` adds the last user message to the chat's session and streams the
    answer; `regenerate-message` first deletes the session's last turn, so the new reply
    replaces the old one (409 while that one is still being generated)."""
    request = TurnRequest(
        message=body.message,
        session_id=client_session_id(caller.user_id, body.id),
        provider=body.provider,
        model=body.model,
        temperature=body.temperature,
        max_tokens=body.max_tokens,
        template=body.template,
        variables=body.variables,
        grounding=grounding(body.rag),
        create_missing=True,
        replace_last=body.trigger == "regenerate-message",
    )
    turn = await service.start(caller, request)
    return _respond(components, turn.stream_id, turn.reader, leaves=True)


@router.get(
    "/chat/{chat_id}/stream",
    summary="Reattach to a chat's answer in progress (useChat's resume)",
    response_class=EventStreamResponse,
    status_code=200,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": _STREAM_DOC},
        204: {"description": "The chat has no answer in progress."},
        **_ERRORS,
    },
)
async def resume(
    chat_id: Annotated[StorableText, Path(min_length=1, max_length=200)],
    owner: OwnerDep,
    service: ChatServiceDep,
    components: ComponentsDep,
    last_event_id_header: Annotated[
        StorableText | None, Header(alias="Last-Event-ID", max_length=20)
    ] = None,
) -> Response:
    """The answer being generated for the chat, replayed from its start (or after
    `Last-Event-ID`) and followed live; `204 No Content` when there is none."""
    after = _event_id(last_event_id_header)
    stream: StreamReader | None
    try:
        stream = await service.active_stream(owner, client_session_id(owner, chat_id))
    except EventLogUnavailable as exc:
        stream = Unreachable(chat_id, exc)
    if stream is None or (stream.closed and after >= stream.last_id):
        return Response(status_code=204)
    components.metrics.resumes.inc()
    follows = not stream.closed and not isinstance(stream, Unreachable)
    if follows:
        await components.streams.reader_joined(stream.stream_id)
    return _respond(components, stream.stream_id, stream, leaves=follows, after=after)


def _respond(
    components: Components,
    stream_id: str,
    reader: StreamReader,
    *,
    leaves: bool,
    after: int = 0,
) -> EventStreamResponse:
    streams = components.streams

    async def leave() -> None:
        # The AI SDK's stop is an aborted request: under the `cancel` policy, a cancel.
        await streams.reader_left(stream_id, MessageStatus.CANCELLED)

    # Only a response that counted itself as a reader of a live stream leaves it.
    on_leave: OnLeave | None = leave if leaves else None
    wire = FORMATS["ai_sdk"]
    encoder = wire.build(StreamContext(stream_id, retry_ms=components.settings.streaming.retry_ms))
    return event_stream(
        components,
        reader,
        on_leave=on_leave,
        encoder=encoder,
        last_event_id=after,
        headers=dict(wire.headers),
    )
