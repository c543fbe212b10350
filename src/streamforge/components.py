"""The components one app instance runs on, built in its lifespan and torn down with it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from streamforge.chains.core.llm_setup import ProviderRegistry, build_registry
from streamforge.chains.embeddings import build_embedding_model
from streamforge.config.settings import Settings
from streamforge.db.database import Database
from streamforge.db.engine import create_engine
from streamforge.db.migrate import upgrade_to_head
from streamforge.metrics import Metrics
from streamforge.services.chat import ChatService
from streamforge.services.completions import CompletionService
from streamforge.services.documents import DocumentService
from streamforge.services.embeddings import EmbeddingService
from streamforge.services.memory import MemoryService
from streamforge.services.retrieval import RetrievalService
from streamforge.services.sessions import SessionService
from streamforge.services.streams import StreamManager
from streamforge.services.templates import TemplateService
from streamforge.stores import ChunkStore, create_store
from streamforge.stores.postgres import search_settings
from streamforge.streaming.log import InProcessEventLog


@dataclass
class Components:
    settings: Settings
    engine: AsyncEngine
    database: Database
    providers: ProviderRegistry
    event_log: InProcessEventLog
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

    @classmethod
    async def start(cls, settings: Settings) -> Components:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            settings.database_url,
            echo=settings.database.echo,
            pool_size=settings.database.pool_size,
            postgres_settings=search_settings(settings.retrieval.hnsw_ef_search),
        )
        try:
            await upgrade_to_head(engine)
        except BaseException:
            await engine.dispose()
            raise
        database = Database(engine)
        store = create_store(
            database,
            ef_search=settings.retrieval.hnsw_ef_search,
            ivf_min_vectors=settings.retrieval.ivf_min_vectors,
            ivf_probes=settings.retrieval.ivf_probes,
        )
        providers = build_registry(settings)
        try:
            embeddings = EmbeddingService(
                build_embedding_model(settings), batch_size=settings.embeddings.batch_size
            )
            await store.start()
            await providers.start()
        except BaseException:
            await engine.dispose()
            raise
        retrieval = RetrievalService(settings.retrieval, database, store, embeddings)
        documents = DocumentService(settings.ingestion, database, store, embeddings)
        await documents.start()
        embeddings.warm_up()
        event_log = InProcessEventLog(
            settings.streaming.retention, settings.streaming.max_retained_streams
        )
        metrics = Metrics()
        streams = StreamManager(event_log, on_finish=metrics.stream_finished)
        metrics.watch(lambda: streams.active, lambda: _waiting(providers))
        retrieval.observe = lambda mode, seconds: metrics.retrieval_latency.labels(
            mode=mode
        ).observe(seconds)
        templates = TemplateService(database)
        memory = MemoryService(settings.memory, database)
        chat = ChatService(settings, database, providers, streams, templates, memory, retrieval)
        return cls(
            settings=settings,
            engine=engine,
            database=database,
            providers=providers,
            event_log=event_log,
            streams=streams,
            chat=chat,
            completions=CompletionService(providers, streams, chat),
            sessions=SessionService(database),
            templates=templates,
            store=store,
            embeddings=embeddings,
            retrieval=retrieval,
            documents=documents,
            metrics=metrics,
        )

    async def stop(self) -> None:
        await self.documents.stop()
        await self.embeddings.aclose()
        await self.store.aclose()
        await self.streams.shutdown()
        await self.providers.aclose()
        await self.engine.dispose()


def _waiting(providers: ProviderRegistry) -> int:
    """Generations queued behind the one the local model is running."""
    if "local" not in providers:
        return 0
    engine = getattr(providers.get("local"), "engine", None)
    admitted = int(getattr(engine, "admitted", 0))
    return max(0, admitted - 1)
