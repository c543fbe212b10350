"""Any LangChain chat model as a StreamForge provider, driven through the LCEL chat chain."""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk

from streamforge.chains.chat import chat_chain, to_langchain
from streamforge.chains.providers.base import (
    BaseProvider,
    Chunk,
    GenerationRequest,
    Usage,
)
from streamforge.chains.providers.errors import classify

CallOptions = Callable[[GenerationRequest], dict[str, Any]]


def _text_of(chunk: AIMessageChunk) -> str:
    content = chunk.content
    if isinstance(content, str):
        return content
    # Anthropic streams content blocks: keep the text ones.
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") in ("text", "text_delta"):
            parts.append(str(block.get("text", "")))
    return "".join(parts)


class LangChainProvider(BaseProvider):
    def __init__(
        self,
        name: str,
        model: BaseChatModel,
        *,
        default_model: str,
        call_options: CallOptions,
        context_window: int,
        default_max_tokens: int,
    ) -> None:
        self.name = name
        self.model = model
        self.default_model = default_model
        self.call_options = call_options
        self.context_window = context_window
        self.default_max_tokens = default_max_tokens

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        chain = chat_chain(self.model, **self.call_options(request))
        inputs = {"messages": to_langchain(request.messages)}
        usage: Usage | None = None
        try:
            async for message in chain.astream(inputs):
                if not isinstance(message, AIMessageChunk):
                    continue
                if message.usage_metadata:
                    usage = Usage(
                        prompt_tokens=message.usage_metadata.get("input_tokens", 0),
                        completion_tokens=message.usage_metadata.get("output_tokens", 0),
                    )
                text = _text_of(message)
                if text:
                    yield Chunk(text=text)
        except GeneratorExit:
            raise
        except Exception as exc:
            raise classify(exc, self.name) from exc
        if usage is not None:
            yield Chunk(usage=usage)

    def models(self) -> list[str]:
        return [self.model_for(None)]

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.model_for(None)}

    async def aclose(self) -> None:
        # ChatOllama opens HTTP clients of its own and never closes them. ChatOpenAI and
        # ChatAnthropic share process-wide clients cached per base URL: closing those would
        # break the next model that reuses them, so they are left to the process.
        for attribute in ("_async_client", "_client"):
            client = getattr(self.model, attribute, None)
            if client is None or not type(client).__module__.startswith("ollama"):
                continue
            try:
                result = client.close()
                if inspect.isawaitable(result):
                    await result
            except Exception:  # closing is best effort at shutdown
                pass
