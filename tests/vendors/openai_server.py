"""A loopback server speaking OpenAI's Chat Completions wire format.

Give the SDK ``server.base_url`` (``http://127.0.0.1:PORT/v1``). It also stands in for any
"OpenAI-compatible" endpoint.
"""

from __future__ import annotations

import base64
import secrets
import struct
import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

from tests.vendors._core import (
    ApiError,
    ChatCall,
    Exchange,
    Frame,
    Handler,
    Headers,
    JsonBody,
    Plan,
    VendorServer,
    dumps,
    fake_embedding,
    int_or_none,
    random_id,
    require_object,
)

# status: (type, code, message)
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: test. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM) in organization org-test: Limit 3, "
        "Used 3, Requested 1. Please try again in 20s.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
}

_CREATED = 1_700_000_000


def _usage(plan: Plan) -> JsonBody:
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class OpenAIServer(VendorServer):
    """``POST /v1/chat/completions`` (SSE or JSON), ``GET /v1/models[/{id}]``."""

    vendor: ClassVar[str] = "openai"
    chat_path: ClassVar[str] = "/v1/chat/completions"
    base_path: ClassVar[str] = "/v1"
    default_models: ClassVar[tuple[str, ...]] = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")
    invalid_json_message: ClassVar[str] = (
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what "
        "was sent was not valid JSON.)"
    )

    def extra_routes(self) -> Mapping[tuple[str, str], Handler]:
        return {
            ("GET", "/v1/models"): self._list_models,
            ("POST", "/v1/embeddings"): self._embeddings,
        }

    def resolve(self, method: str, path: str) -> Handler | None:
        if method == "GET" and path.startswith("/v1/models/"):
            return self._get_model
        return super().resolve(method, path)

    # -- embeddings ----------------------------------------------------------------------------

    async def _embeddings(self, exchange: Exchange) -> None:
        body = exchange.record.body if isinstance(exchange.record.body, dict) else {}
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts:
            await self.send_error(exchange, ApiError(400, "'input' is a required property"))
            return
        dimensions = int(body.get("dimensions") or 1536)
        data = []
        for index, item in enumerate(texts):
            text = item if isinstance(item, str) else " ".join(str(token) for token in item)
            vector = fake_embedding(text, dimensions)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(str(t).split()) for t in texts)
        self.embedding_requests.append(body)
        await self.send_json(
            exchange,
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            headers=self.common_headers(),
        )

    # -- models --------------------------------------------------------------------------------

    def _model(self, name: str) -> JsonBody:
        return {"id": name, "object": "model", "created": _CREATED, "owned_by": "system"}

    async def _list_models(self, exchange: Exchange) -> None:
        await self.send_json(
            exchange,
            {"object": "list", "data": [self._model(name) for name in self.models]},
            headers=self.common_headers(),
        )

    async def _get_model(self, exchange: Exchange) -> None:
        name = exchange.record.path.removeprefix("/v1/models/")
        if name not in self.models:
            await self.send_error(
                exchange,
                ApiError(
                    404, f"The model '{name}' does not exist", code="model_not_found", param="model"
                ),
            )
            return
        await self.send_json(exchange, self._model(name), headers=self.common_headers())

    # -- chat ----------------------------------------------------------------------------------

    def finish_value(self, generic: Literal["stop", "length"]) -> str:
        return generic

    def parse_chat(self, body: Any) -> ChatCall:
        body = require_object(body, "Invalid request body: expected a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "you must provide a model parameter")
        if not isinstance(body.get("messages"), list):
            raise ApiError(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        stream = body.get("stream") is True
        options = body.get("stream_options")
        if options is not None and not stream:
            raise ApiError(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        options = options if isinstance(options, dict) else {}
        limit = int_or_none(body.get("max_completion_tokens"))
        if limit is None:
            limit = int_or_none(body.get("max_tokens"))
        return ChatCall(
            model=model,
            stream=stream,
            max_tokens=limit,
            flags=(
                ("include_usage", options.get("include_usage") is True),
                ("obfuscation", options.get("include_obfuscation", True) is not False),
            ),
        )

    def stream_frames(self, plan: Plan) -> Iterator[Frame]:
        include_usage = bool(plan.call.flag("include_usage"))
        obfuscate = bool(plan.call.flag("obfuscation"))
        envelope: JsonBody = {
            "id": f"chatcmpl-{random_id(29)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": plan.model,
            "service_tier": "default",
            "system_fingerprint": f"fp_{secrets.token_hex(5)}",
        }

        def chunk(choices: list[JsonBody], **extra: Any) -> bytes:
            value = {**envelope, "choices": choices, **extra}
            if include_usage and "usage" not in value:
                value["usage"] = None
            if obfuscate:
                # Real streams pad each chunk with random characters of varying length.
                value["obfuscation"] = random_id(secrets.randbelow(12) + 1)
            return b"data: " + dumps(value) + b"\n\n"

        def choice(delta: JsonBody, finish: str | None = None) -> list[JsonBody]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        yield "head", chunk(choice({"role": "assistant", "content": "", "refusal": None}))
        for token in plan.tokens:
            yield "token", chunk(choice({"content": token}))
        yield "tail", chunk(choice({}, plan.finish))
        if include_usage:
            yield "tail", chunk([], usage=_usage(plan))
        yield "tail", b"data: [DONE]\n\n"

    def stream_error_frame(self, plan: Plan, status: int) -> bytes:
        return b"data: " + dumps(self.error_body(status, None)) + b"\n\n"

    def completion_body(self, plan: Plan) -> JsonBody:
        return {
            "id": f"chatcmpl-{random_id(29)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": plan.model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": plan.text,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": plan.finish,
                }
            ],
            "usage": _usage(plan),
            "service_tier": "default",
            "system_fingerprint": f"fp_{secrets.token_hex(5)}",
        }

    # -- errors and headers --------------------------------------------------------------------

    def error_body(self, status: int, message: str | None, **extra: Any) -> JsonBody:
        kind, code, default = _ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, "")
        )
        if status == 404 and message and message.startswith("Invalid URL"):
            code = None
        return {
            "error": {
                "message": message or default or f"HTTP {status}",
                "type": extra.get("type", kind),
                "param": extra.get("param"),
                "code": extra.get("code", code),
            }
        }

    def common_headers(self) -> Headers:
        return [
            (b"x-request-id", f"req_{secrets.token_hex(16)}".encode()),
            (b"openai-version", b"2020-10-01"),
            (b"openai-organization", b"user-test"),
            (b"openai-processing-ms", b"1"),
        ]

    def error_headers(self, status: int) -> Headers:
        headers = self.common_headers()
        if status == 429:
            headers += [
                (b"x-ratelimit-limit-requests", b"3"),
                (b"x-ratelimit-remaining-requests", b"0"),
                (b"x-ratelimit-reset-requests", b"20s"),
            ]
        return headers
