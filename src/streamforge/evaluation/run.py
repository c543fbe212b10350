"""``streamforge eval``: ingest a test collection, run its queries, score each search mode.

Everything goes through the server's own components — ``DocumentService`` ingests the corpus
exactly as an upload would, and ``RetrievalService.search`` answers each query exactly as
``POST /search`` does — so the numbers describe what users get.

Two levels are scored. At the document level a document counts once however many of its
chunks come back: the search is asked for ``k`` documents (``per_document=1``: each
document's best chunk). At the passage level (collections that judge passages, such as the
shipped set) the search returns ``k`` chunks and a chunk counts when it overlaps a judged
passage (``metrics.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streamforge.components import Components
from streamforge.config.settings import Settings
from streamforge.errors import Conflict
from streamforge.evaluation.collections import (
    Judged,
    TestCollection,
    document_set,
    load_shipped,
    passage_spans,
)
from streamforge.evaluation.metrics import (
    Retrieved,
    Span,
    document_ndcg_at,
    document_recall_at,
    ndcg_at,
    recall_at,
)
from streamforge.models.base import LOCAL_OWNER
from streamforge.services.retrieval import SearchMode

DATA = Path(__file__).resolve().parent / "data"
CORPUS = DATA / "corpus"
QUERIES = DATA / "queries.jsonl"
COLLECTION = "streamforge-eval"


@dataclass(slots=True)
class ModeScore:
    mode: str
    ndcg: float  # at the document level
    recall: float
    latency_p50_ms: float
    by_kind: dict[str, tuple[float, float]] = field(default_factory=dict)
    # At the passage level, when the collection judges passages.
    passage_ndcg: float | None = None
    passage_recall: float | None = None


@dataclass(slots=True)
class Report:
    collection: str
    embedder: str
    backend: str
    documents: int
    chunks: int
    queries: int
    k: int
    ingest_seconds: float
    scores: list[ModeScore]

    def as_dict(self) -> dict[str, object]:
        return {
            "collection": self.collection,
            "embedder": self.embedder,
            "backend": self.backend,
            "documents": self.documents,
            "chunks": self.chunks,
            "queries": self.queries,
            "k": self.k,
            "ingest_seconds": round(self.ingest_seconds, 2),
            "modes": {
                s.mode: {
                    f"ndcg@{self.k}": round(s.ndcg, 4),
                    f"recall@{self.k}": round(s.recall, 4),
                    **(
                        {
                            f"passage_ndcg@{self.k}": round(s.passage_ndcg, 4),
                            f"passage_recall@{self.k}": round(s.passage_recall or 0.0, 4),
                        }
                        if s.passage_ndcg is not None
                        else {}
                    ),
                    "latency_p50_ms": round(s.latency_p50_ms, 2),
                    "by_kind": {
                        kind: {f"ndcg@{self.k}": round(n, 4), f"recall@{self.k}": round(r, 4)}
                        for kind, (n, r) in sorted(s.by_kind.items())
                    },
                }
                for s in self.scores
            },
        }


Progress = Callable[[str, int, int], None]


async def evaluate(
    settings: Settings,
    *,
    collection: TestCollection | None = None,
    k: int = 10,
    modes: tuple[SearchMode, ...] = (SearchMode.TEXT, SearchMode.VECTOR, SearchMode.HYBRID),
    progress: Progress | None = None,
) -> Report:
    if collection is None:
        collection = await asyncio.to_thread(load_shipped)
    components = await Components.start(settings)
    try:
        documents = components.documents
        with contextlib.suppress(Conflict):  # there from an earlier run on this database
            await documents.create_collection(LOCAL_OWNER, COLLECTION)
        started = time.perf_counter()
        ids: dict[str, str] = {}
        for index, (name, data) in enumerate(collection.files, start=1):
            upload = await documents.upload(LOCAL_OWNER, COLLECTION, name, data)
            ids[name] = upload.document.id
            if progress:
                progress("upload", index, len(collection.files))
        await documents.wait_idle()
        ingest_seconds = time.perf_counter() - started
        texts: dict[str, str] = {}
        chunks = 0
        for name, document_id in ids.items():
            document = await documents.get_document(LOCAL_OWNER, document_id)
            if document.status != "ready":
                # An empty document of a public collection fails as it would for a user.
                if collection.passages:
                    raise RuntimeError(f"{name} did not ingest: {document.error}")
                continue
            if collection.passages:
                texts[name] = (await documents.document_text(LOCAL_OWNER, document_id)).text
            chunks += document.chunk_count
        spans = {q.id: passage_spans(q, texts) for q in collection.queries if collection.passages}

        scores = []
        for mode in modes:
            scores.append(
                await _score_mode(components, collection.queries, spans, mode, k, progress)
            )
        return Report(
            collection=collection.name,
            embedder=components.embeddings.name,
            backend=components.store.backend,
            documents=len(collection.files),
            chunks=chunks,
            queries=len(collection.queries),
            k=k,
            ingest_seconds=ingest_seconds,
            scores=scores,
        )
    finally:
        await components.stop()


async def _score_mode(
    components: Components,
    queries: list[Judged],
    spans: dict[str, list[Span]],
    mode: SearchMode,
    k: int,
    progress: Progress | None,
) -> ModeScore:
    ndcgs: dict[str, list[float]] = {}
    recalls: dict[str, list[float]] = {}
    passage_ndcgs: list[float] = []
    passage_recalls: list[float] = []
    latencies = []
    for index, query in enumerate(queries, start=1):
        t0 = time.perf_counter()
        by_document = await components.retrieval.search(
            LOCAL_OWNER, query.query, collections=[COLLECTION], top_k=k, mode=mode, per_document=1
        )
        latencies.append((time.perf_counter() - t0) * 1000)
        ranked = [c.document_name for c in by_document.chunks]
        relevant = document_set(query)
        for key in ("all", query.kind):
            ndcgs.setdefault(key, []).append(document_ndcg_at(ranked, relevant, k))
            recalls.setdefault(key, []).append(document_recall_at(ranked, relevant, k))
        if query.id in spans:
            result = await components.retrieval.search(
                LOCAL_OWNER, query.query, collections=[COLLECTION], top_k=k, mode=mode
            )
            retrieved = [Retrieved(c.document_name, c.start, c.end) for c in result.chunks]
            passage_ndcgs.append(ndcg_at(retrieved, spans[query.id], k))
            passage_recalls.append(recall_at(retrieved, spans[query.id], k))
        if progress:
            progress(mode.value, index, len(queries))
    return ModeScore(
        mode=mode.value,
        ndcg=statistics.fmean(ndcgs["all"]),
        recall=statistics.fmean(recalls["all"]),
        latency_p50_ms=statistics.median(latencies),
        by_kind={
            kind: (statistics.fmean(ndcgs[kind]), statistics.fmean(recalls[kind]))
            for kind in ndcgs
            if kind != "all"
        },
        passage_ndcg=statistics.fmean(passage_ndcgs) if passage_ndcgs else None,
        passage_recall=statistics.fmean(passage_recalls) if passage_recalls else None,
    )
