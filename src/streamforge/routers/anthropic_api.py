"""Anthropic's Messages API: ``POST /v1/messages``, streamed and not.

The official ``anthropic`` SDK and LangChain's ``ChatAnthropic`` work against it unchanged. It
is stateless like ``/v1/chat/completions`` and runs on the same generation core (retries,
fallback, cancel on disconnect, limits per key); only the wire format differs. Every error on
this route has Anthropic's shape, ``{"type": "error", "error": {"type", "message"}}``
(``http_errors.py`` answers in it for this path), and ``x-api-key`` is accepted as the key.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from streamforge.chains.providers.base import ChatTurn
from streamforge.deps import CallerDep, CompletionServiceDep, ComponentsDep
from streamforge.errors import BadRequest
from streamforge.routers.turns import stream_stateless, wait_stateless
from streamforge.schemas.anthropic import (
    AnthropicError,
    ContentBlockParam,
    Message,
    MessagesRequest,
    MessageUsage,
    TextBlock,
)
from streamforge.services.completions import CompletionRequest
from streamforge.streaming.anthropic import (
    collect_answer,
    error_body,
    error_type,
    usage_of,
)
from streamforge.streaming.formats import FORMATS, StreamContext, anthropic_message_id

router = APIRouter(prefix="/v1", tags=["anthropic"])

PATH = "/v1/messages"

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": AnthropicError} for code in (400, 401, 404, 413, 429, 502, 503, 504)
}

_STREAM_DOC = (
    "With `stream: true`, a `text/event-stream` of Anthropic's named events (`message_start`, "
    "`content_block_start`, `content_block_delta`, `content_block_stop`, `message_delta`, "
    "`message_stop`, `ping`; `error` when generation fails); otherwise one `message` object."
)

# A failed generation is the upstream's failure, not the client's: a gateway's status codes.
_PROVIDER_STATUS = {"provider_busy": 429, "provider_rate_limited": 429, "provider_timeout": 504}
_STOPPED_STATUS = {"cancelled": 409, "interrupted": 503}


@router.post(
    "/messages",
    summary="Create a message (Anthropic Messages API)",
    response_model=Message,
    responses={
        200: {
            "content": {"application/json": {}, "text/event-stream": {}},
            "description": _STREAM_DOC,
        },
        **_ERRORS,
    },
)
async def create_message(
    body: MessagesRequest,
    caller: CallerDep,
    request: Request,
    service: CompletionServiceDep,
    components: ComponentsDep,
) -> Response:
    _check_supported(body)
    turns: list[ChatTurn] = []
    if body.system is not None:
        system = _text(body.system, "system")
        if system:
            turns.append(ChatTurn("system", system))
    turns.extend(
        ChatTurn(message.role, _text(message.content, f"messages[{index}].content"))
        for index, message in enumerate(body.messages)
    )
    completion = await service.start(
        caller,
        CompletionRequest(
            model=body.model,
            messages=turns,
            temperature=body.temperature,
            max_tokens=body.max_tokens,
            stop=tuple(body.stop_sequences or ()),
        ),
    )
    message_id = anthropic_message_id(completion.stream_id)
    if body.stream:
        context = StreamContext(completion.stream_id, model=body.model, limit=completion.limit)
        return stream_stateless(components, completion.run, FORMATS["anthropic"].build(context))
    left = await wait_stateless(components, completion.run, request.receive)
    if left is not None:
        return left
    answer = collect_answer(completion.run.buffer.events, completion.limit)
    conclusion = answer.conclusion
    if conclusion.error is not None:
        # The type follows the status, as the SDK picks its error class by the status.
        code = str(conclusion.error.get("code") or "provider_error")
        status = _STOPPED_STATUS.get(code) or _PROVIDER_STATUS.get(code, 502)
        text = str(conclusion.error.get("message") or "generation failed")
        return JSONResponse(error_body(error_type(status), text), status_code=status)
    message = Message(
        id=message_id,
        content=[TextBlock(text=answer.text)],
        model=body.model,
        stop_reason=answer.stop_reason,
        stop_sequence=answer.stop_sequence,
        usage=MessageUsage(**usage_of(conclusion)),
    )
    return Response(message.model_dump_json(), media_type="application/json")


def _check_supported(body: MessagesRequest) -> None:
    """Refuse what would silently change the answer's meaning if ignored."""
    if body.tools or body.tool_choice:
        raise BadRequest("tools are not supported")
    if body.thinking is not None and body.thinking.get("type") != "disabled":
        raise BadRequest("extended thinking is not supported")
    if body.output_config is not None and body.output_config.get("format") is not None:
        raise BadRequest("output_config.format (structured output) is not supported")


def _text(content: str | list[ContentBlockParam], where: str) -> str:
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for position, block in enumerate(content):
        if block.type != "text" or block.text is None:
            kind = block.type if block.type != "text" else "text without a 'text' field"
            raise BadRequest(
                f"{where}[{position}]: content blocks of type {kind!r} are not supported; "
                "only text blocks are"
            )
        texts.append(block.text)
    # Blocks are separate segments; a line break keeps words apart.
    return "\n".join(texts)
