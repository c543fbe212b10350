"""Retrieval: vector and full-text search fused by reciprocal rank.

``search`` is the one code path behind ``POST /search``, chat with ``rag``, the LangChain
retriever and ``streamforge eval``. Each leg returns up to ``candidates`` chunks; fusion scores
a chunk ``sum(1 / (rrf_k + rank))`` over the legs that found it (Cormack et al., 2009), so a
chunk both legs rank well beats one that only a single leg likes (other fusions are settings:
weights, normalised scores, fusing documents). ``per_document`` caps the chunks of any one
document (1: a ranking of documents). A configured reranker (``services/rerank.py``) then
reorders the best fused candidates, or leaves them as they are when it fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from streamforge.config.settings import RetrievalSettings
from streamforge.db.database import Database
from streamforge.documents.extract import page_of
from streamforge.errors import Conflict, NotFound
from streamforge.models import Collection
from streamforge.repositories import documents as repo
from streamforge.services.embeddings import EmbeddingService
from streamforge.services.rerank import Reranker, RerankFailed
from streamforge.stores import ChunkStore, Hit

logger = logging.getLogger(__name__)

Key = TypeVar("Key", int, str)


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
    # The page of the document where the passage begins (PDF), None for formats without pages.
    page: int | None = None

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
            "page": self.page,
            "snippet": self.snippet(snippet_chars),
        }


@dataclass(slots=True)
class SearchResult:
    query: str
    mode: SearchMode
    chunks: list[RetrievedChunk]
    timings: dict[str, float] = field(default_factory=dict)
    # What went wrong without failing the search (a reranker that did not answer).
    warnings: list[str] = field(default_factory=list)


def fuse(legs: Sequence[Sequence[Hit]], k: int, rrf_k: int) -> list[Hit]:
    """Reciprocal rank fusion of ranked lists (best first)."""
    scores: dict[int, float] = {}
    for hits in legs:
        for rank, hit in enumerate(hits, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (rrf_k + rank)
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [Hit(chunk_id, score) for chunk_id, score in ranked[:k]]


def _leg_scores(
    items: Sequence[tuple[Key, float]], method: str, rrf_k: int
) -> tuple[dict[Key, float], float]:
    """One leg's contribution per item, and what an item the leg did not find gets."""
    if method == "rrf":
        return {key: 1.0 / (rrf_k + rank) for rank, (key, _) in enumerate(items, 1)}, 0.0
    values = [score for _, score in items]
    if method == "minmax":
        low, high = min(values), max(values)
        spread = (high - low) or 1.0
        return {key: (score - low) / spread for key, score in items}, 0.0
    mean = statistics.fmean(values)
    spread = statistics.pstdev(values) or 1.0
    normal = {key: (score - mean) / spread for key, score in items}
    return normal, min(normal.values())


def _combine(
    legs: Sequence[Sequence[tuple[Key, float]]],
    method: str,
    rrf_k: int,
    weights: Sequence[float],
) -> dict[Key, float]:
    fused: dict[Key, float] = {}
    contributions = [
        (_leg_scores(leg, method, rrf_k), w) for leg, w in zip(legs, weights, strict=True) if leg
    ]
    keys = {key for leg in legs for key, _ in leg}
    for key in keys:
        fused[key] = sum(w * scores.get(key, missing) for (scores, missing), w in contributions)
    return fused


def fuse_ranked(
    legs: Sequence[Sequence[Hit]],
    *,
    document_of: Callable[[int], str | None] | None = None,
    method: str = "rrf",
    rrf_k: int = 60,
    weights: Sequence[float] = (1.0, 1.0),
) -> list[Hit]:
    """Fuse ranked legs (best first) into one ranking of chunks.

    ``method``: ``rrf`` (sum of weight / (rrf_k + rank)), ``minmax`` or ``zscore`` (sum of
    weight * the leg's score normalised over its list). With ``document_of``, documents are
    fused rather than chunks: a document's place in a leg is that of its best chunk there, so
    a document with many matching chunks does not push others down a leg's list, and a
    document each leg finds through a different chunk still counts as found by both. Chunks
    then come document by document, best document first, each document's chunks in the order
    of their own fused score.
    """
    pairs = [[(hit.chunk_id, hit.score) for hit in leg] for leg in legs]
    chunk_scores = _combine(pairs, method, rrf_k, weights)
    if document_of is None:
        ranked = sorted(chunk_scores.items(), key=lambda item: (-item[1], item[0]))
        return [Hit(chunk_id, score) for chunk_id, score in ranked]
    doc_legs: list[list[tuple[str, float]]] = []
    for leg in pairs:
        best: dict[str, float] = {}
        for chunk_id, score in leg:
            document = document_of(chunk_id)
            if document is not None and document not in best:
                best[document] = score
        doc_legs.append(list(best.items()))
    doc_scores = _combine(doc_legs, method, rrf_k, weights)
    order = {
        d: r for r, (d, _) in enumerate(sorted(doc_scores.items(), key=lambda i: (-i[1], i[0])))
    }

    def place(item: tuple[int, float]) -> tuple[int, float, int]:
        document = document_of(item[0])
        return (order.get(document, len(order)) if document else len(order), -item[1], item[0])

    return [
        Hit(chunk_id, doc_scores.get(document_of(chunk_id) or "", 0.0))
        for chunk_id, _ in sorted(chunk_scores.items(), key=place)
    ]


