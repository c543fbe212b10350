"""The in-memory IVF index that large SQLite collections are searched through: its recall
against exact search, and that a search never answers from an index behind the latest write."""

from __future__ import annotations

import numpy as np

from streamforge.components import Components
from streamforge.stores.ivf import IVFIndex
from streamforge.stores.sqlite import SQLiteChunkStore
from tests.conftest import AppFactory, asgi_client
from tests.polling import eventually
from tests.rag_support import create_collection, ingest, markdown_bytes


def clustered(n: int, d: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d)).astype(np.float32)
    points = centres[rng.integers(0, 40, n)] + 0.9 * rng.standard_normal((n, d)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def test_ivf_recall_against_exact_search() -> None:
    vectors = clustered(8_000, 48)
    ids = np.arange(100, 100 + len(vectors), dtype=np.int64)
    index = IVFIndex.build(7, ids, vectors)
    assert len(index) == len(vectors) and index.version == 7
    assert len(index.centroids) == int(np.sqrt(len(vectors)))
    rng = np.random.default_rng(2)
    found = 0
    for row in rng.choice(len(vectors), 100, replace=False):
        query = vectors[row] + 0.05 * rng.standard_normal(48).astype(np.float32)
        query /= np.linalg.norm(query)
        exact = set((ids[np.argsort(-(vectors @ query))[:10]]).tolist())
        hits = index.search(query, 10, probes=16)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        found += len(exact & {h.chunk_id for h in hits})
    assert found / 1000 >= 0.95
    # Probing every cell is exact search.
    query = vectors[0]
    every = index.search(query, 10, probes=len(index.centroids))
    assert [h.chunk_id for h in every] == ids[np.argsort(-(vectors @ query))[:10]].tolist()


async def test_large_collections_use_the_index_and_never_a_stale_one(
    app_factory: AppFactory,
) -> None:
    app = app_factory(
        retrieval={"ivf_min_vectors": 20, "ivf_probes": 1000},
        ingestion={"chunk_size": 100, "chunk_overlap": 0},
    )
    async with asgi_client(app) as client:
        components: Components = app.state.components
        store = components.store
        assert isinstance(store, SQLiteChunkStore)
        collection = await create_collection(client, "big")
        paragraphs = [
            f"Paragraph {i} is about topic{i}, with a few more common words to fill it out."
            for i in range(40)
        ]
        await ingest(client, components, "big", "many.md", markdown_bytes("Many", paragraphs))
        # The first search finds the collection large, answers exactly and starts a build.
        first = await client.post("/search", json={"query": "topic7", "mode": "vector"})
        assert first.status_code == 200
        await eventually(
            lambda: store.index_of(collection["id"], 384),
            until=lambda index: index is not None,
            timeout=10,
            what="the IVF index build",
        )
        index = store.index_of(collection["id"], 384)
        assert index is not None and len(index) >= 20
        indexed = await client.post("/search", json={"query": "topic7", "mode": "vector"})
        exact_hits = first.json()["results"]
        indexed_hits = indexed.json()["results"]
        # The same answer (chunks of equal score may come in another order).
        assert indexed_hits[0]["chunk_id"] == exact_hits[0]["chunk_id"]
        assert [round(r["score"], 5) for r in indexed_hits] == [
            round(r["score"], 5) for r in exact_hits
        ]

        # A new document makes the index stale: it is found at once, through exact search.
        await ingest(client, components, "big", "new.md", markdown_bytes("New", ["zebra42"]))
        fresh = await client.post("/search", json={"query": "zebra42", "mode": "vector"})
        assert fresh.json()["results"][0]["document_name"] == "new.md"
