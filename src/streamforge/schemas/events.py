"""What each event of a stream carries, for the OpenAPI document.

The encoders write these events from plain dicts (the hot path builds no models); these models
describe the same JSON so that clients can generate types from ``/openapi.json``. The tests
compare them with real streams.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Event(BaseModel):
    # Fields may be added; a client ignores what it does not know.
    model_config = ConfigDict(extra="allow")


class TemplateRef(BaseModel):
    name: str
    version: int


class SessionEvent(_Event):
    """`event: session`, always the first event: where the turn is stored."""

    session_id: str
    stream_id: str
    user_message_id: str
    assistant_message_id: str
    provider: str
    model: str | None = None
    template: TemplateRef | None = None
    replayed: bool | None = Field(
        default=None, description="true when a retry is answered from the stored reply"
    )


class Citation(_Event):
    """A passage given to the model, numbered as the prompt's `[n]` markers."""

    index: int
    document_id: str
    document_name: str
    collection_id: str
    chunk_id: int
    score: float
    start: int = Field(description="first character of the passage in the document's text")
    end: int = Field(description="character after its last, in the document's text")
    page: int | None = Field(
        default=None,
        description="page of the document where the passage begins (from 1); null for "
        "formats without pages",
    )
    snippet: str


class SourcesEvent(_Event):
    """`event: sources` (with `rag`), right after `session`, before any text."""

    sources: list[Citation]


class UsageEvent(_Event):
    """`event: usage`, before `done`: tokens of this turn, cancelled ones too."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ErrorEvent(_Event):
    """`event: error`, before `usage` and `done`, when generation failed or was cut short."""

    code: str = Field(examples=["provider_error", "model_process_stopped", "shutdown"])
    message: str
    retryable: bool = Field(description="whether the same request may succeed later")


class Timings(BaseModel):
    total_ms: float
    ttft_ms: float | None = Field(description="time to the first text, null without any")


class DoneEvent(_Event):
    """`event: done`, always the last event: how the reply ended."""

    finish_reason: str = Field(examples=["stop", "length", "cancelled", "interrupted", "error"])
    status: Literal["completed", "cancelled", "interrupted", "failed"]
    provider: str | None = None
    message_id: str | None = None
    reason: str | None = Field(
        default=None, examples=["shutdown", "session_deleted", "worker_lost"]
    )
    stop_sequence: str | None = Field(
        default=None,
        description="The stop sequence the answer ended on, when the provider says which",
    )
    usage: UsageEvent | None = None
    timings: Timings | None = None
    replayed: bool | None = None


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class ChatCompletionChunk(BaseModel):
    """One `data:` line of a streamed `/v1/chat/completions` answer."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[ChunkChoice]
    usage: dict[str, int] | None = None
    sources: list[Citation] | None = Field(
        default=None, description="StreamForge's extension, with `rag`: before the text"
    )


class StreamErrorBody(BaseModel):
    code: str
    message: str
    retryable: bool | None = None


class ChatCompletionStreamError(BaseModel):
    """The last `data:` line of a streamed answer that failed, was cancelled or interrupted
    (the openai SDK raises `APIError` on it)."""

    error: StreamErrorBody


PLAIN_EVENTS: dict[str, tuple[type[BaseModel] | None, str]] = {
    "message": (
        None,
        "A text delta: no `event:` field; its `data:` lines are the text verbatim (a delta with "
        "line breaks is split over several `data:` lines, joined back with `\\n`).",
    ),
    "session": (SessionEvent, "First, always."),
    "sources": (SourcesEvent, "With `rag`, after `session` and before any text."),
    "error": (ErrorEvent, "When generation fails or is cut short; `usage` and `done` follow."),
    "usage": (UsageEvent, "Before `done`."),
    "done": (DoneEvent, "Last, always; the response closes after it."),
}

OPENAI_EVENTS: dict[str, tuple[type[BaseModel] | None, str]] = {
    "chunk": (
        ChatCompletionChunk,
        "`data: {chunk}`: the role first, then a chunk per delta, a chunk with "
        "`finish_reason`, and with `stream_options.include_usage` a usage chunk without "
        "choices.",
    ),
    "error": (ChatCompletionStreamError, '`data: {"error": ...}` ends a failed stream.'),
    "done": (None, "`data: [DONE]`, last."),
}


def event_models() -> list[type[BaseModel]]:
    """Every model an event is described with (for the OpenAPI components)."""
    found: list[type[BaseModel]] = []
    for table in (PLAIN_EVENTS, OPENAI_EVENTS):
        found += [model for model, _ in table.values() if model is not None]
    return found