def _cap(hits: Sequence[Hit], documents: dict[int, str], per_document: int) -> list[Hit]:
    """The hits in order, at most ``per_document`` of any one document."""
    counts: dict[str, int] = {}
    kept = []
    for hit in hits:
        document = documents.get(hit.chunk_id, "")
        counts[document] = counts.get(document, 0) + 1
        if counts[document] <= per_document:
            kept.append(hit)
    return kept


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
        reranker: Reranker | None = None,
        *,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.store = store
        self.embedder = embedder
        self.reranker = reranker
        # Called with (mode, seconds) after each search (metrics).
        self.observe = observe

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
        per_document: int | None = None,
    ) -> SearchResult:
        """The ``top_k`` best chunks for the query; with ``per_document``, at most that many
        of any one document (``1``: a ranking of documents, each by its best chunk)."""
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
            settings = self.settings
            candidates = max(settings.candidates, k)
            vector_hits: list[Hit] = []
            text_hits: list[Hit] = []
            if mode is not SearchMode.TEXT:
                vector_hits = await self.store.vector_search(db, vector, ids, candidates)
            if mode is not SearchMode.VECTOR:
                text_hits = await self.store.text_search(db, query, ids, candidates)
            documents: dict[int, str] = {}
            if per_document is not None or (mode is SearchMode.HYBRID and settings.fuse_documents):
                found = {hit.chunk_id for hit in vector_hits} | {hit.chunk_id for hit in text_hits}
                documents = await repo.documents_of_chunks(db, sorted(found))
            if mode is SearchMode.HYBRID:
                hits = fuse_ranked(
                    [vector_hits, text_hits],
                    document_of=documents.get if settings.fuse_documents else None,
                    method=settings.fusion,
                    rrf_k=settings.rrf_k,
                    weights=(settings.vector_weight, 1.0),
                )
            else:
                hits = vector_hits or text_hits
            if per_document is not None:
                hits = _cap(hits, documents, per_document)
            reranking = self.reranker is not None and len(hits) > 1
            hits = hits[: max(k, settings.rerank.candidates) if reranking else k]
            result.timings["search_ms"] = (time.perf_counter() - t1) * 1000
            rows = await repo.chunks_by_id(db, owner_id, [hit.chunk_id for hit in hits])
            pages = await repo.page_starts(db, [row.document_id for row in rows])
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
                    page=page_of(pages.get(row.document_id), row.start),
                )
            )
        if reranking:
            await self._rerank(result)
        result.chunks = result.chunks[:k]
        result.timings["total_ms"] = (time.perf_counter() - started) * 1000
        if self.observe is not None:
            self.observe(mode.value, result.timings["total_ms"] / 1000)
        return result

    async def _rerank(self, result: SearchResult) -> None:
        """Reorder the candidates by the reranker's scores, or leave them in the fused order
        with a warning when it fails."""
        assert self.reranker is not None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.rerank.timeout):
                scores = await self.reranker.scores(result.query, [c.text for c in result.chunks])
            if len(scores) != len(result.chunks):
                raise RerankFailed(f"{len(scores)} scores for {len(result.chunks)} passages")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            logger.warning("reranking failed, the fused order stands: %s", reason)
            result.warnings.append(f"reranking failed, the fused order stands: {reason}")
            return
        finally:
            result.timings["rerank_ms"] = (time.perf_counter() - started) * 1000
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        chunks = result.chunks
        result.chunks = [
            dataclasses.replace(chunks[i], score=scores[i])
            if math.isfinite(scores[i])
            else chunks[i]
            for i in order
        ]
