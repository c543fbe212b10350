"""``LocalProvider``: the StreamForge provider that drives ``ChatLocalLlama`` (``astream``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from pathlib import PurePath
from typing import Any, cast

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)

from streamforge.chains.providers.base import (
    BaseProvider,
    ChatTurn,
    Chunk,
    GenerationRequest,
    ProviderError,
    Usage,
)
from streamforge.chains.providers.local.chat_model import ChatLocalLlama
from streamforge.chains.providers.local.types import (
    CANCELLATION_KWARG,
    Cancellation,
    LocalEngine,
    model_error,
)

_MESSAGE_TYPES: dict[str, Callable[[str], BaseMessage]] = {
    "system": lambda text: SystemMessage(content=text),
    "user": lambda text: HumanMessage(content=text),
    "assistant": lambda text: AIMessage(content=text),
}


def to_langchain(turns: Sequence[ChatTurn]) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    for turn in turns:
        build = _MESSAGE_TYPES.get(turn.role)
        if build is None:
            raise ProviderError(
                f"unknown message role {turn.role!r}", code="invalid_request", status=400
            )
        messages.append(build(turn.content))
    return messages


class LocalProvider(BaseProvider):
    name = "local"

    def __init__(
        self,
        engine: LocalEngine,
        *,
        default_max_tokens: int = 256,
        eager: bool = True,
    ) -> None:
        self.engine = engine
        self.context_window = engine.n_ctx
        self.default_max_tokens = default_max_tokens
        # False: the model loads on first use instead of at startup.
        self.eager = eager
        self.model = ChatLocalLlama(engine=engine, max_tokens=default_max_tokens)
        # The GGUF file's name (without .gguf) names the model.
        path = getattr(engine, "model_path", None)
        self.default_model = PurePath(path).stem if path else "local"

    async def start(self) -> None:
        if self.eager:
            await self.engine.start()

    async def aclose(self) -> None:
        await self.engine.aclose()

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        cancellation = Cancellation()
        options: dict[str, Any] = {
            "max_tokens": request.max_tokens or self.default_max_tokens,
            CANCELLATION_KWARG: cancellation,
        }
        if request.temperature is not None:
            options["temperature"] = request.temperature
        usage: Usage | None = None
        try:
            messages = to_langchain(request.messages)
            answer = cast(
                "AsyncGenerator[AIMessageChunk, None]",
                self.model.astream(messages, stop=request.stop or None, **options),
            )
            async with contextlib.aclosing(answer):
                try:
                    async for message in answer:
                        if message.usage_metadata:
                            usage = Usage(
                                prompt_tokens=message.usage_metadata["input_tokens"],
                                completion_tokens=message.usage_metadata["output_tokens"],
                            )
                        if isinstance(message.content, str) and message.content:
                            yield Chunk(text=message.content)
                finally:
                    # First thing on a disconnect: LangChain only closes the model's own
                    # stream later, through the garbage collector.
                    cancellation.cancel()
        except ProviderError:
            raise
        except Exception as exc:
            raise model_error(exc) from exc
        if usage is not None:
            yield Chunk(usage=usage)

    async def health(self) -> dict[str, Any]:
        return self.engine.health_report()

    def count_tokens(self, text: str) -> int:
        if not self.engine.loaded:
            # Not loaded yet (lazy): the estimate, rather than loading on the event loop.
            return super().count_tokens(text)
        return self.engine.count_tokens(text)

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        with self.engine.admit():
            yield

    def models(self) -> list[str]:
        return ["local"]

    def model_for(self, requested: str | None) -> str:
        # One model file at a time: a request cannot choose another.
        return self.default_model or "local"
