from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from streamforge.schemas.common import StorableText, Timestamp
from streamforge.services.templates import NAME_MAX_LENGTH

# Names travel in URL paths: keep them to characters that need no escaping.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SYSTEM_PROMPT_MAX_LENGTH = 20_000

TemplateName = Annotated[
    StorableText, Field(min_length=1, max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN)
]
SystemPrompt = Annotated[
    StorableText,
    Field(
        min_length=1,
        max_length=SYSTEM_PROMPT_MAX_LENGTH,
        description="The system prompt, with `{variable}` placeholders; `{{` and `}}` are "
        "literal braces.",
    ),
]
Description = Annotated[StorableText, Field(max_length=1000)]


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: TemplateName
    system_prompt: SystemPrompt
    description: Description | None = None


class TemplateUpdate(BaseModel):
    """A new version replaces the whole template: an omitted description is no description."""

    model_config = ConfigDict(extra="forbid")
    system_prompt: SystemPrompt
    description: Description | None = None


class TemplatePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str | None = Field(description="None for the built-in `default` template.")
    name: str
    version: int
    description: str | None
    system_prompt: str
    variables: list[str]
    created_at: Timestamp | None = Field(description="None for the built-in `default` template.")
