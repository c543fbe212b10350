"""A loopback server speaking Anthropic's Messages wire format.

Give the SDK ``server.base_url`` (``http://127.0.0.1:PORT``; the SDK appends ``/v1/...``).
"""

from __future__ import annotations

import secrets
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
    int_or_none,
    random_id,
    require_object,
)

# status: (error type, message)
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "Not Found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per "
        "minute. Please reduce the prompt length or the maximum tokens requested, or try "
        "again later.",
    ),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


def _event(name: str, data: JsonBody) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"


class AnthropicServer(VendorServer):
    """``POST /v1/messages`` (SSE or JSON), ``POST /v1/messages/count_tokens``,
    ``GET /v1/models``."""

    vendor: ClassVar[str] = "anthropic"
    chat_path: ClassVar[str] = "/v1/messages"
    base_path: ClassVar[str] = ""
    default_models: ClassVar[tuple[str, ...]] = (
        "claude-sonnet-4-5-20250929",
        "claude-haiku-4-5-20251001",
    )
    invalid_json_message: ClassVar[str] = "There was an error parsing the body of your request"

    def extra_routes(self) -> Mapping[tuple[str, str], Handler]:
        return {
            ("POST", "/v1/messages/count_tokens"): self._count_tokens,
            ("GET", "/v1/models"): self._list_models,
        }

    async def _count_tokens(self, exchange: Exchange) -> None:
        await self.send_json(
            exchange,
            {"input_tokens": self.behaviour.prompt_tokens},
            headers=self.common_headers(),
        )

    async def _list_models(self, exchange: Exchange) -> None:
        data = [
            {
                "type": "model",
                "id": name,
                "display_name": name,
                "created_at": "2025-09-29T00:00:00Z",
            }
            for name in self.models
        ]
        await self.send_json(
            exchange,
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
            headers=self.common_headers(),
        )

    # -- chat ----------------------------------------------------------------------------------

    def finish_value(self, generic: Literal["stop", "length"]) -> str:
        return "end_turn" if generic == "stop" else "max_tokens"

    def parse_chat(self, body: Any) -> ChatCall:
        body = require_object(body, "body: Input should be a valid dictionary")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "model: Field required")
        limit = int_or_none(body.get("max_tokens"))
        if limit is None:
            raise ApiError(400, "max_tokens: Field required")
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise ApiError(400, "messages: Field required")
        if not messages:
            raise ApiError(400, "messages: at least one message is required")
        for index, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("user", "assistant"):
                # The system prompt is a top-level "system" field, never a message.
                raise ApiError(400, f"messages.{index}.role: Input should be 'user' or 'assistant'")
        return ChatCall(model=model, stream=body.get("stream") is True, max_tokens=limit)

    def _usage(self, plan: Plan, output_tokens: int) -> JsonBody:
        return {
            "input_tokens": plan.prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    def stream_frames(self, plan: Plan) -> Iterator[Frame]:
        message: JsonBody = {
            "id": f"msg_01{random_id(22)}",
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._usage(plan, 1),
        }
        yield "head", _event("message_start", {"type": "message_start", "message": message})
        yield (
            "head",
            _event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
        )
        yield "head", _event("ping", {"type": "ping"})
        for token in plan.tokens:
            yield (
                "token",
                _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": token},
                    },
                ),
            )
        yield "tail", _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        # Usage on message_delta is cumulative: today's API repeats the input counts there.
        yield (
            "tail",
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": plan.finish, "stop_sequence": None},
                    "usage": {
                        "input_tokens": plan.prompt_tokens,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": plan.completion_tokens,
                    },
                },
            ),
        )
        yield "tail", _event("message_stop", {"type": "message_stop"})

    def stream_error_frame(self, plan: Plan, status: int) -> bytes:
        body = self.error_body(status, None)
        body.pop("request_id", None)
        return _event("error", body)

    def completion_body(self, plan: Plan) -> JsonBody:
        return {
            "id": f"msg_01{random_id(22)}",
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": [{"type": "text", "text": plan.text}],
            "stop_reason": plan.finish,
            "stop_sequence": None,
            "usage": self._usage(plan, plan.completion_tokens),
        }

    # -- errors and headers --------------------------------------------------------------------

    def error_body(self, status: int, message: str | None, **extra: Any) -> JsonBody:
        kind, default = _ERRORS.get(
            status, ("api_error" if status >= 500 else "invalid_request_error", f"HTTP {status}")
        )
        if status == 404 and message and message.startswith("Invalid URL"):
            message = None
        return {
            "type": "error",
            "error": {"type": extra.get("type", kind), "message": message or default},
            "request_id": f"req_011C{random_id(20)}",
        }

    def common_headers(self) -> Headers:
        return [
            (b"request-id", f"req_011C{random_id(20)}".encode()),
            (b"anthropic-organization-id", secrets.token_hex(4).encode()),
        ]
