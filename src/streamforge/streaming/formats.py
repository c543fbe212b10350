"""The wire formats of the internal event stream, by name.

Every format is an ``Encoder`` over the same event log (``streaming/response.py`` sends it);
a router picks one here and builds it for its stream with ``FORMATS[name].build(...)``.
A new format is one more entry: the conformance test (``tests/test_encoders.py``) replays a
recorded stream through every entry against that format's own client parser.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from streamforge.streaming import ai_sdk
from streamforge.streaming.ai_sdk import AiSdkEncoder
from streamforge.streaming.anthropic import AnthropicEventEncoder
from streamforge.streaming.openai import OpenAIChunkEncoder
from streamforge.streaming.response import Encoder
from streamforge.streaming.sse import SSEEncoder


@dataclass(frozen=True, slots=True)
class StreamContext:
    """What an encoder may need to know about the stream it encodes."""

    stream_id: str
    model: str = ""
    retry_ms: int = 3000
    # The answer's token limit, when the request set one (a finish reason of ``length``).
    limit: int | None = None
    # OpenAI's ``stream_options.include_usage``.
    include_usage: bool = False
    # The Unix time the answer was started (OpenAI's ``created``).
    created: int = 0


@dataclass(frozen=True, slots=True)
class WireFormat:
    name: str
    build: Callable[[StreamContext], Encoder]
    # Every event keeps the event log's id as its SSE ``id:``, so a client that reconnects
    # with ``Last-Event-ID`` gets exactly the events it missed.
    event_ids: bool
    # Response headers the format's clients look for.
    headers: Mapping[str, str] = field(default_factory=dict)


def openai_completion_id(stream_id: str) -> str:
    return f"chatcmpl-{stream_id}"


def anthropic_message_id(stream_id: str) -> str:
    return f"msg_{stream_id}"


def _plain(context: StreamContext) -> Encoder:
    return SSEEncoder(context.retry_ms)


def _openai(context: StreamContext) -> Encoder:
    return OpenAIChunkEncoder(
        openai_completion_id(context.stream_id),
        context.model,
        context.created,
        include_usage=context.include_usage,
        limit=context.limit,
    )


def _anthropic(context: StreamContext) -> Encoder:
    return AnthropicEventEncoder(
        anthropic_message_id(context.stream_id), context.model, limit=context.limit
    )


def _ai_sdk(context: StreamContext) -> Encoder:
    return AiSdkEncoder(context.stream_id, context.retry_ms)


FORMATS: Mapping[str, WireFormat] = MappingProxyType(
    {
        wire.name: wire
        for wire in (
            WireFormat("sse", _plain, event_ids=True),
            WireFormat("openai", _openai, event_ids=False),
            WireFormat("anthropic", _anthropic, event_ids=False),
            WireFormat("ai_sdk", _ai_sdk, event_ids=True, headers=ai_sdk.HEADERS),
        )
    }
)
