"""How ``streamforge serve`` runs uvicorn: connection limits and timeouts that ASGI cannot see.

uvicorn closes idle keep-alive connections, but a connection that never finishes its request
headers is kept forever, and it accepts connections until the process runs out of file
descriptors: a few hundred silent sockets would starve every other client. The protocol classes
here add to uvicorn's own (h11 or httptools, as uvicorn would pick):

- a header deadline (``server.header_timeout``): a connection must deliver a request's headers
  within that many seconds of opening, or of the first byte of its next request; otherwise it is
  closed. Trickling one byte at a time does not extend it.
- a connection limit (``server.max_connections``, lowered to fit the descriptor limit): a
  connection beyond it is answered at once with a JSON 503 and ``Retry-After``, and closed.
- a malformed request (request line, headers, ``Content-Length``) is answered with a 400 in the
  JSON error shape instead of uvicorn's plain text.

Streams are untouched: once a request's headers are in, its response may last as long as it
needs (with its own heartbeats and send timeout).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from typing import TYPE_CHECKING, Any, cast

from uvicorn.protocols.http.h11_impl import H11Protocol as _H11Protocol

from streamforge.config.settings import ServerSettings, Settings

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol
else:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol
    except ImportError:  # httptools is optional: uvicorn falls back on h11
        _HttpToolsProtocol = None

logger = logging.getLogger(__name__)

# Descriptors kept free for everything but client connections: database and Redis pools, the
# model process's pipes, uploads, log files.
_RESERVED_DESCRIPTORS = 64
# How long a refused connection is kept half-closed so that the client reads the 503 before
# the socket goes (closing with its request unread would send a reset instead).
_REFUSAL_LINGER = 1.0


def _response(status: str, message: str, code: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (
        f"HTTP/1.1 {status}\r\n".encode()
        + b"content-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n".encode()
        + extra
        + b"connection: close\r\n\r\n"
        + body
    )


BAD_REQUEST = _response(
    "400 Bad Request",
    "malformed HTTP request: check the request line, the headers and Content-Length",
    "bad_request",
)
TOO_MANY_CONNECTIONS = _response(
    "503 Service Unavailable",
    "the server has too many open connections; try again shortly",
    "too_many_connections",
    b"retry-after: 1\r\n",
)


def descriptor_limit() -> int | None:
    """The process's limit on open files, or None where there is no such limit to read."""
    if sys.platform == "win32":
        return None
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def raise_descriptor_limit() -> None:
    """Lift the soft limit on open files to the hard one (as Go's runtime does): the soft
    default of many systems, 1024, is below a server's needs."""
    if sys.platform == "win32":
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65_536
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            logger.debug("could not raise the open-file limit to %s", target)


def connection_limit(configured: int, descriptors: int | None) -> int:
    """``configured``, lowered to leave descriptors for everything else."""
    if descriptors is None:
        return configured
    return max(1, min(configured, descriptors - max(_RESERVED_DESCRIPTORS, descriptors // 8)))


@functools.cache
def _settings() -> ServerSettings:
    # Read once per worker process, from the environment the app reads too.
    return Settings().server


class _Guarded:
    """Header deadline, connection limit and JSON 400 over a uvicorn HTTP protocol."""

    # Provided by the uvicorn protocol this is mixed into.
    connections: set[Any]
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    _header_timer: asyncio.TimerHandle | None = None
    _refused = False
    _last_refusal_log = float("-inf")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        settings = _settings()
        if len(self.connections) >= connection_limit(settings.max_connections, descriptor_limit()):
            self._refuse(cast(asyncio.Transport, transport))
            return
        super().connection_made(transport)  # type: ignore[misc]
        self._start_header_timer(settings.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            # The first bytes of the next request on a kept-alive connection.
            self._start_header_timer(_settings().header_timeout)
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not None and not self.cycle.response_complete:
            self._stop_header_timer()  # the headers are in: the request is being served

    def eof_received(self) -> None:
        if self._refused:
            self.transport.close()
            return
        super().eof_received()  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        if self._refused:
            return
        super().connection_lost(exc)  # type: ignore[misc]

    def handle_websocket_upgrade(self, *args: Any) -> None:
        self._stop_header_timer()  # the connection is the WebSocket protocol's from here
        super().handle_websocket_upgrade(*args)  # type: ignore[misc]

    def send_400_response(self, msg: str) -> None:
        self.transport.write(BAD_REQUEST)
        self.transport.close()

    def _refuse(self, transport: asyncio.Transport) -> None:
        self._refused = True
        self.transport = transport
        now = self.loop.time()
        if now - _Guarded._last_refusal_log >= 10:  # a flood must not flood the log too
            _Guarded._last_refusal_log = now
            logger.warning(
                "refusing connections: %d are open (STREAMFORGE_SERVER__MAX_CONNECTIONS)",
                len(self.connections),
            )
        transport.write(TOO_MANY_CONNECTIONS)
        if transport.can_write_eof():
            transport.write_eof()
        self._header_timer = self.loop.call_later(_REFUSAL_LINGER, transport.close)

    def _start_header_timer(self, timeout: float) -> None:
        self._stop_header_timer()
        self._header_timer = self.loop.call_later(timeout, self._header_timeout)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            logger.debug("closed a connection that sent no complete request headers in time")
            self.transport.close()


class H11Protocol(_Guarded, _H11Protocol):
    pass


if _HttpToolsProtocol is not None:

    class HttpToolsProtocol(_Guarded, _HttpToolsProtocol):
        pass


def protocol() -> str:
    """The guarded protocol over the parser uvicorn would choose (httptools when installed)."""
    if _HttpToolsProtocol is not None:
        return f"{__name__}:HttpToolsProtocol"
    return f"{__name__}:H11Protocol"


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` that bound what idle and slow clients can hold."""
    raise_descriptor_limit()
    return {
        "http": protocol(),
        "timeout_keep_alive": settings.server.keep_alive_timeout,
    }
