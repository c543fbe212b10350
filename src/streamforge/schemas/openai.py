"""Request and response bodies of the OpenAI-compatible API (``/v1``).

Fields an OpenAI client commonly sends but StreamForge cannot honour fall in two groups.
Sampling hints (``top_p``, penalties, ``seed``, ``logit_bias``, ``user``...) are accepted and
ignored, as many OpenAI-compatible servers do: the answer is still a valid answer. Fields whose
absence would change what the client gets back — more than one choice, tools, JSON mode,
log-probabilities, audio, image input — are refused with a 4xx rather than silently dropped
(``routers/openai_api.py`` says which).
Unknown fields are ignored, so a newer client keeps working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamforge.schemas.common import StorableText
from streamforge.schemas.documents import RagField

StopText = Annotated[StorableText, Field(min_length=1, max_length=100)]


class ContentPart(BaseModel):
    """One part of a message's content; only ``text`` parts can be answered."""

    model_config = ConfigDict(extra="allow")

    type: Annotated[StorableText, Field(max_length=64)]
    text: StorableText | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: StorableText | list[ContentPart] | None = Field(
        default=None,
        description='A string, or a list of `{"type": "text", "text": ...}` parts.',
    )
    name: Annotated[StorableText, Field(max_length=256)] | None = None

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        # Only an assistant message that made tool calls may omit its content, and tool calls
        # are not supported; an empty string stays allowed, as OpenAI allows it.
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
        return self


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Annotated[StorableText, Field(max_length=64)]


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"model": "simulated", "messages": [{"role": "user", "content": "Hello"}]}]
        },
    )

    model: Annotated[StorableText, Field(min_length=1, max_length=200)] = Field(
        description="`provider` (its default model) or `provider/model`; see `GET /v1/models`."
    )
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=1000)]
    stream: bool = False
    rag: RagField = Field(
        default=None,
        description="StreamForge extension: ground the answer in your documents, as `rag` on "
        "POST /chat; the passages come back in `sources`.",
    )
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    stop: StopText | Annotated[list[StopText], Field(max_length=4)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] = 1
    user: Annotated[StorableText, Field(max_length=256)] | None = None

    # Accepted and ignored: hints about sampling the providers do not all support.
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    seed: int | None = None
    logit_bias: dict[StorableText, float] | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    metadata: dict[StorableText, StorableText] | None = None

    # Accepted only in the form that asks for nothing StreamForge lacks.
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StorableText | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    modalities: list[StorableText] | None = None

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def answer_limit(self) -> int | None:
        # max_tokens is the deprecated name; the newer field wins when both are sent.
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[Choice]
    usage: Usage
    # StreamForge's extension: the passages retrieved when the request asked for ``rag``.
    sources: list[dict[str, Any]] | None = None


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # StreamForge's own: the provider's model that answers a request naming this id
    # ("openai" → "gpt-4o-mini").
    model: str | None = Field(
        default=None, description="The provider's model that answers requests for this id."
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"model": "all-MiniLM-L6-v2", "input": "Hello"}]},
    )

    model: Annotated[StorableText, Field(min_length=1, max_length=200)] = Field(
        description="The embedding model's name (see `GET /v1/models`), or `default`."
    )
    input: (
        Annotated[StorableText, Field(min_length=1)]
        | Annotated[list[Annotated[StorableText, Field(min_length=1)]], Field(min_length=1)]
        | Annotated[list[int], Field(min_length=1)]
        | Annotated[list[list[int]], Field(min_length=1)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1, le=65_536)] | None = None
    user: Annotated[StorableText, Field(max_length=256)] | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
