from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from streamforge.schemas.common import StorableText, Timestamp

Title = Annotated[StorableText, Field(min_length=1, max_length=200)]


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Title | None = None


class SessionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Title


class SessionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    title: str | None
    summary: str | None = None
    summary_until: str | None = None
    template_id: str | None = None
    created_at: Timestamp
    updated_at: Timestamp


class MessagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    session_id: str
    role: str
    content: str
    status: str
    provider: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: dict[str, object] | None = None
    citations: list[dict[str, object]] | None = None
    created_at: Timestamp
