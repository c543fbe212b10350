"""Retrieval: vector and full-text search fused by reciprocal rank.

``search`` is the one code path behind ``POST /search``, chat with ``rag``, the LangChain
retriever and ``streamforge eval``. Each leg returns up to ``candidates`` chunks; fusion scores
a chunk ``sum(1 / (rrf_k + rank))`` over the legs that found it (Cormack et al., 2009), so a
chunk both legs rank well beats one that only a single leg likes.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from streamforge.config.settings import RetrievalSettings
from streamforge.db.database import Database
from streamforge.errors import Conflict, NotFound
from streamforge.models import Collection
from streamforge.repositories import documents as repo
from streamforge.services.embeddings import EmbeddingService
from streamforge.stores import ChunkStore, Hit


class SearchMode(enum.StrEnum):
    HYBRID = "hybrid"
    VECTOR = "vector"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class RetrievedChunk:
    chunk_id: int
    document_id: str
    document_name: str
    collection_id: str
    score: float
    start: int
    end: int
    text: str

    def snippet(self, limit: int) -> str:
        text = " ".join(self.text.split())
        return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"

    def citation(self, index: int, snippet_chars: int) -> dict[str, Any]:
        """What the ``sources`` event and the stored message carry for this chunk."""
        return {
            "index": index,
            "document_id": self.document_id,
            "document_name": self.document_name,
            "collection_id": self.collection_id,
            "chunk_id": self.chunk_id,
            "score": round(self.score, 6),
            "start": self.start,
            "end": self.end,
            "snippet": self.snippet(snippet_chars),
        }


@dataclass(slots=True)
class SearchResult:
    query: str
    mode: SearchMode
    chunks: list[RetrievedChunk]
    timings: dict[str, float] = field(default_factory=dict)


def fuse(legs: Sequence[Sequence[Hit]], k: int, rrf_k: int) -> list[Hit]:
    """Reciprocal rank fusion of ranked lists (best first)."""
    scores: dict[int, float] = {}
    for hits in legs:
        for rank, hit in enumerate(hits, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (rrf_k + rank)
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [Hit(chunk_id, score) for chunk_id, score in ranked[:k]]


async def _resolve(db: AsyncSession, owner_id: str, refs: Sequence[str] | None) -> list[Collection]:
    if not refs:
        found, _ = await repo.list_collections(db, owner_id)
        return list(found)
    result: dict[str, Collection] = {}
    for ref in refs:
        collection = await repo.get_collection(db, owner_id, ref)
        if collection is None:
            raise NotFound(f"collection {ref!r} not found")
        result[collection.id] = collection
    return list(result.values())


class RetrievalService:
    def __init__(
        self,
        settings: RetrievalSettings,
        database: Database,
        store: ChunkStore,
        embedder: EmbeddingService,
    ) -> None:
        self.settings = settings
        self.database = database
        self.store = store
        self.embedder = embedder
        # Called with (mode, seconds) after each search (metrics).
        self.observe: Callable[[str, float], None] | None = None

    async def collections(self, owner_id: str, refs: Sequence[str] | None) -> list[Collection]:
        """The named collections (names or ids), or all of the owner's when none are named."""
        async with self.database.read() as db:
            return await _resolve(db, owner_id, refs)

    def _check_embedder(self, collections: Sequence[Collection]) -> None:
        for collection in collections:
            model = collection.embedding_model
            if model is not None and model != self.embedder.name:
                raise Conflict(
                    f"collection {collection.name!r} was embedded with {model!r} but the "
                    f"server now embeds with {self.embedder.name!r}: re-index its documents"
                )

    async def search(
        self,
        owner_id: str,
        query: str,
        *,
        collections: Sequence[str] | None = None,
        top_k: int | None = None,
        mode: SearchMode = SearchMode.HYBRID,
    ) -> SearchResult:
        started = time.perf_counter()
        k = top_k or self.settings.top_k
        result = SearchResult(query, mode, [])
        vector: list[float] = []
        if mode is not SearchMode.TEXT:
            # Before the database session, so no pooled connection waits on the embedder.
            vector = await self.embedder.embed_query(query)
            result.timings["embed_ms"] = (time.perf_counter() - started) * 1000
        t1 = time.perf_counter()
        async with self.database.read() as db:
            chosen = await _resolve(db, owner_id, collections)
            ids = [c.id for c in chosen]
            if not ids:
                return result
            if mode is not SearchMode.TEXT:
                self._check_embedder(chosen)
            candidates = max(self.settings.candidates, k)
            vector_hits: list[Hit] = []
            text_hits: list[Hit] = []
            if mode is not SearchMode.TEXT:
                vector_hits = await self.store.vector_search(db, vector, ids, candidates)
            if mode is not SearchMode.VECTOR:
                text_hits = await self.store.text_search(db, query, ids, candidates)
            if mode is SearchMode.HYBRID:
                hits = fuse([vector_hits, text_hits], k, self.settings.rrf_k)
            else:
                hits = (vector_hits or text_hits)[:k]
            result.timings["search_ms"] = (time.perf_counter() - t1) * 1000
            rows = await repo.chunks_by_id(db, owner_id, [hit.chunk_id for hit in hits])
        by_id = {row.id: row for row in rows}
        for hit in hits:
            row = by_id.get(hit.chunk_id)
            if row is None:  # deleted between the search and the fetch
                continue
            result.chunks.append(
                RetrievedChunk(
                    chunk_id=row.id,
                    document_id=row.document_id,
                    document_name=row.document_name,
                    collection_id=row.collection_id,
                    score=hit.score,
                    start=row.start,
                    end=row.end,
                    text=row.text,
                )
            )
        result.timings["total_ms"] = (time.perf_counter() - started) * 1000
        if self.observe is not None:
            self.observe(mode.value, result.timings["total_ms"] / 1000)
        return result
