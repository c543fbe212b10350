"""The OpenAI-compatible API: ``/v1/chat/completions``, ``/v1/models``, ``/v1/embeddings``.

The official ``openai`` SDK and LangChain's ``ChatOpenAI`` work against it unchanged. Errors
keep StreamForge's one shape, ``{"error": {"code", "message"}}``, which the SDK reads as it
reads OpenAI's own.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive

from streamforge.deps import (
    CallerDep,
    CompletionServiceDep,
    ComponentsDep,
    EmbeddingServiceDep,
    OwnerDep,
    admit_stream,
    finish_when_done,
)
from streamforge.errors import BadRequest, NotFound, ValidationFailed
from streamforge.http_errors import error_response
from streamforge.models import MessageStatus
from streamforge.schemas.common import ErrorResponse
from streamforge.schemas.documents import rag_options
from streamforge.schemas.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    ModelList,
    ModelPublic,
    Usage,
)
from streamforge.services.completions import Completion, CompletionRequest
from streamforge.services.streams import StreamManager
from streamforge.streaming.log import StreamBuffer
from streamforge.streaming.openai import Collected, OpenAIChunkEncoder, collect
from streamforge.streaming.response import Ending, EventStreamResponse

router = APIRouter(prefix="/v1", tags=["openai"])


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 422, 429, 502, 503, 504)
}

_STREAM_DOC = (
    "With `stream: true`, a `text/event-stream` of `chat.completion.chunk` objects as OpenAI "
    "sends them, ending with `data: [DONE]`; otherwise one `chat.completion` object."
)

# A failed generation is the upstream's failure, not the client's: a gateway's status codes.
_PROVIDER_STATUS = {
    "provider_busy": 429,
    "provider_rate_limited": 429,
    "provider_timeout": 504,
}
_STOPPED_STATUS = {"cancelled": 409, "interrupted": 503}

# Models carry no creation date here; 0 says "unknown" in a field the schema requires.
_MODEL_CREATED = 0

# Status recorded in access logs for a request whose client left before the answer.
_CLIENT_CLOSED = 499


@router.post(
    "/chat/completions",
    summary="Create a chat completion (OpenAI-compatible)",
    response_model=ChatCompletion,
    responses={
        200: {
            "content": {"application/json": {}, "text/event-stream": {}},
            "description": _STREAM_DOC,
        },
        **_ERRORS,
    },
)
async def chat_completions(
    body: ChatCompletionRequest,
    owner: OwnerDep,
    caller: CallerDep,
    request: Request,
    service: CompletionServiceDep,
    components: ComponentsDep,
) -> Response:
    settings = components.settings
    body.check_supported()
    turns = body.turns()
    limit_chars = settings.limits.max_message_chars
    for index, turn in enumerate(turns):
        if len(turn.content) > limit_chars:
            raise ValidationFailed(f"messages[{index}] is longer than {limit_chars} characters")
    provider, _ = service.resolve_model(body.model)
    # The answer limit the generation runs with, to tell "length" from "stop".
    limit = body.answer_limit or provider.default_max_tokens
    slot = await admit_stream(components, caller)
    try:
        completion = await service.start(
            CompletionRequest(
                model=body.model,
                messages=turns,
                temperature=body.temperature,
                max_tokens=body.answer_limit,
                stop=body.stop_sequences,
                rag=rag_options(body.rag),
            ),
            owner,
        )
    except BaseException:
        await slot.finish()
        raise
    await finish_when_done(components, completion.stream_id, slot)
    created = int(time.time())
    completion_id = f"chatcmpl-{completion.stream_id}"
    streams = components.streams

    if body.stream:

        async def on_end(ending: Ending) -> None:
            if ending != "finished":
                # The client is gone: stop generating now.
                components.metrics.disconnects.inc()
                streams.stop(completion.stream_id, MessageStatus.INTERRUPTED)
                await streams.wait(completion.stream_id)

        return EventStreamResponse(
            completion.run.buffer,
            heartbeat_interval=settings.streaming.heartbeat_interval,
            send_timeout=settings.streaming.send_timeout,
            encoder=OpenAIChunkEncoder(
                completion_id,
                body.model,
                created,
                include_usage=body.include_usage,
                limit=limit,
            ),
            on_end=on_end,
        )

    if not await _finished(completion, streams, request.receive):
        return Response(status_code=_CLIENT_CLOSED)
    collected = collect(completion.run.buffer.events, limit)
    return _completion_response(collected, completion_id, body.model, created)


async def _finished(completion: Completion, streams: StreamManager, receive: Receive) -> bool:
    """Wait for the generation to end; False, with generation stopped, if the client left."""
    buffer = completion.run.buffer
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
            streams.stop(completion.stream_id, MessageStatus.INTERRUPTED)
    if not buffer.closed:
        await streams.wait(completion.stream_id)
        return False
    return True


async def _until_closed(buffer: StreamBuffer) -> None:
    while not buffer.closed:
        await buffer.wait(buffer.last_id, 3600.0)


async def _until_disconnect(receive: Receive) -> None:
    # The body has been read, so the next message the server gives is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass


def _completion_response(
    collected: Collected, completion_id: str, model: str, created: int
) -> Response:
    conclusion = collected.conclusion
    if conclusion.error is not None:
        code = str(conclusion.error.get("code") or "provider_error")
        status = _STOPPED_STATUS.get(code) or _PROVIDER_STATUS.get(code, 502)
        details = (
            {"retryable": conclusion.error["retryable"]}
            if "retryable" in conclusion.error
            else None
        )
        return error_response(
            status, code, str(conclusion.error.get("message") or "generation failed"), details
        )
    completion = ChatCompletion(
        id=completion_id,
        created=created,
        model=model,
        sources=collected.sources,
        choices=[
            Choice(
                index=0,
                message=AssistantMessage(content=collected.text),
                finish_reason=conclusion.finish_reason or "stop",
            )
        ],
        usage=Usage(**conclusion.usage),
    )
    return Response(
        completion.model_dump_json(exclude={"sources"} if completion.sources is None else None),
        media_type="application/json",
    )


@router.get("/models", summary="List models (OpenAI-compatible)", response_model=ModelList)
async def list_models(service: CompletionServiceDep) -> ModelList:
    return ModelList(
        data=[
            ModelPublic(id=listed, created=_MODEL_CREATED, owned_by=owner, model=model)
            for listed, owner, model in service.models()
        ]
    )


@router.get(
    "/models/{model:path}",
    summary="One model (OpenAI-compatible)",
    response_model=ModelPublic,
    responses={404: {"model": ErrorResponse}},
)
async def get_model(model: str, service: CompletionServiceDep) -> ModelPublic:
    for listed, owner, used in service.models():
        if listed == model:
            return ModelPublic(id=listed, created=_MODEL_CREATED, owned_by=owner, model=used)
    raise NotFound(f"model {model!r} does not exist; see GET /v1/models")


@router.post(
    "/embeddings",
    summary="Create embeddings (OpenAI-compatible)",
    response_model=EmbeddingList,
    responses=_ERRORS,
)
async def create_embeddings(
    body: EmbeddingRequest, embeddings: EmbeddingServiceDep, components: ComponentsDep
) -> EmbeddingList:
    config = components.settings.embeddings
    if body.model not in (embeddings.name, config.provider, "default"):
        raise NotFound(
            f"embedding model {body.model!r} does not exist; this server embeds with "
            f"{embeddings.name!r}"
        )
    if body.dimensions is not None and body.dimensions != embeddings.dimensions:
        raise BadRequest(
            f"dimensions {body.dimensions} is not available; {embeddings.name!r} makes "
            f"{embeddings.dimensions}-dimensional vectors"
        )
    texts = body.texts()
    if len(texts) > config.max_inputs:
        raise ValidationFailed(f"at most {config.max_inputs} inputs per request")
    for index, text in enumerate(texts):
        if len(text) > config.max_input_chars:
            raise ValidationFailed(
                f"input[{index}] is longer than {config.max_input_chars} characters"
            )
    vectors = await embeddings.embed_documents(texts)
    tokens = sum(approximate_tokens(text) for text in texts)
    return EmbeddingList(
        data=[
            Embedding(index=index, embedding=_encode_vector(vector, body.encoding_format))
            for index, vector in enumerate(vectors)
        ],
        model=embeddings.name,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


def approximate_tokens(text: str) -> int:
    # About four characters a token for English text; only reported, never enforced.
    return max(1, (len(text) + 3) // 4)


def _encode_vector(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector
