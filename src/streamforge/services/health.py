"""Health of each component, as ``GET /health`` and ``GET /chat/health`` report it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from streamforge import __version__
from streamforge.chains.core.llm_setup import ProviderRegistry
from streamforge.services.documents import DocumentService
from streamforge.services.embeddings import EmbeddingService
from streamforge.services.streams import StreamManager
from streamforge.services.workers import WorkerService
from streamforge.stores import ChunkStore

_CHECK_TIMEOUT = 5.0


class HealthService:
    def __init__(
        self,
        engine: AsyncEngine,
        providers: ProviderRegistry,
        store: ChunkStore,
        embeddings: EmbeddingService,
        documents: DocumentService,
        streams: StreamManager,
        workers: WorkerService,
    ) -> None:
        self.engine = engine
        self.providers = providers
        self.store = store
        self.embeddings = embeddings
        self.documents = documents
        self.streams = streams
        self.workers = workers

    async def database(self) -> dict[str, Any]:
        engine = self.engine
        started = time.perf_counter()
        try:
            async with asyncio.timeout(_CHECK_TIMEOUT):
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as exc:
            return {"status": "error", "backend": engine.dialect.name, "error": str(exc)}
        return {
            "status": "ok",
            "backend": engine.dialect.name,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    async def provider(self) -> dict[str, Any]:
        provider = self.providers.get()
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

    async def vector_store(self) -> dict[str, Any]:
        store = self.store
        missing = store.unavailable() or self.embeddings.model.unavailable
        # Without pgvector, chat and everything else still work: the store reports itself
        # unavailable (with the reason) without failing the server's health.
        report: dict[str, Any] = {
            "status": "ok" if missing is None else "unavailable",
            "backend": "sqlite-vec + FTS5" if store.backend == "sqlite" else "pgvector + tsvector",
            "embedder": self.embeddings.name,
            "dimensions": self.embeddings.dimensions,
            "ingestion_queue": self.documents.queued,
        }
        if missing is not None:
            report["error"] = missing
        return report

    async def chat(self) -> dict[str, Any]:
        provider = await self.provider()
        return {
            "status": provider.get("status", "error"),
            "service": "chat",
            "provider": provider,
            "providers": self.providers.names(),
            # The model each provider answers a request that names none with.
            "models": {p.name: p.model_for(None) for p in self.providers},
            "active_streams": self.streams.active,
        }

    async def overall(self) -> dict[str, Any]:
        database, provider, event_log = await asyncio.gather(
            self.database(),
            self.provider(),
            self.streams.log.health(),
        )
        checks = {
            "database": database,
            "vector_store": await self.vector_store(),
            "event_log": {**event_log, "worker": self.workers.id},
            "provider": provider,
        }
        healthy = all(check.get("status") in ("ok", "unavailable") for check in checks.values())
        return {
            "status": "ok" if healthy else "degraded",
            "version": __version__,
            "components": checks,
        }
