from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamforge.schemas.common import StorableText
from streamforge.schemas.documents import RagField


class ChatRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"message": "Hello"}]},
    )

    message: StorableText = Field(description="The user's message.")
    session_id: StorableText | None = Field(
        default=None, description="Continue this session; omitted: a new session is created."
    )
    provider: Annotated[StorableText, Field(min_length=1, max_length=64)] | None = None
    model: Annotated[StorableText, Field(min_length=1, max_length=200)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    stop: (
        Annotated[
            list[Annotated[StorableText, Field(min_length=1, max_length=100)]], Field(max_length=4)
        ]
        | None
    ) = None
    template: Annotated[StorableText, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="Name of a prompt template; the session keeps its version."
    )
    variables: (
        dict[
            Annotated[StorableText, Field(min_length=1, max_length=100)],
            Annotated[StorableText, Field(max_length=20_000)],
        ]
        | None
    ) = Field(default=None, description="Values for the template's variables.")
    idempotency_key: Annotated[StorableText, Field(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="A retry with the same key attaches to the stream of the first attempt "
        "(replayed from its first event) instead of starting a second generation.",
    )
    rag: RagField = Field(
        default=None,
        description="Answer from your documents: {collections, top_k}, a list of collection "
        "names, true for all collections, or false.",
    )

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be empty")
        return value
