"""Any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, LiteLLM) as a provider.

Relaying such an upstream is the gateway's hot path, and the ``openai`` SDK and ``ChatOpenAI``
spend several times more per chunk than the relay itself. This provider reads the upstream's
SSE with one pooled httpx client and a byte-level line parser, and hands each delta over as
soon as its line is complete. ``ChatOpenAICompatible`` wraps the same path as a LangChain chat
model, so chains can use it too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from streamforge.chains.providers.base import (
    BaseProvider,
    ChatTurn,
    Chunk,
    GenerationRequest,
    ProviderError,
    Usage,
)
from streamforge.chains.providers.errors import classify
from streamforge.config.settings import HostedSettings
from streamforge.errors import ConfigurationError

_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def _error_message(body: bytes) -> str:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace")
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or parsed)[:300]


def _parse_line(line: bytes) -> Chunk | None:
    """One SSE line of an OpenAI chat-completions stream; None for everything but data."""
    if not line.startswith(b"data:"):
        return None
    payload = line[5:].strip()
    if not payload or payload == b"[DONE]":
        return None
    data = orjson.loads(payload)
    error = data.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise ProviderError(f"upstream error: {message}", code="provider_error", retryable=False)
    usage = data.get("usage")
    text = ""
    choices = data.get("choices")
    if choices:
        delta = choices[0].get("delta") or {}
        text = delta.get("content") or ""
    if usage:
        return Chunk(
            text=text,
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            ),
        )
    return Chunk(text=text) if text else None


class OpenAICompatibleProvider(BaseProvider):
    name = "openai_compatible"

    def __init__(self, settings: HostedSettings, client: httpx.AsyncClient | None = None) -> None:
        if not settings.base_url:
            raise ConfigurationError(
                "the openai_compatible provider needs STREAMFORGE_LLM__OPENAI_COMPATIBLE__BASE_URL"
            )
        self.settings = settings
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self.context_window = settings.context_window
        self.default_max_tokens = settings.max_tokens
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        self._headers = headers
        self._client = client
        self._own_client = client is None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.timeout, connect=10.0),
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            )
        return self._client

    def payload(self, request: GenerationRequest) -> bytes:
        body: dict[str, Any] = {
            "model": request.model or self.settings.model,
            "messages": [{"role": t.role, "content": t.content} for t in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": request.max_tokens or self.settings.max_tokens,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop"] = request.stop
        return orjson.dumps(body)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        try:
            async with self.client.stream(
                "POST", self.url, content=self.payload(request), headers=self._headers
            ) as response:
                if response.status_code >= 400:
                    body = await response.aread()
                    status = response.status_code
                    raise ProviderError(
                        f"{self.name} answered {status}: {_error_message(body)}",
                        code="provider_rate_limited" if status == 429 else "provider_http_error",
                        retryable=status in (408, 409, 425, 429) or status >= 500,
                        status=status,
                    )
                async for chunk in _chunks(response.aiter_bytes()):
                    yield chunk
        except ProviderError:
            raise
        except GeneratorExit:
            raise
        except Exception as exc:
            raise classify(exc, self.name) from exc

    def models(self) -> list[str]:
        return [self.settings.model]

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "base_url": self.settings.base_url, "model": self.settings.model}

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()


async def _chunks(data: AsyncIterator[bytes]) -> AsyncGenerator[Chunk, None]:
    pending = b""
    async for piece in data:
        pending += piece
        if b"\n" not in piece:
            continue
        lines = pending.split(b"\n")
        pending = lines.pop()
        for line in lines:
            chunk = _parse_line(line)
            if chunk is not None:
                yield chunk
    if pending:
        chunk = _parse_line(pending)
        if chunk is not None:
            yield chunk


class ChatOpenAICompatible(BaseChatModel):
    """The lean OpenAI-compatible client as a LangChain chat model (``prompt | model``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    provider: OpenAICompatibleProvider
    max_tokens: int | None = None
    temperature: float | None = None

    @property
    def _llm_type(self) -> str:
        return "openai-compatible"

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any
    ) -> GenerationRequest:
        turns = [ChatTurn(_ROLES.get(m.type, "user"), str(m.content)) for m in messages]
        return GenerationRequest(
            messages=turns,
            model=kwargs.get("model"),
            temperature=kwargs.get("temperature", self.temperature),
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
            stop=list(stop or []),
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise NotImplementedError("ChatOpenAICompatible is async only: use ainvoke or astream")

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        raise NotImplementedError("ChatOpenAICompatible is async only: use ainvoke or astream")

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        parts: list[str] = []
        usage: Usage | None = None
        async for chunk in self.provider.stream(self._request(messages, stop, **kwargs)):
            parts.append(chunk.text)
            usage = chunk.usage or usage
        message = AIMessage(content="".join(parts))
        if usage is not None:
            message.usage_metadata = {
                "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            }
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in self.provider.stream(self._request(messages, stop, **kwargs)):
            message = AIMessageChunk(content=chunk.text)
            if chunk.usage is not None:
                message.usage_metadata = {
                    "input_tokens": chunk.usage.prompt_tokens,
                    "output_tokens": chunk.usage.completion_tokens,
                    "total_tokens": chunk.usage.total_tokens,
                }
            if run_manager is not None and chunk.text:
                await run_manager.on_llm_new_token(chunk.text)
            yield ChatGenerationChunk(message=message)
