"""How the fusion settings were chosen: nDCG@10 of reciprocal rank fusion over a grid of
``rrf_k`` and candidate depths, on two halves of the shipped labelled set.

Both legs run once per query (50 candidates each) through the store, exactly as
``RetrievalService.search`` calls them; fusion is then recomputed for each setting. The
setting is chosen on the even-numbered queries and checked on the odd-numbered ones, which
played no part in the choice.

Run from the repository root (all-MiniLM-L6-v2, a temporary SQLite database)::

    python benchmarks/fusion_sweep.py

It prints one table per half, then one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from streamforge.components import Components
from streamforge.config.settings import Settings
from streamforge.evaluation.collections import load_queries
from streamforge.evaluation.collections import passage_spans as _spans
from streamforge.evaluation.metrics import Retrieved, Span, ndcg_at
from streamforge.evaluation.run import COLLECTION, CORPUS, QUERIES
from streamforge.models.base import LOCAL_OWNER
from streamforge.repositories import documents as repo
from streamforge.services.retrieval import fuse
from streamforge.stores import Hit

DEPTH = 50
GRID_K = (5, 10, 20, 60)
GRID_CANDIDATES = (10, 20, 50)

Legs = tuple[list[Span], list[Hit], list[Hit]]


async def gather(scratch: Path) -> tuple[list[Legs], dict[int, Retrieved]]:
    settings = Settings(
        data_dir=scratch, llm={"provider": "simulated"}, embeddings={"provider": "local"}
    )
    components = await Components.start(settings)
    try:
        documents = components.documents
        await documents.create_collection(LOCAL_OWNER, COLLECTION)
        ids = {}
        for path in sorted(CORPUS.glob("*.md")):
            upload = await documents.upload(LOCAL_OWNER, COLLECTION, path.name, path.read_bytes())
            ids[path.name] = upload.document.id
        await documents.wait_idle()
        texts = {name: await documents.document_text(LOCAL_OWNER, i) for name, i in ids.items()}
        collection = (await components.retrieval.collections(LOCAL_OWNER, [COLLECTION]))[0].id
        legs: list[Legs] = []
        chunk_ids: set[int] = set()
        for query in load_queries(QUERIES):
            vector = await components.embeddings.embed_query(query.query)
            async with components.database.read() as db:
                by_vector = await components.store.vector_search(db, vector, [collection], DEPTH)
                by_text = await components.store.text_search(db, query.query, [collection], DEPTH)
            legs.append((_spans(query, texts), by_vector, by_text))
            chunk_ids.update(h.chunk_id for h in by_vector + by_text)
        async with components.database.read() as db:
            rows = await repo.chunks_by_id(db, LOCAL_OWNER, sorted(chunk_ids))
        return legs, {row.id: Retrieved(row.document_name, row.start, row.end) for row in rows}
    finally:
        await components.stop()


def ndcg(legs: list[Legs], chunks: dict[int, Retrieved], rank: Any) -> float:
    scores = [
        ndcg_at([chunks[hit.chunk_id] for hit in rank(v, t)], spans, 10) for spans, v, t in legs
    ]
    return statistics.fmean(scores)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sf-fusion-") as scratch:
        legs, chunks = asyncio.run(gather(Path(scratch)))
    report: dict[str, Any] = {}
    for name, half in (("even (chosen on)", legs[0::2]), ("odd (held out)", legs[1::2])):
        row: dict[str, float] = {
            "text": ndcg(half, chunks, lambda v, t: t[:10]),
            "vector": ndcg(half, chunks, lambda v, t: v[:10]),
        }
        for k in GRID_K:
            for depth in GRID_CANDIDATES:
                row[f"rrf k={k} candidates={depth}"] = ndcg(
                    half, chunks, lambda v, t, k=k, d=depth: fuse([v[:d], t[:d]], 10, k)
                )
        report[name] = {key: round(value, 4) for key, value in row.items()}
        print(f"{name}: {len(half)} queries")
        for key, value in report[name].items():
            print(f"  {key:32} nDCG@10 {value:.4f}")
    print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
