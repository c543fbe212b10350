from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from streamforge.models import Role
from streamforge.schemas.common import StorableText, Timestamp

Name = Annotated[StorableText, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    role: Role = Role.USER


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    role: Role
    created_at: Timestamp


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: Annotated[StorableText, Field(min_length=1, max_length=100)] = Field(
        description="The user's name or id."
    )
    name: Annotated[StorableText, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="What the key is for."
    )


class KeyPublic(BaseModel):
    """A key as stored: never the key itself."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    user_id: str
    user: str
    name: str | None
    prefix: str
    created_at: Timestamp
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None


class KeyCreated(KeyPublic):
    key: str = Field(description="The key. It is shown this once and cannot be shown again.")
