"""ASGI middleware that must see the raw request (or the lifespan's messages)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamforge.errors import PayloadTooLarge
from streamforge.http_errors import error_for


class StartupErrors:
    """Puts the one-line reason a start-up failed, when the app knows it
    (``app.state.startup_error``), in the server's log instead of a traceback: the server
    logs the message of ``lifespan.startup.failed``, which Starlette fills with the traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def explained(message: Message) -> None:
            reason = getattr(scope["app"].state, "startup_error", None)
            if message["type"] == "lifespan.startup.failed" and reason:
                message = {**message, "message": reason}
            await send(message)

        await self.app(scope, receive, explained)


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413 before the app reads them, headers
    over ``max_header_bytes`` with 431, and URLs with NUL characters with 400.

    A declared Content-Length over the limit is refused at once. A chunked body is read up to
    the limit here and replayed to the app, so it can never be read whole when it is larger.
    Before refusing, the rest of the body is read and thrown away (up to ``DRAIN_BYTES`` and
    ``DRAIN_SECONDS``): closing a socket with unread data makes the kernel send a reset, which
    destroys the 413 before the client can read it.
    """

    DRAIN_BYTES = 64 * 1024 * 1024
    DRAIN_SECONDS = 5.0

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        overrides: dict[tuple[str, str], int] | None = None,
        max_header_bytes: int = 32 * 1024,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # All header names and values together; more is refused with 431.
        self.max_header_bytes = max_header_bytes
        # (method, path) → a limit of its own, e.g. for uploads.
        self.overrides = overrides or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"").lower():
            # No text with NUL can be stored (PostgreSQL refuses it) or name anything.
            await self._drain(receive, 0)
            await self._refuse(scope, receive, send, 400, "NUL characters are not allowed in a URL")
            return
        headers_size = sum(len(name) + len(value) for name, value in scope["headers"])
        if headers_size > self.max_header_bytes:
            await self._drain(receive, 0)
            await self._refuse(
                scope,
                receive,
                send,
                431,
                f"request headers are larger than {self.max_header_bytes} bytes",
            )
            return
        limit = self.overrides.get((scope["method"], scope["path"].rstrip("/") or "/"))
        length: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await self._refuse(scope, receive, send, 400, "invalid Content-Length")
                    return
        if length is not None:
            if length > (limit or self.max_bytes):
                await self._drain(receive, 0)
                await self._refuse(scope, receive, send, 413, self._too_large(limit))
                return
            await self.app(scope, receive, send)
            return
        if limit is not None:
            # A large chunked body (an upload) is not buffered here: it is counted as the app
            # reads it, and reading past the limit raises a 413 inside the app.
            counted = _Counted(receive, send, limit, self._drain, scope.get("path", ""))
            await self.app(scope, counted.receive, counted.send)
            return
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await self._drain(receive, size)
                await self._refuse(scope, receive, send, 413, self._too_large())
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive: Receive, size: int) -> None:
        try:
            async with asyncio.timeout(self.DRAIN_SECONDS):
                while size <= self.DRAIN_BYTES:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    size += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return
        except TimeoutError:
            return

    def _too_large(self, limit: int | None = None) -> str:
        return f"request body is larger than {limit or self.max_bytes} bytes"

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, status: int, message: str
    ) -> None:
        code = {413: "payload_too_large", 431: "headers_too_large"}.get(status, "bad_request")
        response = error_for(
            scope.get("path", ""), status, code, message, headers={"Connection": "close"}
        )
        await response(scope, receive, send)


class _Counted:
    """Counts an upload's bytes as the app reads them; past the limit, the app's own answer
    (a parse error, as the read failed) is replaced by the 413."""

    def __init__(
        self,
        receive: Receive,
        send: Send,
        limit: int,
        drain: Callable[[Receive, int], Awaitable[None]],
        path: str = "",
    ) -> None:
        self._drain = drain
        self._path = path
        self._receive = receive
        self._send = send
        self.limit = limit
        self.size = 0
        self.exceeded = False
        self._replaced = False

    async def receive(self) -> Message:
        message = await self._receive()
        self.size += len(message.get("body", b""))
        if self.size > self.limit:
            self.exceeded = True
            raise PayloadTooLarge(f"request body is larger than {self.limit} bytes")
        return message

    async def send(self, message: Message) -> None:
        if not self.exceeded:
            await self._send(message)
            return
        if message["type"] == "http.response.start" and not self._replaced:
            self._replaced = True
            await self._drain(self._receive, self.size)
            refusal = error_for(
                self._path,
                413,
                "payload_too_large",
                f"request body is larger than {self.limit} bytes",
                headers={"Connection": "close"},
            )
            await refusal({"type": "http"}, self._receive, self._send)
