"""How the retrieval defaults were chosen: fusion, depth, and how chunks rank documents,
scored on several test collections at once.

Phase one (``gather``) ingests a collection through ``DocumentService`` exactly as uploads
are ingested, then runs both legs of every query through the store (``DEPTH`` chunks each,
as ``RetrievalService.search`` calls them) and saves them with each chunk's document and
span to a JSON file. Phase two (``score``) re-ranks those legs offline under every setting
of the grid and prints nDCG@10 at the document level (and at the passage level for the
shipped set), so a setting is judged on all the collections together.

    python benchmarks/retrieval_sweep.py gather ../shared/ir/cisi --out cisi-800.json \\
        --chunk-size 800
    python benchmarks/retrieval_sweep.py score cisi-800.json cacm-800.json shipped-800.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from streamforge.components import Components
from streamforge.config.settings import Settings
from streamforge.evaluation.collections import document_set, load, passage_spans
from streamforge.evaluation.metrics import (
    Retrieved,
    Span,
    document_ndcg_at,
    ndcg_at,
)
from streamforge.models.base import LOCAL_OWNER
from streamforge.repositories import documents as repo
from streamforge.services.retrieval import fuse_ranked
from streamforge.stores import Hit

DEPTH = 200
COLLECTION = "sweep"


async def gather(ref: str, out: Path, chunk_size: int, chunk_overlap: int) -> None:
    collection = load(ref)
    with tempfile.TemporaryDirectory(prefix="sf-sweep-") as scratch:
        settings = Settings(
            data_dir=Path(scratch),
            llm={"provider": "simulated"},
            embeddings={"provider": "local"},
            ingestion={"chunk_size": chunk_size, "chunk_overlap": chunk_overlap},
        )
        components = await Components.start(settings)
        try:
            documents = components.documents
            await documents.create_collection(LOCAL_OWNER, COLLECTION)
            started = time.perf_counter()
            ids = {}
            for name, data in collection.files:
                upload = await documents.upload(LOCAL_OWNER, COLLECTION, name, data)
                ids[name] = upload.document.id
            await documents.wait_idle()
            seconds = time.perf_counter() - started
            print(
                f"{collection.name}: ingested {len(ids)} documents in {seconds:.1f} s", flush=True
            )
            texts = {}
            if collection.passages:
                texts = {n: await documents.document_text(LOCAL_OWNER, i) for n, i in ids.items()}
            chosen = (await components.retrieval.collections(LOCAL_OWNER, [COLLECTION]))[0].id
            queries = []
            chunk_ids: set[int] = set()
            for query in collection.queries:
                vector = await components.embeddings.embed_query(query.query)
                async with components.database.read() as db:
                    by_vector = await components.store.vector_search(db, vector, [chosen], DEPTH)
                    by_text = await components.store.text_search(db, query.query, [chosen], DEPTH)
                chunk_ids.update(h.chunk_id for h in by_vector + by_text)
                queries.append(
                    {
                        "id": query.id,
                        "documents": sorted(document_set(query)),
                        "spans": [[s.document, s.start, s.end] for s in passage_spans(query, texts)]
                        if collection.passages
                        else [],
                        "vector": [[h.chunk_id, h.score] for h in by_vector],
                        "text": [[h.chunk_id, h.score] for h in by_text],
                    }
                )
            async with components.database.read() as db:
                rows = await repo.chunks_by_id(db, LOCAL_OWNER, sorted(chunk_ids))
            chunks = {row.id: [row.document_name, row.start, row.end] for row in rows}
        finally:
            await components.stop()
    await asyncio.to_thread(
        out.write_text,
        json.dumps(
            {
                "collection": collection.name,
                "chunk_size": chunk_size,
                "ingest_seconds": round(seconds, 1),
                "passages": collection.passages,
                "chunks": chunks,
                "queries": queries,
            }
        ),
    )


Ranker = Callable[[list[tuple[int, float]], list[tuple[int, float]], dict[int, str]], list[int]]


def _ranker(setting: dict[str, Any]) -> Ranker:
    def rank(
        vector: list[tuple[int, float]], text: list[tuple[int, float]], docs: dict[int, str]
    ) -> list[int]:
        depth = setting["depth"]
        legs = [[Hit(i, v) for i, v in leg[:depth]] for leg in (vector, text)]
        return [
            hit.chunk_id
            for hit in fuse_ranked(
                legs,
                document_of=docs.get if setting["by_document"] else None,
                method=setting["method"],
                rrf_k=setting["rrf_k"],
                weights=(setting["w_vector"], 1.0),
            )
        ]

    return rank


def grid() -> list[dict[str, Any]]:
    settings: list[dict[str, Any]] = []
    for by_document in (False, True):
        for depth in (10, 20, 50, 100, 200):
            for k in (5, 10, 20, 60):
                for w in (1.0, 1.5, 2.0):
                    settings.append(
                        {
                            "method": "rrf",
                            "by_document": by_document,
                            "depth": depth,
                            "rrf_k": k,
                            "w_vector": w,
                        }
                    )
            for w in (0.5, 1.0, 1.5, 2.0):
                for method in ("minmax", "zscore"):
                    settings.append(
                        {
                            "method": method,
                            "by_document": by_document,
                            "depth": depth,
                            "rrf_k": 60,
                            "w_vector": w,
                        }
                    )
    return settings


def _label(s: dict[str, Any]) -> str:
    level = "doc" if s["by_document"] else "chunk"
    k = f" k={s['rrf_k']}" if s["method"] == "rrf" else ""
    return f"{s['method']}{k} depth={s['depth']} w_vec={s['w_vector']} fuse={level}"


def score(paths: Sequence[Path], top: int) -> None:
    sets = [json.loads(p.read_text()) for p in paths]
    rows: list[tuple[str, list[float]]] = []
    columns: list[str] = []
    for data in sets:
        columns.append(f"{data['collection']}-{data['chunk_size']} doc")
        if data["passages"]:
            columns.append(f"{data['collection']}-{data['chunk_size']} passage")

    def evaluate(rank: Callable[[Any, Any, dict[int, str]], list[int]], cap: int) -> list[float]:
        values = []
        for data in sets:
            chunks = {int(i): c for i, c in data["chunks"].items()}
            docs = {i: c[0] for i, c in chunks.items()}
            doc_scores, passage_scores = [], []
            for q in data["queries"]:
                ranked = rank(q["vector"], q["text"], docs)
                retrieved = [Retrieved(*chunks[i]) for i in ranked]
                seen: dict[str, None] = {}
                for item in retrieved:
                    seen.setdefault(item.document, None)
                doc_scores.append(document_ndcg_at(list(seen), set(q["documents"])))
                if data["passages"]:
                    capped, count = [], {}  # at most ``cap`` chunks of a document
                    for item in retrieved:
                        count[item.document] = count.get(item.document, 0) + 1
                        if count[item.document] <= cap:
                            capped.append(item)
                    spans = [Span(*s) for s in q["spans"]]
                    passage_scores.append(ndcg_at(capped, spans))
            values.append(statistics.fmean(doc_scores))
            if data["passages"]:
                values.append(statistics.fmean(passage_scores))
        return values

    singles = {
        "text": lambda v, t, d: [i for i, _ in t],
        "vector": lambda v, t, d: [i for i, _ in v],
    }
    for name, rank in singles.items():
        rows.append((name, evaluate(rank, 100)))
    for setting in grid():
        rows.append((_label(setting), evaluate(_ranker(setting), 100)))
    header = "setting".ljust(52) + " ".join(c.rjust(18) for c in columns)
    print(header)
    for name, values in rows[:2]:
        print(name.ljust(52) + " ".join(f"{v:18.4f}" for v in values))
    # Ranked by the worst margin over the better single mode, across the columns.
    best = [max(a, b) for a, b in zip(rows[0][1], rows[1][1], strict=True)]
    ranked = sorted(rows[2:], key=lambda r: -min(v - b for v, b in zip(r[1], best, strict=True)))
    for name, values in ranked[:top]:
        margin = min(v - b for v, b in zip(values, best, strict=True))
        print(
            name.ljust(52) + " ".join(f"{v:18.4f}" for v in values) + f"   min margin {margin:+.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gather")
    g.add_argument("collection")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--chunk-size", type=int, default=800)
    g.add_argument("--chunk-overlap", type=int, default=120)
    s = sub.add_parser("score")
    s.add_argument("files", nargs="+", type=Path)
    s.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    if args.command == "gather":
        asyncio.run(gather(args.collection, args.out, args.chunk_size, args.chunk_overlap))
    else:
        score(args.files, args.top)


if __name__ == "__main__":
    main()
