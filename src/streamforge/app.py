"""The application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from streamforge import SERVICE_NAME, __version__, http_errors
from streamforge.components import Components
from streamforge.config.settings import Settings
from streamforge.middleware import BodyLimitMiddleware
from streamforge.routers import chat, documents, openai_api, root, sessions, templates


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        components = await Components.start(settings)
        app.state.components = components
        try:
            yield
        finally:
            await components.stop()

    app = FastAPI(
        title=SERVICE_NAME,
        version=__version__,
        description="A self-hostable streaming chat backend.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    http_errors.install(app)
    app.include_router(root.router)
    app.include_router(chat.router)
    app.include_router(sessions.router)
    app.include_router(templates.router)
    app.include_router(documents.router)
    app.include_router(openai_api.router)

    # Middleware wraps in reverse order of addition: the body limit sits inside CORS so that
    # even a 413 carries the CORS headers a browser needs to read it.
    # Uploads may be larger than other bodies: their own limit, plus room for the multipart
    # framing and the collection field.
    upload_limit = settings.ingestion.max_upload_bytes + 64 * 1024
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.limits.max_body_bytes,
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
    return app
