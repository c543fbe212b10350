"""``streamforge eval``: ingest the labelled corpus, run its queries, score each search mode.

Everything goes through the server's own components — ``DocumentService`` ingests the corpus
exactly as an upload would, and ``RetrievalService.search`` answers each query exactly as
``POST /search`` does — so the numbers describe what users get.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streamforge.components import Components
from streamforge.config.settings import Settings
from streamforge.errors import Conflict
from streamforge.evaluation.metrics import Retrieved, Span, ndcg_at, recall_at
from streamforge.models.base import LOCAL_OWNER
from streamforge.services.retrieval import SearchMode

DATA = Path(__file__).resolve().parent / "data"
CORPUS = DATA / "corpus"
QUERIES = DATA / "queries.jsonl"
COLLECTION = "streamforge-eval"


@dataclass(frozen=True, slots=True)
class Judged:
    id: str
    query: str
    kind: str
    relevant: list[tuple[str, str]]  # (document name, evidence text)


@dataclass(slots=True)
class ModeScore:
    mode: str
    ndcg: float
    recall: float
    latency_p50_ms: float
    by_kind: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(slots=True)
class Report:
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
                    "latency_p50_ms": round(s.latency_p50_ms, 2),
                    "by_kind": {
                        kind: {f"ndcg@{self.k}": round(n, 4), f"recall@{self.k}": round(r, 4)}
                        for kind, (n, r) in sorted(s.by_kind.items())
                    },
                }
                for s in self.scores
            },
        }


def load_queries(path: Path) -> list[Judged]:
    judged = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        judged.append(
            Judged(
                id=row["id"],
                query=row["query"],
                kind=row.get("kind", "unknown"),
                relevant=[(r["document"], r["evidence"]) for r in row["relevant"]],
            )
        )
    return judged


Progress = Callable[[str, int, int], None]


async def evaluate(
    settings: Settings,
    *,
    corpus: Path = CORPUS,
    queries: Path = QUERIES,
    k: int = 10,
    modes: tuple[SearchMode, ...] = (SearchMode.TEXT, SearchMode.VECTOR, SearchMode.HYBRID),
    progress: Progress | None = None,
) -> Report:
    files = await asyncio.to_thread(_corpus_files, corpus)
    judged = await asyncio.to_thread(load_queries, queries)
    components = await Components.start(settings)
    try:
        documents = components.documents
        with contextlib.suppress(Conflict):  # there from an earlier run on this database
            await documents.create_collection(LOCAL_OWNER, COLLECTION)
        started = time.perf_counter()
        ids: dict[str, str] = {}
        for index, path in enumerate(files, start=1):
            data = await asyncio.to_thread(path.read_bytes)
            upload = await documents.upload(LOCAL_OWNER, COLLECTION, path.name, data)
            ids[path.name] = upload.document.id
            if progress:
                progress("upload", index, len(files))
        await documents.wait_idle()
        ingest_seconds = time.perf_counter() - started
        texts: dict[str, str] = {}
        chunks = 0
        for name, document_id in ids.items():
            document = await documents.get_document(LOCAL_OWNER, document_id)
            if document.status != "ready":
                raise RuntimeError(f"{name} did not ingest: {document.error}")
            texts[name] = await documents.document_text(LOCAL_OWNER, document_id)
            chunks += document.chunk_count
        spans = {q.id: _spans(q, texts) for q in judged}

        scores = []
        for mode in modes:
            ndcgs: dict[str, list[float]] = {}
            recalls: dict[str, list[float]] = {}
            latencies = []
            for index, query in enumerate(judged, start=1):
                t0 = time.perf_counter()
                result = await components.retrieval.search(
                    LOCAL_OWNER, query.query, collections=[COLLECTION], top_k=k, mode=mode
                )
                latencies.append((time.perf_counter() - t0) * 1000)
                retrieved = [Retrieved(c.document_name, c.start, c.end) for c in result.chunks]
                for key in ("all", query.kind):
                    ndcgs.setdefault(key, []).append(ndcg_at(retrieved, spans[query.id], k))
                    recalls.setdefault(key, []).append(recall_at(retrieved, spans[query.id], k))
                if progress:
                    progress(mode.value, index, len(judged))
            scores.append(
                ModeScore(
                    mode=mode.value,
                    ndcg=statistics.fmean(ndcgs["all"]),
                    recall=statistics.fmean(recalls["all"]),
                    latency_p50_ms=statistics.median(latencies),
                    by_kind={
                        kind: (statistics.fmean(ndcgs[kind]), statistics.fmean(recalls[kind]))
                        for kind in ndcgs
                        if kind != "all"
                    },
                )
            )
        return Report(
            embedder=components.embeddings.name,
            backend=components.store.backend,
            documents=len(files),
            chunks=chunks,
            queries=len(judged),
            k=k,
            ingest_seconds=ingest_seconds,
            scores=scores,
        )
    finally:
        await components.stop()


def _corpus_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.iterdir() if p.is_file() and not p.name.startswith("."))


def _spans(query: Judged, texts: dict[str, str]) -> list[Span]:
    spans = []
    for document, evidence in query.relevant:
        text = texts.get(document)
        if text is None:
            raise ValueError(f"query {query.id}: no document {document!r} in the corpus")
        start = text.find(evidence)
        if start < 0:
            raise ValueError(f"query {query.id}: evidence not found in {document!r}")
        spans.append(Span(document, start, start + len(evidence)))
    return spans
