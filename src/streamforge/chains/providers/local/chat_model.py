"""``ChatLocalLlama``: the local model as a LangChain chat model."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import Field

from streamforge.chains.providers.base import ProviderError
from streamforge.chains.providers.local.types import (
    CANCELLATION_KWARG,
    Cancellation,
    GenerationResult,
    LocalEngine,
    Message,
)

_ROLES: dict[type[BaseMessage], str] = {
    SystemMessage: "system",
    HumanMessage: "user",
    AIMessage: "assistant",
}


def _to_engine(messages: Sequence[BaseMessage]) -> list[Message]:
    converted: list[Message] = []
    for message in messages:
        if isinstance(message, ChatMessage):
            role = message.role
        else:
            role = next((r for t, r in _ROLES.items() if isinstance(message, t)), "")
        if not role:
            raise ProviderError(
                f"the local model cannot take {message.type!r} messages",
                code="invalid_request",
                status=400,
            )
        converted.append({"role": role, "content": str(message.text)})
    return converted


class ChatLocalLlama(BaseChatModel):
    """A LangChain chat model answered by a local engine (in this process or the model process).

    Call options ``max_tokens``, ``temperature`` and ``stop`` override the fields; a
    ``cancellation`` (a ``Cancellation``) lets the caller stop decoding between two tokens
    even before LangChain gets round to closing this model's stream.
    """

    engine: LocalEngine = Field(exclude=True)
    model_name: str = "local"
    max_tokens: int = 256
    temperature: float = 0.2
    stop: list[str] | None = None

    @property
    def _llm_type(self) -> str:
        return "llama-cpp-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_path": self.engine.model_path,
            "n_ctx": self.engine.n_ctx,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stop": self.stop,
        }

    def _get_invocation_params(
        self, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        # The cancellation is a live object, not a parameter worth tracing.
        kwargs.pop(CANCELLATION_KWARG, None)
        return super()._get_invocation_params(stop=stop, **kwargs)

    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        max_tokens = kwargs.get("max_tokens")
        temperature = kwargs.get("temperature")
        cancellation = kwargs.get(CANCELLATION_KWARG)
        return {
            "max_tokens": self.max_tokens if max_tokens is None else int(max_tokens),
            "temperature": self.temperature if temperature is None else float(temperature),
            "stop": list(stop if stop is not None else self.stop or []),
            "cancellation": cancellation if isinstance(cancellation, Cancellation) else None,
        }

    def _chunk(self, piece: str | GenerationResult) -> ChatGenerationChunk:
        if isinstance(piece, str):
            return ChatGenerationChunk(message=AIMessageChunk(content=piece))
        usage = UsageMetadata(
            input_tokens=piece.prompt_tokens,
            output_tokens=piece.completion_tokens,
            total_tokens=piece.prompt_tokens + piece.completion_tokens,
        )
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage,
                chunk_position="last",
                response_metadata={"model_name": self.model_name},
            ),
            generation_info={"finish_reason": piece.finish_reason},
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        pieces = self.engine.generate(_to_engine(messages), **self._options(stop, kwargs))
        async with contextlib.aclosing(pieces):
            async for piece in pieces:
                yield self._chunk(piece)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        pieces = self.engine.generate_sync(_to_engine(messages), **self._options(stop, kwargs))
        with contextlib.closing(pieces):
            for piece in pieces:
                yield self._chunk(piece)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
