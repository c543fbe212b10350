"""The provider interface: an async iterator of chunks for a list of chat messages.

Every provider, the LangChain-backed ones included, is driven through this interface, so the
streaming core does not care where the tokens come from.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    messages: list[ChatTurn]
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of the answer; the last chunk of a stream may carry usage and no text."""

    text: str = ""
    usage: Usage | None = None


class ProviderError(Exception):
    """A provider failed. ``retryable`` tells the client whether trying again may help."""

    def __init__(self, message: str, *, code: str = "provider_error", retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable


@runtime_checkable
class Provider(Protocol):
    name: str

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]: ...

    async def health(self) -> dict[str, Any]: ...
