"""The components one app instance runs on, built in its lifespan and torn down with it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from streamforge.chains.core.llm_setup import ProviderRegistry, build_registry
from streamforge.chains.embeddings import build_embedding_model
from streamforge.config.settings import Settings
from streamforge.db.database import Database
from streamforge.db.engine import connection_failure, create_engine
from streamforge.db.ids import new_id
from streamforge.db.migrate import upgrade_to_head
from streamforge.metrics import Metrics
from streamforge.services.auth import AuthService
from streamforge.services.chat import ChatService
from streamforge.services.completions import CompletionService
from streamforge.services.documents import DocumentService
from streamforge.services.embeddings import EmbeddingService
from streamforge.services.ingestion import Ingestion
from streamforge.services.limits import InProcessLimiter, Limiter, Quotas, RedisLimiter
from streamforge.services.memory import MemoryService
from streamforge.services.pipeline import TurnPipeline
from streamforge.services.rerank import build_reranker
from streamforge.services.retrieval import RetrievalService
from streamforge.services.sessions import SessionService
from streamforge.services.streams import StreamManager
from streamforge.services.templates import TemplateService
from streamforge.services.workers import WorkerService
from streamforge.stores import ChunkStore, create_store
from streamforge.stores.postgres import search_settings
from streamforge.streaming.log import EventLog, InProcessEventLog


@dataclass
class Components:
    settings: Settings
    engine: AsyncEngine
    database: Database
    providers: ProviderRegistry
    event_log: EventLog
    workers: WorkerService
    streams: StreamManager
    chat: ChatService
    completions: CompletionService
    sessions: SessionService
    templates: TemplateService
    store: ChunkStore
    embeddings: EmbeddingService
    retrieval: RetrievalService
    documents: DocumentService
    metrics: Metrics
    auth: AuthService
    limiter: Limiter
    quotas: Quotas

    @classmethod
    async def start(cls, settings: Settings) -> Components:
        """Build and start everything; when a step fails, what was started is stopped again,
        in reverse order."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            settings.database_url,
            echo=settings.database.echo,
            pool_size=settings.database.pool_size,
            postgres_settings=search_settings(settings.retrieval.hnsw_ef_search),
        )
        async with contextlib.AsyncExitStack() as started:
            started.push_async_callback(engine.dispose)
            try:
                await upgrade_to_head(engine)
            except BaseException as exc:
                failure = connection_failure(settings.database_url, exc)
                if failure is not None:
                    raise failure from exc
                raise
            components = await cls._build(settings, engine, started)
            started.pop_all()
        return components

    @classmethod
    async def _build(
        cls, settings: Settings, engine: AsyncEngine, started: contextlib.AsyncExitStack
    ) -> Components:
        database = Database(engine)
        store = create_store(
            database,
            ef_search=settings.retrieval.hnsw_ef_search,
            ivf_min_vectors=settings.retrieval.ivf_min_vectors,
            ivf_probes=settings.retrieval.ivf_probes,
        )
        providers = build_registry(settings)
        embeddings = EmbeddingService(
            build_embedding_model(settings), batch_size=settings.embeddings.batch_size
        )
        started.push_async_callback(embeddings.aclose)
        await store.start()
        started.push_async_callback(store.aclose)
        await providers.start()
        started.push_async_callback(providers.aclose)
        metrics = Metrics()
        reranker = build_reranker(settings.retrieval.rerank)
        if reranker is not None:
            started.push_async_callback(reranker.aclose)
        retrieval = RetrievalService(
            settings.retrieval,
            database,
            store,
            embeddings,
            reranker,
            observe=lambda mode, seconds: metrics.retrieval_latency.labels(mode=mode).observe(
                seconds
            ),
        )
        ingestion = Ingestion(settings.ingestion, database, store, embeddings)
        documents = DocumentService(settings.ingestion, database, store, ingestion)
        await documents.start()
        started.push_async_callback(documents.stop)
        embeddings.warm_up()
        worker_id = new_id()
        event_log = build_event_log(settings, worker_id)
        streams = StreamManager(
            event_log,
            on_finish=metrics.stream_finished,
            policy=settings.streaming.disconnect_policy,
            grace=settings.streaming.disconnect_grace,
        )
        await event_log.start(on_signal=streams.on_signal)
        started.push_async_callback(event_log.aclose)
        workers = WorkerService(
            database,
            event_log,
            streams,
            worker_id=worker_id,
            heartbeat_interval=settings.server.heartbeat_interval,
            timeout=settings.server.worker_timeout,
            checkpoint_interval=settings.streaming.checkpoint_interval,
        )
        await workers.start()
        started.push_async_callback(workers.stop)
        loop = asyncio.get_running_loop()
        metrics.watch(
            lambda: streams.active,
            lambda: _waiting(providers),
            lambda: len(asyncio.all_tasks(loop)),
        )
        templates = TemplateService(database)
        memory = MemoryService(settings.memory, database)
        limiter: Limiter = (
            RedisLimiter(
                settings.redis.url, prefix=settings.redis.prefix, timeout=settings.redis.timeout
            )
            if settings.redis.url
            else InProcessLimiter()
        )
        started.push_async_callback(limiter.aclose)
        quotas = Quotas(
            limiter,
            concurrent_streams=settings.limits.concurrent_streams,
            tokens_per_day=settings.limits.tokens_per_day,
        )
        pipeline = TurnPipeline(settings, providers, streams, retrieval, quotas)
        return cls(
            settings=settings,
            engine=engine,
            database=database,
            providers=providers,
            event_log=event_log,
            workers=workers,
            streams=streams,
            chat=ChatService(settings, database, pipeline, templates, memory, worker_id),
            completions=CompletionService(pipeline),
            sessions=SessionService(database, streams),
            templates=templates,
            store=store,
            embeddings=embeddings,
            retrieval=retrieval,
            documents=documents,
            metrics=metrics,
            auth=AuthService(database, cache_seconds=settings.auth.key_cache_seconds),
            limiter=limiter,
            quotas=quotas,
        )

    async def drain(self) -> None:
        """The server is stopping: end every open stream with a retryable ``shutdown`` error
        and record every reply, so that connections close and nothing is left half-way."""
        self.event_log.interrupt_readers("the server is shutting down; reconnect to resume")
        await self.streams.shutdown()

    async def stop(self) -> None:
        await self.drain()
        await self.documents.stop()
        await self.embeddings.aclose()
        if self.retrieval.reranker is not None:
            await self.retrieval.reranker.aclose()
        await self.store.aclose()
        await self.providers.aclose()
        await self.workers.stop()
        await self.event_log.aclose()
        await self.limiter.aclose()
        await self.engine.dispose()
        if self.database.engine is not self.engine:
            await self.database.engine.dispose()


def build_event_log(settings: Settings, worker_id: str) -> EventLog:
    streaming = settings.streaming
    if settings.redis.url is None:
        return InProcessEventLog(streaming.retention, streaming.max_retained_streams)
    from streamforge.streaming.redis_log import RedisEventLog

    return RedisEventLog(
        settings.redis.url,
        prefix=settings.redis.prefix,
        retention=streaming.retention,
        max_finished=streaming.max_retained_streams,
        timeout=settings.redis.timeout,
        worker_id=worker_id,
    )


def _waiting(providers: ProviderRegistry) -> int:
    """Generations queued behind the one the local model is running."""
    if "local" not in providers:
        return 0
    engine = getattr(providers.get("local"), "engine", None)
    admitted = int(getattr(engine, "admitted", 0))
    return max(0, admitted - 1)
