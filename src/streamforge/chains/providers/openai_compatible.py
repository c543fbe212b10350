"""Any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, LiteLLM) as a provider.

Relaying such an upstream is the gateway's hot path, and the ``openai`` SDK and ``ChatOpenAI``
spend several times more per chunk than the relay itself; so does httpx, whose layers run once
for every HTTP chunk, and an upstream sends one chunk per token. This provider therefore reads
the upstream through the lean keep-alive pool of ``upstream`` (each wake-up hands over
everything received so far) and turns ``data:`` lines into deltas with orjson, at the byte
level. Where that client would not behave like httpx (an HTTP proxy from the environment,
credentials in the URL) or when an httpx client is passed in, httpx is used instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from streamforge.chains.providers.base import (
    BaseProvider,
    Chunk,
    GenerationRequest,
    ProviderError,
    Usage,
)
from streamforge.chains.providers.errors import classify
from streamforge.chains.providers.upstream import (
    CONNECT_TIMEOUT,
    UpstreamConnection,
    UpstreamPool,
    env_proxy,
)
from streamforge.config.settings import HostedSettings
from streamforge.errors import ConfigurationError


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
        # None until the server has said which models it serves (GET /models).
        self.default_model = settings.model
        self.context_window = settings.context_window
        self.default_max_tokens = settings.max_tokens
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        self._headers = headers
        self._client = client
        self._own_client = client is None
        parts = urlsplit(self.url)
        lean = (
            client is None
            and parts.scheme.lower() in ("http", "https")
            and bool(parts.hostname)
            and parts.username is None
            and parts.password is None
            and not env_proxy(self.url)
        )
        self._pool = (
            UpstreamPool(self.url, headers=headers, read_timeout=settings.timeout) if lean else None
        )

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.timeout, connect=CONNECT_TIMEOUT),
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            )
        return self._client

    async def start(self) -> None:
        if self.default_model is None:
            # Not reachable yet is no reason to refuse to start: the first request asks again.
            with contextlib.suppress(ProviderError):
                await self.discover_model()

    async def discover_model(self) -> str:
        """The server's own model, when the settings name none: the first it lists."""
        url = self.settings.base_url.rstrip("/") + "/models" if self.settings.base_url else ""
        headers = {"Authorization": self._headers["Authorization"]} if self.settings.api_key else {}
        try:
            response = await self.client.get(url, headers=headers, timeout=CONNECT_TIMEOUT)
            response.raise_for_status()
            listed = [str(item["id"]) for item in response.json()["data"]]
        except Exception as exc:
            raise ProviderError(
                f"{self.name}: cannot learn the server's model from GET {url} "
                f"({type(exc).__name__}); set STREAMFORGE_LLM__OPENAI_COMPATIBLE__MODEL",
                code="provider_unavailable",
                retryable=True,
            ) from exc
        if not listed:
            raise ProviderError(
                f"{self.name}: the server at {url} lists no models; set "
                "STREAMFORGE_LLM__OPENAI_COMPATIBLE__MODEL",
                code="provider_unavailable",
            )
        self.default_model = listed[0]
        return listed[0]

    def payload(self, request: GenerationRequest) -> bytes:
        body: dict[str, Any] = {
            "model": self.model_for(request.model),
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

    def _http_error(self, status: int, body: bytes) -> ProviderError:
        return ProviderError(
            f"{self.name} answered {status}: {_error_message(body)}",
            code="provider_rate_limited" if status == 429 else "provider_http_error",
            retryable=status in (408, 409, 425, 429) or status >= 500,
            status=status,
        )

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        if self._pool is None:
            return self._stream_httpx(request)
        return self._stream_lean(self._pool, request)

    async def _stream_lean(
        self, pool: UpstreamPool, request: GenerationRequest
    ) -> AsyncGenerator[Chunk, None]:
        connection: UpstreamConnection | None = None
        if request.model is None and self.default_model is None:
            await self.discover_model()
        try:
            connection = await pool.post(self.payload(request))
            if connection.status >= 400:
                raise self._http_error(connection.status, await connection.read_all())
            first = True
            pending = b""
            while data := await connection.read():
                if b"\n" not in data:
                    pending += data
                    continue
                lines = (pending + data if pending else data).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if not line:  # the blank line after each event
                        continue
                    chunk = _parse_line(line)
                    if chunk is None:
                        continue
                    yield chunk
                    if first:
                        first = False
                        # Let the response writer send the first delta before the rest of
                        # what has arrived is parsed: time to first token is what users see.
                        await asyncio.sleep(0)
            if pending:
                chunk = _parse_line(pending)
                if chunk is not None:
                    yield chunk
        except ProviderError:
            raise
        except GeneratorExit:
            raise
        except Exception as exc:
            raise classify(exc, self.name) from exc
        finally:
            if connection is not None:
                pool.release(connection)

    async def _stream_httpx(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        if request.model is None and self.default_model is None:
            await self.discover_model()
        try:
            async with self.client.stream(
                "POST", self.url, content=self.payload(request), headers=self._headers
            ) as response:
                if response.status_code >= 400:
                    raise self._http_error(response.status_code, await response.aread())
                async for chunk in _chunks(response.aiter_bytes()):
                    yield chunk
        except ProviderError:
            raise
        except GeneratorExit:
            raise
        except Exception as exc:
            raise classify(exc, self.name) from exc

    def models(self) -> list[str]:
        return [self.model_for(None)]

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "base_url": self.settings.base_url, "model": self.model_for(None)}

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.clear()
            await asyncio.sleep(0)  # let the transports finish closing
        if self._client is not None and self._own_client:
            await self._client.aclose()


async def _chunks(data: AsyncIterator[bytes]) -> AsyncGenerator[Chunk, None]:
    pending = b""
    async for piece in data:
        if b"\n" not in piece:
            pending += piece
            continue
        lines = (pending + piece if pending else piece).split(b"\n")
        pending = lines.pop()
        for line in lines:
            chunk = _parse_line(line)
            if chunk is not None:
                yield chunk
    if pending:
        chunk = _parse_line(pending)
        if chunk is not None:
            yield chunk
