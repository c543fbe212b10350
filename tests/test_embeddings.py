"""Embeddings: all-MiniLM-L6-v2 from its package with no network, the simulated embedder,
and ``POST /v1/embeddings`` through the official openai SDK."""

from __future__ import annotations

import base64
import math
import struct

import numpy as np
import openai
import pytest

from streamforge.chains.embeddings import (
    MINILM_DIMENSIONS,
    SentenceTransformerEmbeddings,
    SimulatedEmbeddings,
    minilm_path,
)
from tests.conftest import AppFactory, asgi_client, live_server
from tests.vendors import OllamaServer, OpenAIServer


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbeddings:
    return SentenceTransformerEmbeddings(minilm_path(), batch_size=16, threads=2)


def test_minilm_loads_offline_and_embeds_meaning(
    minilm: SentenceTransformerEmbeddings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any attempt to reach a hub would fail here.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    vectors = minilm.embed_documents(
        [
            "How do I bake bread at home?",
            "A recipe for making a loaf in your own kitchen.",
            "The stock market fell sharply on Tuesday.",
        ]
    )
    assert all(len(v) == MINILM_DIMENSIONS for v in vectors)
    assert all(math.isclose(float(np.linalg.norm(v)), 1.0, rel_tol=1e-4) for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    query = minilm.embed_query("How do I bake bread at home?")
    assert cosine(query, vectors[0]) > 0.999


def test_simulated_embedder_is_deterministic_and_lexical() -> None:
    embedder = SimulatedEmbeddings(64)
    a, b, c = embedder.embed_documents(["red apples", "red apple", "blue whales"])
    assert a == embedder.embed_query("red apples")
    assert cosine(a, b) > 0.9  # the crude stem meets
    assert cosine(a, c) < 0.5
    assert embedder.embed_query("") == [1.0] + [0.0] * 63


async def test_embeddings_api_through_the_openai_sdk(app_factory: AppFactory) -> None:
    app = app_factory()
    async with live_server(app) as server:
        sdk = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        async with sdk:
            one = await sdk.embeddings.create(model="simulated-384", input="hello world")
            assert one.model == "simulated-384"
            assert len(one.data) == 1 and len(one.data[0].embedding) == 384
            assert one.usage.prompt_tokens > 0

            many = await sdk.embeddings.create(model="default", input=["a b", "c d", "a b"])
            assert [d.index for d in many.data] == [0, 1, 2]
            assert many.data[0].embedding == many.data[2].embedding

            # The SDK asks for base64 by default when numpy is around; check the bytes.
            raw = await sdk.embeddings.with_raw_response.create(
                model="simulated-384", input="hello world", encoding_format="base64"
            )
            encoded = raw.http_response.json()["data"][0]["embedding"]
            floats = struct.unpack("<384f", base64.b64decode(encoded))
            assert np.allclose(floats, one.data[0].embedding, atol=1e-6)

            with pytest.raises(openai.NotFoundError):
                await sdk.embeddings.create(model="text-embedding-3-large", input="x")
            with pytest.raises(openai.BadRequestError):
                await sdk.embeddings.create(model="default", input="x", dimensions=12)


async def test_embeddings_api_refuses_bad_input(app_factory: AppFactory) -> None:
    app = app_factory(embeddings={"max_inputs": 3, "max_input_chars": 50})
    async with asgi_client(app) as client:
        for body, status in (
            ({"model": "default", "input": [1, 2, 3]}, 400),
            ({"model": "default", "input": [[1, 2]]}, 400),
            ({"model": "default", "input": ""}, 422),
            ({"model": "default", "input": []}, 422),
            ({"model": "default", "input": ["a", "b", "c", "d"]}, 422),
            ({"model": "default", "input": "x" * 51}, 422),
            ({"model": "default", "input": "a\u0000b"}, 422),
            ({"model": "default"}, 422),
            ({"model": "default", "input": "x", "encoding_format": "hex"}, 422),
        ):
            response = await client.post("/v1/embeddings", json=body)
            assert response.status_code == status, (body, response.text)
            assert "error" in response.json()


@pytest.mark.slow
async def test_server_on_the_default_embedder(app_factory: AppFactory) -> None:
    """The default settings search with all-MiniLM-L6-v2: meaning, not just words."""
    app = app_factory(embeddings={"provider": "local"})
    async with asgi_client(app) as client:
        components = app.state.components
        assert components.embeddings.name == "all-MiniLM-L6-v2"
        await client.post("/collections", json={"name": "kb"})
        for name, text in (
            ("bees.md", "Hives should face away from the prevailing winds."),
            ("bread.md", "Knead the dough for ten minutes until it is smooth."),
        ):
            response = await client.post(
                "/documents",
                data={"collection": "kb"},
                files={"file": (name, text.encode())},
            )
            assert response.status_code == 202
        await components.documents.wait_idle()
        found = await client.post(
            "/search",
            json={"query": "which way should the entrance of my bee boxes point", "mode": "vector"},
        )
        assert found.json()["results"][0]["document_name"] == "bees.md"
        vectors = await client.post("/v1/embeddings", json={"model": "local", "input": "hi"})
        assert len(vectors.json()["data"][0]["embedding"]) == MINILM_DIMENSIONS


async def test_hosted_embedders_against_loopback_vendors(app_factory: AppFactory) -> None:
    """OpenAI's and Ollama's embedders (the LangChain partner packages) speak the vendors'
    real wire formats to loopback servers; ingestion and search work on their vectors."""
    for provider, server_type, dimensions, llm in (
        (
            "openai",
            OpenAIServer,
            384,
            lambda url: {"openai": {"base_url": url, "api_key": "k", "model": "gpt-4o-mini"}},
        ),
        (
            "ollama",
            OllamaServer,
            768,
            lambda url: {"ollama": {"base_url": url, "model": "llama3.2"}},
        ),
    ):
        async with server_type() as vendor:
            base = vendor.base_url if provider == "openai" else vendor.url
            model = None if provider == "openai" else "llama3.2"
            app = app_factory(
                embeddings={"provider": provider, "dimensions": dimensions, "model": model},
                llm={"provider": "simulated", **llm(base)},
            )
            async with asgi_client(app) as client:
                components = app.state.components
                collection = f"kb-{provider}"
                await client.post("/collections", json={"name": collection})
                for name, text in (("a.md", "red apples grow"), ("b.md", "blue whales swim")):
                    response = await client.post(
                        "/documents",
                        data={"collection": collection},
                        files={"file": (name, text.encode())},
                    )
                    assert response.status_code == 202
                await components.documents.wait_idle()
                found = await client.post(
                    "/search",
                    json={"query": "blue whales", "mode": "vector", "collections": [collection]},
                )
                assert found.json()["results"][0]["document_name"] == "b.md", provider
                vectors = await client.post(
                    "/v1/embeddings", json={"model": "default", "input": ["x y"]}
                )
                assert len(vectors.json()["data"][0]["embedding"]) == dimensions
                if provider == "ollama":
                    # The first collection holds another embedder's vectors: a clear 409.
                    mixed = await client.post("/search", json={"query": "apples"})
                    assert mixed.status_code == 409
                    assert "re-index" in mixed.json()["error"]["message"]
            if provider == "openai":
                sent = vendor.embedding_requests[0]
                assert sent["model"] == "text-embedding-3-small"
                assert sent["dimensions"] == 384
            else:
                assert any(r.path == "/api/embed" for r in vendor.requests)
