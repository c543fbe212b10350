"""The request body of the AI SDK's chat transport (``POST /ai-sdk/chat``).

``DefaultChatTransport`` (what ``useChat`` uses) sends ``{id, messages, trigger, messageId}``
plus whatever the client puts in its ``body`` option: StreamForge's own turn options go there
(``provider``, ``model``, ``temperature``, ``max_tokens``, ``template``, ``variables``,
``rag``). The server keeps the conversation itself, so of ``messages`` only the last one is
read: the user's message this turn answers. Messages and parts keep the fields the AI SDK adds
(``metadata``, ``state``, ``providerMetadata``...); an unknown top-level field is a 422, so a
misspelt option is not silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamforge.schemas.common import StorableText
from streamforge.schemas.documents import RagField


class UIMessagePart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Annotated[StorableText, Field(max_length=100)]
    text: StorableText | None = None


class UIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: Annotated[StorableText, Field(max_length=200)] = ""
    role: Literal["system", "user", "assistant"]
    parts: Annotated[list[UIMessagePart], Field(max_length=1000)]

    @property
    def text(self) -> str:
        return "".join(part.text or "" for part in self.parts if part.type == "text")


class AiSdkChatRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "Jw3tQ0lXbZ8kP2aR",
                    "messages": [
                        {
                            "id": "m1",
                            "role": "user",
                            "parts": [{"type": "text", "text": "Hello"}],
                        }
                    ],
                    "trigger": "submit-message",
                }
            ]
        },
    )

    id: Annotated[StorableText, Field(min_length=1, max_length=200)] = Field(
        description="The client's chat id: StreamForge keeps one session per chat id and caller."
    )
    messages: Annotated[list[UIMessage], Field(min_length=1, max_length=10_000)] = Field(
        description="The chat's messages; the last one must be the user's message to answer."
    )
    trigger: Literal["submit-message", "regenerate-message"] = Field(
        default="submit-message",
        description="`regenerate-message` replaces the session's last reply with a new one.",
    )
    messageId: Annotated[StorableText, Field(max_length=200)] | None = None
    provider: Annotated[StorableText, Field(min_length=1, max_length=64)] | None = None
    model: Annotated[StorableText, Field(min_length=1, max_length=200)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    template: Annotated[StorableText, Field(min_length=1, max_length=100)] | None = None
    variables: (
        dict[
            Annotated[StorableText, Field(min_length=1, max_length=100)],
            Annotated[StorableText, Field(max_length=20_000)],
        ]
        | None
    ) = None
    rag: RagField = Field(
        default=None,
        description="Answer from your documents, as in `POST /chat`; the passages arrive as "
        "`source-document` parts before the text.",
    )

    @field_validator("messages")
    @classmethod
    def _ends_with_user_text(cls, messages: list[UIMessage]) -> list[UIMessage]:
        last = messages[-1]
        if last.role != "user":
            raise ValueError("the last message must be the user's message to answer")
        if not last.text.strip():
            raise ValueError("the last message must have text")
        return messages

    @property
    def message(self) -> str:
        return self.messages[-1].text
