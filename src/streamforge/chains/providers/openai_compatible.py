"""Any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, LiteLLM) as a provider.

Relaying such an upstream is the gateway's hot path, and the ``openai`` SDK and ``ChatOpenAI``
spend several times more per chunk than the relay itself; so does httpx, whose layers run once
for every HTTP chunk, and an upstream sends one chunk per token. This provider therefore talks
HTTP/1.1 itself: a small pool of keep-alive connections whose protocol decodes the chunked body
as it arrives, so each wake-up hands over everything received so far, and a byte-level line
parser that turns ``data:`` lines into deltas with orjson. Where that client would not behave
like httpx (an HTTP proxy from the environment, credentials in the URL) or when an httpx client
is passed in, httpx is used instead. ``ChatOpenAICompatible`` wraps the same path as a LangChain
chat model, so chains can use it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import urllib.request
import zlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, cast
from urllib.parse import urlsplit

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
CONNECT_TIMEOUT = 10.0


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


# --- a lean HTTP/1.1 client --------------------------------------------------------------------


class UpstreamError(ConnectionError):
    """The upstream connection failed, timed out, or broke HTTP/1.1.

    A ``ConnectionError``, so ``classify`` reports it as ``provider_unavailable`` (retryable),
    as it does httpx's transport errors."""


class UpstreamDisconnected(UpstreamError):
    """The upstream closed the connection before the response was complete."""


