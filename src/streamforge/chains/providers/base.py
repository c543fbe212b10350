"""The provider interface: an async iterator of chunks for a list of chat messages.

Every provider, the LangChain-backed ones included, is driven through this interface, so the
streaming core does not care where the tokens come from.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from streamforge.errors import ProviderBusy as ProviderBusy
from streamforge.errors import ProviderError as ProviderError


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
    """A piece of the answer; the last chunk of a stream may carry usage and no text, and,
    when the answer ended on one of the request's stop sequences, which one."""

    text: str = ""
    usage: Usage | None = None
    stop_sequence: str | None = None


@runtime_checkable
class Provider(Protocol):
    name: str
    # Tokens the model can attend to: prompt and answer together.
    context_window: int
    # Answer length used when a request does not set max_tokens.
    default_max_tokens: int

    def model_for(self, requested: str | None) -> str:
        """The model a request that names ``requested`` (or none) is answered by."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]: ...

    async def health(self) -> dict[str, Any]: ...

    def count_tokens(self, text: str) -> int: ...

    def admit(self) -> contextlib.AbstractContextManager[None]:
        """Reserve a place for one generation, or raise ``ProviderBusy`` at once."""
        ...

    def models(self) -> list[str]: ...


class BaseProvider:
    """Defaults for the parts of ``Provider`` most providers share."""

    name = "base"
    context_window = 8192
    default_max_tokens = 512
    # The model used when a request names none; None: the provider's name stands for it.
    default_model: str | None = None

    def model_for(self, requested: str | None) -> str:
        return requested or self.default_model or self.name

    def count_tokens(self, text: str) -> int:
        return approximate_tokens(text)

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        yield

    def models(self) -> list[str]:
        return []

    async def health(self) -> dict[str, Any]:
        return {"status": "ok"}


def approximate_tokens(text: str) -> int:
    """Without a model's tokenizer: about four characters a token for English text, rounded
    up so budgets err on the safe side."""
    return (len(text) + 3) // 4
