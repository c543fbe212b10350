from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse

from streamforge.deps import ChatServiceDep, ComponentsDep, OwnerDep, SettingsDep
from streamforge.models import MessageStatus
from streamforge.schemas.chat import ChatRequest
from streamforge.schemas.common import ErrorResponse
from streamforge.services.health import chat_health
from streamforge.streaming.response import Ending, EventStreamResponse

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
    owner: OwnerDep,
    service: ChatServiceDep,
    settings: SettingsDep,
    components: ComponentsDep,
) -> EventStreamResponse:
    turn = await service.start(owner, body)
    streams = components.streams

    async def on_end(ending: Ending) -> None:
        if ending != "finished":
            # The client is gone: stop generating now and record the reply as interrupted.
            streams.stop(turn.stream_id, MessageStatus.INTERRUPTED)
            await streams.wait(turn.stream_id)

    return EventStreamResponse(
        turn.run.buffer,
        heartbeat_interval=settings.streaming.heartbeat_interval,
        send_timeout=settings.streaming.send_timeout,
        retry_ms=settings.streaming.retry_ms,
        on_end=on_end,
    )


@router.get("/health", summary="Chat service health")
async def health(components: ComponentsDep) -> JSONResponse:
    report = await chat_health(components)
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)
