"""A lean HTTP/1.1 client for streaming from an upstream: keep-alive connections and a pool.

Relaying an upstream's stream is the gateway's hot path, and httpx runs its whole stack
(httpx, httpcore, h11, anyio) once per HTTP chunk, while an upstream sends one chunk per token.
Here each connection is an ``asyncio.Protocol`` whose ``data_received`` feeds ``httptools``
(llhttp, the parser uvicorn uses): it parses the head and undoes the chunked transfer coding
as bytes arrive, so the consumer takes everything received so far in one ``read``. The pool
keeps httpx's limits and timeouts; transport failures are ``ConnectionError``s, as httpx's
transport errors are to ``classify``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import urllib.request
import zlib
from collections import deque
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import httpx

CONNECT_TIMEOUT = 10.0
_HEAD_LIMIT = 64 * 1024
_HIGH_WATER = 256 * 1024


class UpstreamError(ConnectionError):
    """The upstream connection failed, timed out, or broke HTTP/1.1.

    A ``ConnectionError``, so ``classify`` reports it as ``provider_unavailable`` (retryable),
    as it does httpx's transport errors."""


class UpstreamDisconnected(UpstreamError):
    """The upstream closed the connection before the response was complete."""


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 connection: sends a request, decodes the response as it arrives.

    ``data_received`` feeds the bytes to an ``httptools`` response parser, whose callbacks
    collect the head and the body (chunked coding undone); the consumer takes all the body
    bytes received so far in one ``read``."""

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
        self._head_size = 0
        self._until_close = False  # neither a length nor chunked: the body ends at EOF
        self._body: list[bytes] = []
        self._body_size = 0
        self._error: BaseException | None = None
        self._paused = False
        self._decoder: Any = None
        self._parser = httptools.HttpResponseParser(self)

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
        if not self.head_done:
            self._head_size += len(data)
        try:
            self._parser.feed_data(data)
            if not self.head_done and self._head_size > _HEAD_LIMIT:
                raise UpstreamError("response head too large")
        except (httptools.HttpParserError, UpstreamError) as exc:
            if self.complete:  # bytes after the response: never reuse this connection
                self.keep_alive = False
            else:
                cause = exc.__context__ if isinstance(exc.__context__, UpstreamError) else exc
                self._fail(UpstreamError(f"invalid HTTP response from the upstream: {cause}"))
                self.close()
                return
        if self._body_size > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        if self.head_done and self._until_close:
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

    # -- httptools' callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second response after the one asked for
            self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower().decode("latin-1")
        text = value.strip().decode("latin-1")
        headers = self.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            self.headers = {}  # an interim response (100 Continue, 103 Early Hints)
            return
        headers = self.headers
        self.status = status
        self.head_done = True
        self.keep_alive = (
            self._parser.get_http_version() == "1.1" and self._parser.should_keep_alive()
        )
        coding = headers.get("content-encoding", "").strip().lower()
        if coding in ("gzip", "x-gzip", "deflate"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib
        elif coding not in ("", "identity"):
            raise UpstreamError(f"unsupported content-encoding {coding!r}")
        if (
            status not in (204, 304)
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and "content-length" not in headers
        ):
            self._until_close = True
            self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._body_size += len(body)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True

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
        while True:
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
            if self._decoder is None:
                return data
            try:
                decoded: bytes = self._decoder.decompress(data)
            except zlib.error as exc:
                raise UpstreamError(f"could not decode the response body: {exc}") from exc
            if decoded:  # compressed bytes that decode to nothing yet are not the end
                return decoded

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


class UpstreamPool:
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
        self._idle: list[UpstreamConnection] = []
        self._ssl: ssl.SSLContext | None = None
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> UpstreamConnection:
        if self.tls and self._ssl is None:
            # The same verification as httpx: certifi, or SSL_CERT_FILE / SSL_CERT_DIR.
            self._ssl = httpx.create_ssl_context()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: UpstreamConnection(loop, self.read_timeout),
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

    def _idle_connection(self, loop: asyncio.AbstractEventLoop) -> UpstreamConnection | None:
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

    async def post(self, body: bytes) -> UpstreamConnection:
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

    async def _post(self, loop: asyncio.AbstractEventLoop, request: bytes) -> UpstreamConnection:
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

    def release(self, connection: UpstreamConnection) -> None:
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


def env_proxy(url: str) -> bool:
    """Whether httpx would send a request for ``url`` through a proxy from the environment."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme.lower()) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")