_HEAD_LIMIT = 64 * 1024
_HIGH_WATER = 256 * 1024
_LENGTH, _CHUNKED, _UNTIL_CLOSE = 0, 1, 2
# A chunked body's parser state, in ``_left``: > 0 bytes of chunk data to come, or one of:
_SIZE_LINE, _DATA_END, _TRAILERS = 0, -1, -2


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: sends a request, decodes the response as it arrives.

    ``data_received`` parses the head and undoes the chunked transfer coding in place; the
    consumer takes all the body bytes received so far in one ``read``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self.loop = loop
        self.read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._new_response()

    def _new_response(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        self.head_done = False
        self.complete = False
        self.received = False  # a byte of this response has arrived
        self._rest = b""
        self._body: list[bytes] = []
        self._body_size = 0
        self._mode = _LENGTH
        self._left = 0
        self._error: BaseException | None = None
        self._paused = False
        self._decoder: Any = None

    # -- the protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self.transport = cast("asyncio.Transport", transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self.complete:  # more than the response: never reuse this connection
            self.keep_alive = False
            return
        buffer = self._rest + data if self._rest else data
        self._rest = b""
        try:
            if not self.head_done:
                rest = self._parse_head(buffer)
                if rest is None:
                    return
                buffer = rest
            if self._mode == _CHUNKED:
                self._parse_chunked(buffer)
            elif self._mode == _LENGTH:
                if buffer:
                    take = buffer[: self._left]
                    if take:
                        self._add(take)
                        self._left -= len(take)
                    if len(buffer) > len(take):
                        self.keep_alive = False
                if self._left == 0:
                    self.complete = True
            elif buffer:
                self._add(buffer)
        except (ValueError, UpstreamError) as exc:
            self._fail(UpstreamError(f"invalid HTTP response from the upstream: {exc}"))
            self.close()
            return
        if self._body_size > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        if self.head_done and self._mode == _UNTIL_CLOSE:
            self.complete = True
            self._wake()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            if self.received:
                message = "peer closed connection without sending complete message body"
            else:
                message = "server disconnected without sending a response"
            error = UpstreamDisconnected(message)
            error.__cause__ = exc
            self._fail(error)
        self._wake()

    # -- parsing ---------------------------------------------------------------------------

    def _parse_head(self, buffer: bytes) -> bytes | None:
        """The status line and headers; the bytes after them, or None until they are whole."""
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _HEAD_LIMIT:
                    raise UpstreamError("response head too large")
                self._rest = buffer
                return None
            lines = buffer[:end].split(b"\r\n")
            buffer = buffer[end + 4 :]
            version, _, rest = lines[0].partition(b" ")
            if not version.startswith(b"HTTP/1."):
                raise UpstreamError(f"not an HTTP/1 status line: {lines[0][:80]!r}")
            status = int(rest[:3])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, colon, value = line.partition(b":")
                if not colon:
                    raise UpstreamError(f"malformed header line {line[:80]!r}")
                key = name.strip().lower().decode("latin-1")
                text = value.strip().decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            if 100 <= status < 200:
                continue  # an interim response (100 Continue, 103 Early Hints)
            break
        self.status = status
        self.headers = headers
        self.head_done = True
        tokens = {t.strip() for t in headers.get("connection", "").lower().split(",")}
        self.keep_alive = version == b"HTTP/1.1" and "close" not in tokens
        coding = headers.get("content-encoding", "").strip().lower()
        if coding in ("gzip", "x-gzip", "deflate"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib
        elif coding not in ("", "identity"):
            raise UpstreamError(f"unsupported content-encoding {coding!r}")
        if status in (204, 304):
            self._mode, self._left = _LENGTH, 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._mode, self._left = _CHUNKED, _SIZE_LINE
        elif "content-length" in headers:
            self._mode, self._left = _LENGTH, int(headers["content-length"])
            if self._left < 0:
                raise UpstreamError("negative content-length")
        else:
            self._mode = _UNTIL_CLOSE
            self.keep_alive = False
        if self._mode == _LENGTH and self._left == 0:
            self.complete = True
        return buffer

    def _parse_chunked(self, buffer: bytes) -> None:
        pos, size, left = 0, len(buffer), self._left
        body = self._body
        added = 0
        while pos < size:
            if left > 0:
                end = pos + left
                if end > size:
                    body.append(buffer[pos:])
                    added += size - pos
                    left -= size - pos
                    pos = size
                    break
                body.append(buffer[pos:end])
                added += left
                pos, left = end, _DATA_END
            if left == _DATA_END:
                if size - pos < 2:
                    break
                if buffer[pos : pos + 2] != b"\r\n":
                    raise UpstreamError("chunk data not followed by CRLF")
                pos, left = pos + 2, _SIZE_LINE
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                if size - pos > 4096:
                    raise UpstreamError("chunk size line too long")
                break
            line = buffer[pos:end]
            pos = end + 2
            if left == _TRAILERS:
                if not line:  # the blank line that ends the body
                    self.complete = True
                    if pos < size:  # more than the response: never reuse the connection
                        self.keep_alive = False
                    pos = size
                    break
                continue
            try:
                chunk_size = int(line, 16)
            except ValueError:  # chunk extensions: "1a;name=value"
                chunk_size = int(line.split(b";", 1)[0].strip(), 16)
            if chunk_size < 0:
                raise UpstreamError("negative chunk size")
            left = chunk_size if chunk_size else _TRAILERS
        self._left = left
        self._body_size += added
        if pos < size:
            self._rest = buffer[pos:]

    def _add(self, data: bytes) -> None:
        self._body.append(data)
        self._body_size += len(data)

    # -- the consumer ----------------------------------------------------------------------

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(
                UpstreamError(f"read timed out: no data for {self.read_timeout:g} s")
            )

    async def _wait(self) -> None:
        waiter = self.loop.create_future()
        self._waiter = waiter
        timer = self.loop.call_later(self.read_timeout, self._timed_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def send(self, data: bytes) -> None:
        self._new_response()
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            self._fail(UpstreamDisconnected("the connection was closed before the request"))
            return
        transport.write(data)

    async def read_head(self) -> None:
        while not self.head_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read(self) -> bytes:
        """The body bytes received since the last read; b"" once the body is complete."""
        while not self._body:
            if self.complete:
                return self._decoder.flush() if self._decoder is not None else b""
            if self._error is not None:
                raise self._error
            await self._wait()
        body = self._body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self._body_size = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                raise UpstreamError(f"could not decode the response body: {exc}") from exc
        return data

    async def read_all(self) -> bytes:
        parts: list[bytes] = []
        while data := await self.read():
            parts.append(data)
        return b"".join(parts)

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and self.keep_alive
            and not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            with contextlib.suppress(RuntimeError):  # its event loop may be closed
                self.transport.close()


class _UpstreamPool:
    """Keep-alive connections to one upstream, most recently used first.

    As with httpx's limits: at most ``max_connections`` requests in flight (a request waits up
    to ``pool_timeout`` for a place), at most ``max_idle`` idle connections, each kept for
    ``keepalive_expiry`` seconds."""

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str],
        read_timeout: float,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_connections: int = 1000,
        max_idle: int = 200,
        keepalive_expiry: float = 5.0,
    ) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme.lower() == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        host = f"[{self.host}]" if ":" in self.host else self.host
        if parts.port is not None and parts.port != (443 if self.tls else 80):
            host += f":{parts.port}"
        lines = [f"POST {target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        # Asked for plainly, so no upstream compresses the stream (gzip is decoded if it does).
        lines += ["Accept-Encoding: identity", "User-Agent: streamforge"]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.pool_timeout = read_timeout
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self._idle: list[_Connection] = []
        self._ssl: ssl.SSLContext | None = None
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        if self.tls and self._ssl is None:
            # The same verification as httpx: certifi, or SSL_CERT_FILE / SSL_CERT_DIR.
            self._ssl = httpx.create_ssl_context()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(loop, self.read_timeout),
                    self.host,
                    self.port,
                    ssl=self._ssl if self.tls else None,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            raise UpstreamError(
                f"connect timed out after {self.connect_timeout:g} s ({self.host}:{self.port})"
            ) from None
        return protocol

    def _idle_connection(self, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        now = loop.time()
        while self._idle:
            connection = self._idle.pop()
            if (
                connection.loop is loop
                and connection.reusable  # and nothing unasked for arrived while it was idle
                and now - connection.idle_since < self.keepalive_expiry
            ):
                return connection
            connection.close()
        return None

    async def _acquire(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._active >= self.max_connections:
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(self.pool_timeout):
                    await waiter
            except TimeoutError:
                raise UpstreamError(
                    f"no free connection to the upstream within {self.pool_timeout:g} s "
                    f"({self.max_connections} in use)"
                ) from None
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        self._active += 1

    def _release(self) -> None:
        self._active -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def post(self, body: bytes) -> _Connection:
        """Send the request; the connection once the response's head has arrived. Every
        connection it returns must be given back with ``release``."""
        loop = asyncio.get_running_loop()
        request = b"%b%d\r\n\r\n%b" % (self._head, len(body), body)
        await self._acquire(loop)
        try:
            return await self._post(loop, request)
        except BaseException:
            self._release()
            raise

    async def _post(self, loop: asyncio.AbstractEventLoop, request: bytes) -> _Connection:
        while True:
            connection = self._idle_connection(loop)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(loop)
            connection.send(request)
            try:
                await connection.read_head()
            except UpstreamDisconnected:
                connection.close()
                if reused and not connection.received:
                    # The upstream had closed this idle connection: so it may have closed its
                    # others too. Start afresh on a new one.
                    self.clear()
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            return connection

    def release(self, connection: _Connection) -> None:
        """Keep a connection whose response was read to the end; close any other."""
        self._release()
        if connection.reusable and len(self._idle) < self.max_idle:
            connection.idle_since = connection.loop.time()
            self._idle.append(connection)
        else:
            connection.close()

    def clear(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _env_proxy(url: str) -> bool:
    """Whether httpx would send a request for ``url`` through a proxy from the environment."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme.lower()) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


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
            and not _env_proxy(self.url)
        )
        self._pool = (
            _UpstreamPool(self.url, headers=headers, read_timeout=settings.timeout)
            if lean
            else None
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
        self, pool: _UpstreamPool, request: GenerationRequest
    ) -> AsyncGenerator[Chunk, None]:
        connection: _Connection | None = None
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
