"""Search over chunks: full-text, vector and hybrid, filtered by collection, on SQLite and on
PostgreSQL with pgvector; reciprocal rank fusion; the LangChain retriever."""

from __future__ import annotations

from typing import Any

import httpx

from streamforge.chains.rag import StreamForgeRetriever
from streamforge.components import Components
from streamforge.models.base import LOCAL_OWNER
from streamforge.services.retrieval import SearchMode, fuse
from streamforge.stores import Hit, search_terms
from tests.conftest import AppFactory, asgi_client
from tests.rag_support import BEES, BREAD, ROUTER, TIDES, create_collection, ingest, markdown_bytes


async def seed(client: httpx.AsyncClient, components: Components) -> dict[str, str]:
    await create_collection(client, "garden")
    await create_collection(client, "kitchen")
    ids = {}
    for collection, name, text in (
        ("garden", "bees.md", BEES),
        ("garden", "tides.md", TIDES),
        ("kitchen", "bread.md", BREAD),
        ("kitchen", "router.md", ROUTER),
    ):
        document = await ingest(client, components, collection, name, markdown_bytes(name, [text]))
        assert document["status"] == "ready"
        ids[name] = document["id"]
    return ids


async def search(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/search", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_search_modes_and_filters(app_factory: AppFactory, rag_database_url: str) -> None:
    app = app_factory(rag_database_url)
    async with asgi_client(app) as client:
        ids = await seed(client, app.state.components)

        for mode in ("text", "vector", "hybrid"):
            found = await search(client, query="E-4471 firmware", mode=mode, top_k=3)
            assert found["mode"] == mode
            top = found["results"][0]
            assert top["document_id"] == ids["router.md"], mode
            assert top["document_name"] == "router.md"
            assert top["rank"] == 1
            assert "E-4471" in top["text"]
            assert top["end"] - top["start"] == len(top["text"])
            assert len(found["results"]) <= 3
            scores = [r["score"] for r in found["results"]]
            assert scores == sorted(scores, reverse=True)

        # Stemming: "fermenting loaves" meets "fermentation" and "loaf".
        stemmed = await search(client, query="fermenting loaves", mode="text")
        assert stemmed["results"][0]["document_id"] == ids["bread.md"]

        only_garden = await search(client, query="E-4471 firmware hive", collections=["garden"])
        assert {r["document_id"] for r in only_garden["results"]} <= {
            ids["bees.md"],
            ids["tides.md"],
        }
        assert only_garden["results"][0]["document_id"] == ids["bees.md"]

        nothing = await search(client, query="zzzz qqqq", mode="text")
        assert nothing["results"] == []
        # Words that look like FTS syntax are just words.
        syntax = await search(client, query='"unbalanced AND OR NEAR( * hive -', mode="text")
        assert syntax["results"][0]["document_id"] == ids["bees.md"]

        unknown = await client.post("/search", json={"query": "x", "collections": ["nope"]})
        assert unknown.status_code == 404
        bad = await client.post("/search", json={"query": "x", "mode": "fuzzy"})
        assert bad.status_code == 422
        empty = await client.post("/search", json={"query": ""})
        assert empty.status_code == 422


async def test_retriever_is_a_langchain_retriever(
    app_factory: AppFactory, rag_database_url: str
) -> None:
    app = app_factory(rag_database_url)
    async with asgi_client(app) as client:
        components: Components = app.state.components
        ids = await seed(client, components)
        retriever = StreamForgeRetriever(
            service=components.retrieval, owner_id=LOCAL_OWNER, collections=["garden"], top_k=1
        )
        documents = await retriever.ainvoke("sea stars tube feet")
        assert len(documents) == 1
        assert documents[0].metadata["document_id"] == ids["tides.md"]
        assert "tube feet" in documents[0].page_content


async def test_search_without_collections_is_empty(app_factory: AppFactory) -> None:
    app = app_factory()
    async with asgi_client(app) as client:
        found = await search(client, query="anything")
        assert found["results"] == []
        components: Components = app.state.components
        result = await components.retrieval.search(LOCAL_OWNER, "x", mode=SearchMode.VECTOR)
        assert result.chunks == []


def test_reciprocal_rank_fusion() -> None:
    vector = [Hit(1, 0.9), Hit(2, 0.8), Hit(3, 0.7)]
    text = [Hit(3, 12.0), Hit(4, 11.0), Hit(1, 3.0)]
    fused = fuse([vector, text], 10, 60)
    # 1: 1/61 + 1/63; 3: 1/63 + 1/61 — a tie broken by id; 2: 1/62; 4: 1/62.
    assert [hit.chunk_id for hit in fused] == [1, 3, 2, 4]
    assert fused[0].score == 1 / 61 + 1 / 63
    assert [hit.chunk_id for hit in fuse([vector, text], 2, 60)] == [1, 3]
    assert fuse([[], []], 5, 60) == []


def test_search_terms() -> None:
    assert search_terms('Reset "the" router: AND OR the-router') == ["reset", "router"]
    assert search_terms("what is it") == ["what", "is", "it"]
    assert len(search_terms(" ".join(f"w{i}" for i in range(500)))) == 64


async def test_per_document_ranks_documents(app_factory: AppFactory) -> None:
    app = app_factory()
    async with asgi_client(app) as client:
        await create_collection(client, "long")
        paragraphs = [f"Hives and bees, part {i}. " + BEES for i in range(6)]
        long = await ingest(
            client, app.state.components, "long", "bees.md", markdown_bytes("Bees", paragraphs)
        )
        short = await ingest(
            client, app.state.components, "long", "tides.md", markdown_bytes("T", [TIDES])
        )
        assert long["chunk_count"] > 1
        for mode in ("text", "vector", "hybrid"):
            every = await search(client, query="bees hives tide pools", mode=mode, top_k=10)
            names = [r["document_name"] for r in every["results"]]
            assert names.count("bees.md") > 1, mode
            ranked = await search(
                client, query="bees hives tide pools", mode=mode, top_k=10, per_document=1
            )
            assert sorted(r["document_id"] for r in ranked["results"]) == sorted(
                [long["id"], short["id"]]
            )
        bad = await client.post("/search", json={"query": "x", "per_document": 0})
        assert bad.status_code == 422


def test_fusion_of_documents_counts_a_document_once_per_leg() -> None:
    from streamforge.services.retrieval import fuse_ranked

    documents = {1: "a", 2: "a", 3: "b", 4: "c"}
    by_vector = [Hit(1, 0.9), Hit(2, 0.8), Hit(4, 0.7)]
    by_text = [Hit(3, 9.0), Hit(2, 8.0), Hit(4, 1.0)]
    chunks = fuse_ranked([by_vector, by_text], rrf_k=1)
    assert chunks[0].chunk_id == 2  # found by both legs
    fused = fuse_ranked([by_vector, by_text], rrf_k=1, document_of=documents.get)
    # Document a is first in one leg and second in the other, through different chunks.
    assert [documents[hit.chunk_id] for hit in fused][:2] == ["a", "a"]
    weighted = fuse_ranked([by_vector, by_text], method="zscore", weights=(0.0, 1.0))
    assert [hit.chunk_id for hit in weighted][:2] == [3, 2]
