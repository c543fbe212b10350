"""Health of each component, as ``GET /health`` and ``GET /chat/health`` report it."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from streamforge import __version__
from streamforge.chains.core.llm_setup import ProviderRegistry
from streamforge.services.documents import DocumentService
from streamforge.services.embeddings import EmbeddingService
from streamforge.services.streams import StreamManager
from streamforge.services.workers import WorkerService
from streamforge.stores import ChunkStore
from streamforge.streaming.log import EventLog

_CHECK_TIMEOUT = 5.0


class Components(Protocol):
    """What the checks read of the running components (``components.Components``, which
    this layer does not import: it is the composition root above it)."""

    engine: AsyncEngine
    providers: ProviderRegistry
    store: ChunkStore
    embeddings: EmbeddingService
    documents: DocumentService
    streams: StreamManager
    workers: WorkerService
    event_log: EventLog


async def database_health(components: Components) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            async with components.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception as exc:
        return {"status": "error", "backend": components.engine.dialect.name, "error": str(exc)}
    return {
        "status": "ok",
        "backend": components.engine.dialect.name,
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
    }


async def provider_health(components: Components) -> dict[str, Any]:
    provider = components.providers.get()
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            report = await provider.health()
    except Exception as exc:
        return {
            "status": "error",
            "name": provider.name,
            "model": provider.model_for(None),
            "error": str(exc),
        }
    return {"name": provider.name, "model": provider.model_for(None), **report}


async def vector_store_health(components: Components) -> dict[str, Any]:
    store = components.store
    missing = store.unavailable() or components.embeddings.model.unavailable
    # Without pgvector, chat and everything else still work: the store reports itself
    # unavailable (with the reason) without failing the server's health.
    report: dict[str, Any] = {
        "status": "ok" if missing is None else "unavailable",
        "backend": "sqlite-vec + FTS5" if store.backend == "sqlite" else "pgvector + tsvector",
        "embedder": components.embeddings.name,
        "dimensions": components.embeddings.dimensions,
        "ingestion_queue": components.documents.queued,
    }
    if missing is not None:
        report["error"] = missing
    return report


async def chat_health(components: Components) -> dict[str, Any]:
    provider = await provider_health(components)
    return {
        "status": provider.get("status", "error"),
        "service": "chat",
        "provider": provider,
        "providers": components.providers.names(),
        # The model each provider answers a request that names none with.
        "models": {p.name: p.model_for(None) for p in components.providers},
        "active_streams": components.streams.active,
    }


async def overall_health(components: Components) -> dict[str, Any]:
    database, provider, event_log = await asyncio.gather(
        database_health(components),
        provider_health(components),
        components.event_log.health(),
    )
    checks = {
        "database": database,
        "vector_store": await vector_store_health(components),
        "event_log": {**event_log, "worker": components.workers.id},
        "provider": provider,
    }
    healthy = all(check.get("status") in ("ok", "unavailable") for check in checks.values())
    return {
        "status": "ok" if healthy else "degraded",
        "version": __version__,
        "components": checks,
    }
