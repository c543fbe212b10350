"""Request and response bodies of Anthropic's Messages API (``POST /v1/messages``).

As on the OpenAI-compatible API, sampling hints a provider may not support (``top_p``,
``top_k``) are accepted and ignored, and what would change what the client gets back if it
were dropped — tools, extended thinking, image or document blocks — is refused with a 400
(``routers/anthropic_api.py`` says which). Unknown fields are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamforge.schemas.common import StorableText

StopText = Annotated[StorableText, Field(min_length=1, max_length=100)]


class ContentBlockParam(BaseModel):
    """One block of a message's content (or of the system prompt); only ``text`` blocks can
    be answered."""

    model_config = ConfigDict(extra="allow")

    type: Annotated[StorableText, Field(max_length=64)]
    text: StorableText | None = None


class MessageParam(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "assistant"]
    content: StorableText | Annotated[list[ContentBlockParam], Field(max_length=1000)] = Field(
        description='A string, or a list of `{"type": "text", "text": ...}` blocks.'
    )


class Metadata(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_id: Annotated[StorableText, Field(max_length=256)] | None = None


class MessagesRequest(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "model": "simulated",
                    "max_tokens": 256,
                    "messages": [{"role": "user", "content": "Hello"}],
                }
            ]
        },
    )

    model: Annotated[StorableText, Field(min_length=1, max_length=200)] = Field(
        description="`provider` (its default model) or `provider/model`; see `GET /v1/models`."
    )
    messages: Annotated[list[MessageParam], Field(min_length=1, max_length=1000)]
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        description="The most tokens the answer may have."
    )
    system: StorableText | Annotated[list[ContentBlockParam], Field(max_length=1000)] | None = (
        Field(default=None, description="A system prompt: a string or text blocks.")
    )
    stop_sequences: Annotated[list[StopText], Field(max_length=16)] | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    metadata: Metadata | None = None
    stream: bool = False

    # Accepted and ignored: hints about sampling the providers do not all support.
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None

    # Accepted without a ``format`` only: StreamForge cannot hold an answer to a JSON schema.
    output_config: dict[str, Any] | None = None

    # Refused when present: StreamForge has no tools and no extended thinking.
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class MessageUsage(BaseModel):
    input_tokens: int
    output_tokens: int


class Message(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[TextBlock]
    model: str
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence"]
    stop_sequence: str | None
    usage: MessageUsage


class ErrorDetail(BaseModel):
    type: str = Field(examples=["invalid_request_error"])
    message: str


class AnthropicError(BaseModel):
    """Anthropic's error shape, which every error on ``/v1/messages`` has."""

    type: Literal["error"] = "error"
    error: ErrorDetail


# The streamed events, as `event:` name → the model of its `data:` (its `type` repeats the name).


class StartedMessage(BaseModel):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    content: list[TextBlock] = Field(max_length=0)
    model: str
    stop_reason: None
    stop_sequence: None
    usage: MessageUsage


class MessageStartEvent(BaseModel):
    """First: the message, with no content yet and no stop reason."""

    type: Literal["message_start"]
    message: StartedMessage


class ContentBlockStartEvent(BaseModel):
    type: Literal["content_block_start"]
    index: int
    content_block: TextBlock


class TextDelta(BaseModel):
    type: Literal["text_delta"]
    text: str


class ContentBlockDeltaEvent(BaseModel):
    type: Literal["content_block_delta"]
    index: int
    delta: TextDelta


class ContentBlockStopEvent(BaseModel):
    type: Literal["content_block_stop"]
    index: int


class MessageDeltaBody(BaseModel):
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence"]
    stop_sequence: str | None


class MessageDeltaEvent(BaseModel):
    type: Literal["message_delta"]
    delta: MessageDeltaBody
    usage: MessageUsage


class MessageStopEvent(BaseModel):
    type: Literal["message_stop"]


class PingEvent(BaseModel):
    type: Literal["ping"]


ANTHROPIC_EVENTS: dict[str, tuple[type[BaseModel] | None, str]] = {
    "message_start": (MessageStartEvent, "First: the message without content."),
    "content_block_start": (ContentBlockStartEvent, "The one text block begins."),
    "content_block_delta": (ContentBlockDeltaEvent, "A text delta (`text_delta`)."),
    "content_block_stop": (ContentBlockStopEvent, "The text block ends."),
    "message_delta": (MessageDeltaEvent, "The stop reason and the usage."),
    "message_stop": (MessageStopEvent, "Last; the response closes after it."),
    "ping": (PingEvent, "A heartbeat while the stream is silent."),
    "error": (
        AnthropicError,
        "Instead of `message_delta` when generation fails or is cut short; last.",
    ),
}
