"""The OpenAI-compatible API: ``/v1/chat/completions``, ``/v1/models``, ``/v1/embeddings``.

The official ``openai`` SDK and LangChain's ``ChatOpenAI`` work against it unchanged. Errors
keep StreamForge's one shape, ``{"error": {"code", "message"}}``, which the SDK reads as it
reads OpenAI's own.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from streamforge.chains.providers.base import ChatTurn
from streamforge.deps import CallerDep, CompletionServiceDep, ComponentsDep, EmbeddingServiceDep
from streamforge.errors import BadRequest, NotFound, ValidationFailed
from streamforge.http_errors import error_response
from streamforge.routers.turns import grounding, stream_stateless, wait_stateless
from streamforge.schemas.common import ErrorResponse
from streamforge.schemas.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    ModelList,
    ModelPublic,
    Usage,
)
from streamforge.services.completions import CompletionRequest
from streamforge.streaming.formats import FORMATS, StreamContext, openai_completion_id
from streamforge.streaming.openai import Collected, collect

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

# The OpenAI "developer" role is the newer name of "system".
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

# Models carry no creation date here; 0 says "unknown" in a field the schema requires.
_MODEL_CREATED = 0


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
    caller: CallerDep,
    request: Request,
    service: CompletionServiceDep,
    components: ComponentsDep,
) -> Response:
    _check_supported(body)
    completion = await service.start(
        caller,
        CompletionRequest(
            model=body.model,
            messages=[
                ChatTurn(_ROLES[message.role], _text(message, index))
                for index, message in enumerate(body.messages)
            ],
            temperature=body.temperature,
            max_tokens=body.answer_limit,
            stop=body.stop_sequences,
            grounding=grounding(body.rag),
        ),
    )
    created = int(time.time())
    completion_id = openai_completion_id(completion.stream_id)
    if body.stream:
        context = StreamContext(
            completion.stream_id,
            model=body.model,
            limit=completion.limit,
            include_usage=body.include_usage,
            created=created,
        )
        return stream_stateless(components, completion.run, FORMATS["openai"].build(context))
    left = await wait_stateless(components, completion.run, request.receive)
    if left is not None:
        return left
    collected = collect(completion.run.buffer.events, completion.limit)
    return _completion_response(collected, completion_id, body.model, created)


def _check_supported(body: ChatCompletionRequest) -> None:
    """Refuse what would silently change the answer's meaning if ignored."""
    if body.n != 1:
        raise BadRequest("only n=1 is supported")
    if body.tools or body.functions:
        raise BadRequest("tools and function calling are not supported")
    if isinstance(body.tool_choice, dict) or body.tool_choice not in (None, "none", "auto"):
        raise BadRequest("tool_choice is not supported; tools are not available")
    if body.response_format is not None and body.response_format.type != "text":
        raise BadRequest(
            f"response_format {body.response_format.type!r} is not supported; only 'text'"
        )
    if body.logprobs or body.top_logprobs:
        raise BadRequest("logprobs are not supported")
    if body.modalities is not None and any(m != "text" for m in body.modalities):
        raise BadRequest("only the 'text' modality is supported")


def _text(message: ChatMessage, index: int) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts: list[str] = []
    for position, part in enumerate(message.content):
        if part.type != "text" or part.text is None:
            kind = part.type if part.type != "text" else "text without a 'text' field"
            raise ValidationFailed(
                f"messages[{index}].content[{position}]: content parts of type {kind!r} "
                "are not supported; only text parts are"
            )
        texts.append(part.text)
    # Parts are separate segments; a line break keeps words apart (as vLLM does).
    return "\n".join(texts)


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
    texts = _texts(body)
    if len(texts) > config.max_inputs:
        raise ValidationFailed(f"at most {config.max_inputs} inputs per request")
    for index, text in enumerate(texts):
        if len(text) > config.max_input_chars:
            raise ValidationFailed(
                f"input[{index}] is longer than {config.max_input_chars} characters"
            )
    vectors = await embeddings.embed_documents(texts)
    tokens = embeddings.count_tokens(texts)
    return EmbeddingList(
        data=[
            Embedding(index=index, embedding=_encode_vector(vector, body.encoding_format))
            for index, vector in enumerate(vectors)
        ],
        model=embeddings.name,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


def _texts(body: EmbeddingRequest) -> list[str]:
    if isinstance(body.input, str):
        return [body.input]
    if all(isinstance(item, str) for item in body.input):
        return [str(item) for item in body.input]
    raise BadRequest("token arrays are not supported as input; send text")


def _encode_vector(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector
