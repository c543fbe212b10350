"""The application factory."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from streamforge import SERVICE_NAME, __version__, http_errors, openapi
from streamforge.components import Components
from streamforge.config.loading import SettingsInvalid, load_settings
from streamforge.config.settings import Settings
from streamforge.deps import authenticate
from streamforge.errors import ConfigurationError
from streamforge.middleware import BodyLimitMiddleware, StartupErrors
from streamforge.routers import (
    admin,
    ai_sdk,
    anthropic_api,
    chat,
    docs,
    documents,
    openai_api,
    root,
    sessions,
    templates,
    ui,
)

_DRAIN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def drain_on_signals(drain: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """Start ``drain`` on the event loop as soon as SIGTERM or SIGINT arrives, then let the
    handler that was there (uvicorn's, which stops accepting and waits for the open
    connections) run as before. Servers wait for open streams to end before they run the
    lifespan's shutdown, so streams must be ended when the signal comes, not after.
    Returns a function that puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    previous: dict[int, Any] = {}

    def start(then_default: int | None) -> None:
        if tasks:
            return
        task = asyncio.ensure_future(drain())
        tasks.add(task)
        if then_default is not None:
            # Nobody else handles the signal: after draining, let it do what it would have.
            def again(_: asyncio.Task[None]) -> None:
                restore()
                signal.raise_signal(then_default)

            task.add_done_callback(again)

    def handler(signum: int, frame: FrameType | None) -> None:
        chained = previous.get(signum)
        loop.call_soon_threadsafe(start, None if callable(chained) else signum)
        if callable(chained):
            chained(signum, frame)

    for sig in _DRAIN_SIGNALS:
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, old)

    return restore


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app on ``settings``, or on the environment's. Settings from the environment that
    cannot be used give an app whose start-up fails with one line per problem in the log."""
    if settings is None:
        try:
            settings = load_settings()
        except SettingsInvalid as exc:
            return unconfigured_app(exc)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            components = await Components.start(settings)
        except ConfigurationError as exc:
            # What the operator must fix, in one line (StartupErrors puts it in the log).
            app.state.startup_error = exc.message
            raise
        app.state.components = components
        restore = drain_on_signals(components.drain)
        try:
            yield
        finally:
            restore()
            await components.stop()

    app = FastAPI(
        title=SERVICE_NAME,
        version=__version__,
        description="A self-hostable streaming chat backend.",
        lifespan=lifespan,
        # Who is calling, from the API key, before anything else about the request.
        dependencies=[Depends(authenticate)],
        # Served by routers/docs.py from a package, never from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    http_errors.install(app)
    app.include_router(root.router)
    app.include_router(chat.router)
    app.include_router(sessions.router)
    app.include_router(templates.router)
    app.include_router(documents.router)
    app.include_router(openai_api.router)
    app.include_router(anthropic_api.router)
    app.include_router(ai_sdk.router)
    app.include_router(admin.router)
    app.include_router(ui.router)
    docs.install(app)
    openapi.install(app)

    # Middleware wraps in reverse order of addition: the body limit sits inside CORS so that
    # even a 413 carries the CORS headers a browser needs to read it.
    # Uploads may be larger than other bodies: their own limit, plus room for the multipart
    # framing and the collection field.
    upload_limit = settings.ingestion.max_upload_bytes + 64 * 1024
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.limits.max_body_bytes,
        max_header_bytes=settings.limits.max_header_bytes,
        overrides={("POST", "/documents"): upload_limit},
    )
    if settings.cors.origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors.origins,
            allow_credentials=settings.cors.allow_credentials,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(StartupErrors)
    return app


def unconfigured_app(invalid: SettingsInvalid) -> FastAPI:
    """An app that only refuses to start, saying why (``uvicorn streamforge.main:app`` imports
    the app before anything can report a problem)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.startup_error = invalid.message
        raise ConfigurationError(invalid.message)
        yield  # pragma: no cover

    app = FastAPI(title=SERVICE_NAME, version=__version__, lifespan=lifespan)
    app.add_middleware(StartupErrors)
    return app
