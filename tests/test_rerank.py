"""Reranking as a stage of retrieval, against a loopback rerank server of the Cohere shape
(the shape LiteLLM's proxy and llama.cpp's server answer too)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from streamforge.services.rerank import parse_scores
from tests.conftest import AppFactory, live_server
from tests.polling import eventually
from tests.rag_support import create_collection, ingest, markdown_bytes
from tests.sse_client import read_chat
from tests.test_chat_stream import ProbeProvider

PASSAGES = {
    "alpha.md": "Hives are inspected every ten days in spring by the beekeeper.",
    "beta.md": "A hive entrance faces away from the wind; beekeepers inspect hives often.",
    "gamma.md": "Beekeepers in spring inspect hives and check the queen of each hive.",
}


class RerankServer:
    """Scores each passage by the position of its document in ``preferred`` (first is
    best); or fails with ``status``, or answers after ``delay`` seconds."""

    def __init__(self) -> None:
        self.preferred: list[str] = []
        self.status = 200
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/v1/rerank", self.rerank, methods=["POST"])])

    async def rerank(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        await asyncio.sleep(self.delay)
        if self.status != 200:
            return JSONResponse({"message": "overloaded"}, status_code=self.status)
        results = []
        for index, text in enumerate(body["documents"]):
            rank = next((i for i, name in enumerate(self.preferred) if PASSAGES[name] in text), 99)
            results.append({"index": index, "relevance_score": 1.0 / (1 + rank)})
        results.sort(key=lambda item: -item["relevance_score"])
        return JSONResponse({"id": "r1", "results": results[: body.get("top_n")]})


@asynccontextmanager
async def serving(server: RerankServer) -> AsyncIterator[str]:
    config = uvicorn.Config(server.app, host="127.0.0.1", port=0, log_level="warning")
    running = uvicorn.Server(config)
    task = asyncio.create_task(running.serve())

    def started() -> bool:
        if task.done():
            task.result()
            raise RuntimeError("the rerank server stopped before it started")
        return running.started

    await eventually(started, timeout=30, interval=0.01, what="the rerank server starting")
    port = running.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1/rerank"
    finally:
        running.should_exit = True
        await asyncio.wait_for(task, timeout=10)


async def seed(client: httpx.AsyncClient, components: Any) -> dict[str, str]:
    await create_collection(client, "bees")
    ids = {}
    for name, text in PASSAGES.items():
        document = await ingest(client, components, "bees", name, markdown_bytes(name, [text]))
        ids[document["id"]] = name
    return ids


def test_parse_scores_reads_the_vendor_shapes() -> None:
    cohere = {
        "results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}]
    }
    assert parse_scores(cohere, 2) == [0.1, 0.9]
    jina_like = {"data": [{"index": 0, "score": 2}]}
    assert parse_scores(jina_like, 2) == [2.0, float("-inf")]  # left out by top_n: last
    for bad in ({}, {"results": [{"index": 5, "relevance_score": 1}]}, {"results": [{"index": 0}]}):
        with pytest.raises(ValueError):
            parse_scores(bad, 2)


async def test_the_order_follows_the_reranker_and_so_do_the_sources(
    app_factory: AppFactory,
) -> None:
    vendor = RerankServer()
    async with serving(vendor) as url:
        app = app_factory(retrieval={"rerank": {"provider": "http", "url": url, "model": "rr"}})
        async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
            names = await seed(client, server.components)
            query = {"query": "how often do beekeepers inspect hives", "collections": ["bees"]}
            for preferred in (
                ["gamma.md", "alpha.md", "beta.md"],
                ["beta.md", "gamma.md", "alpha.md"],
            ):
                vendor.preferred = preferred
                found = (await client.post("/search", json=query)).json()
                assert [names[r["document_id"]] for r in found["results"]] == preferred
                assert found["warnings"] == []
                assert "rerank_ms" in found["timings"]
            sent = vendor.requests[-1]
            assert sent["model"] == "rr" and sent["query"] == query["query"]
            assert sorted(sent["documents"]) == sorted(r["text"] for r in found["results"])

            probe = ProbeProvider(["ok"], delay=0)
            server.components.providers.register(probe)
            vendor.preferred = ["alpha.md", "gamma.md", "beta.md"]
            stream = await read_chat(
                client,
                {
                    "message": query["query"],
                    "provider": "probe",
                    "rag": {"collections": ["bees"], "top_k": 2},
                },
            )
            sources = stream.typed("sources")[0]["sources"]
            assert [names[s["document_id"]] for s in sources] == ["alpha.md", "gamma.md"]


async def test_a_failing_reranker_leaves_the_fused_order_with_a_warning(
    app_factory: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    vendor = RerankServer()
    async with serving(vendor) as url:
        app = app_factory(retrieval={"rerank": {"provider": "http", "url": url, "timeout": 0.5}})
        async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
            await seed(client, server.components)
            query = {"query": "how often do beekeepers inspect hives", "collections": ["bees"]}
            retrieval = server.components.retrieval
            reranker, retrieval.reranker = retrieval.reranker, None
            fused = (await client.post("/search", json=query)).json()["results"]
            retrieval.reranker = reranker
            for status, delay in ((503, 0.0), (200, 2.0)):
                vendor.status, vendor.delay = status, delay
                with caplog.at_level(logging.WARNING, logger="streamforge.services.retrieval"):
                    response = await client.post("/search", json=query)
                assert response.status_code == 200
                body = response.json()
                assert [r["chunk_id"] for r in body["results"]] == [r["chunk_id"] for r in fused]
                assert body["warnings"] and "reranking failed" in body["warnings"][0]
                assert "reranking failed" in caplog.text
            stream = await read_chat(
                client,
                {"message": query["query"], "provider": "simulated", "rag": ["bees"]},
            )
            assert not stream.typed("error")
            assert stream.typed("sources") and stream.done
