"""Chat grounded in documents: ``sources`` comes before the first text, cites the document
that answers, and is stored on the assistant message; the OpenAI-compatible API takes the
same ``rag`` field."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson

from streamforge.components import Components
from tests.conftest import AppFactory, asgi_client, live_server
from tests.rag_support import BEES, BREAD, ROUTER, TIDES, create_collection, ingest, markdown_bytes
from tests.sse_client import read_chat
from tests.test_chat_stream import ProbeProvider


async def seed(client: httpx.AsyncClient, components: Components) -> dict[str, str]:
    await create_collection(client, "manuals")
    ids = {}
    for name, text in (("bees.md", BEES), ("bread.md", BREAD), ("router.md", ROUTER)):
        document = await ingest(client, components, "manuals", name, markdown_bytes(name, [text]))
        ids[name] = document["id"]
    await create_collection(client, "other")
    document = await ingest(client, components, "other", "tides.md", markdown_bytes("t", [TIDES]))
    ids["tides.md"] = document["id"]
    return ids


async def test_sources_come_first_and_are_stored(
    app_factory: AppFactory, rag_database_url: str
) -> None:
    probe = ProbeProvider(["The", " button", " [1]."], delay=0)
    app = app_factory(rag_database_url)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        server.components.providers.register(probe)
        ids = await seed(client, server.components)
        stream = await read_chat(
            client,
            {
                "message": "What does error E-4471 on the Harlow KT-9 mean?",
                "provider": "probe",
                "rag": {"collections": ["manuals"], "top_k": 2},
            },
        )
        assert stream.status == 200
        kinds = [event for _, event, _ in stream.events]
        assert kinds[0] == "session"
        assert kinds[1] == "sources"
        assert kinds.index("sources") < kinds.index("message")
        sources = stream.typed("sources")[0]["sources"]
        assert 1 <= len(sources) <= 2
        first = sources[0]
        assert first["index"] == 1
        assert first["document_id"] == ids["router.md"]
        assert first["document_name"] == "router.md"
        assert "E-4471" in first["snippet"]
        assert first["end"] > first["start"] >= 0
        assert isinstance(first["chunk_id"], int)
        assert all(s["document_id"] != ids["tides.md"] for s in sources)
        assert stream.text == "The button [1]."

        # The passages reached the model with their markers.
        system = probe.seen[-1].messages[0].content
        assert "[1] (router.md)" in system
        assert "E-4471" in system

        session_id = stream.session["session_id"]
        messages = (await client.get(f"/sessions/{session_id}/messages")).json()["items"]
        assistant = next(m for m in messages if m["role"] == "assistant")
        assert assistant["citations"] == sources
        assert assistant["content"] == "The button [1]."

        # The text the citation points at is there in the document, exactly.
        text = (await client.get(f"/documents/{first['document_id']}/text")).json()["text"]
        assert "E-4471" in text[first["start"] : first["end"]]


async def test_rag_shorthands_and_refusals(app_factory: AppFactory) -> None:
    probe = ProbeProvider(["ok"], delay=0)
    app = app_factory()
    async with asgi_client(app) as client:
        app.state.components.providers.register(probe)
        ids = await seed(client, app.state.components)
        everything = await client.post(
            "/chat", json={"message": "sea stars tube feet", "provider": "probe", "rag": True}
        )
        assert f'"document_id":"{ids["tides.md"]}"' in everything.text
        listed = await client.post(
            "/chat",
            json={"message": "sourdough", "provider": "probe", "rag": ["manuals"]},
        )
        assert f'"document_id":"{ids["bread.md"]}"' in listed.text
        off = await client.post(
            "/chat", json={"message": "sourdough", "provider": "probe", "rag": False}
        )
        assert "event: sources" not in off.text
        plain = await client.post("/chat", json={"message": "sourdough", "provider": "probe"})
        assert "event: sources" not in plain.text
        assert "[1]" not in probe.seen[-1].messages[0].content

        unknown = await client.post("/chat", json={"message": "x", "rag": ["missing"]})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "not_found"
        bad = await client.post("/chat", json={"message": "x", "rag": {"top_k": 0}})
        assert bad.status_code == 422
        extra = await client.post("/chat", json={"message": "x", "rag": {"nope": 1}})
        assert extra.status_code == 422


async def test_openai_api_takes_rag(app_factory: AppFactory, rag_database_url: str) -> None:
    app = app_factory(rag_database_url)
    async with live_server(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            ids = await seed(client, server.components)
        sdk = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        async with sdk:
            completion = await sdk.chat.completions.create(
                model="simulated",
                messages=[{"role": "user", "content": "How often are hives inspected?"}],
                extra_body={"rag": {"collections": ["manuals"], "top_k": 1}},
            )
            assert completion.choices[0].message.content
            extra: dict[str, Any] = completion.model_extra or {}
            assert extra["sources"][0]["document_id"] == ids["bees.md"]

            stream = await sdk.chat.completions.create(
                model="simulated",
                messages=[{"role": "user", "content": "How often are hives inspected?"}],
                stream=True,
                extra_body={"rag": ["manuals"]},
            )
            chunks = [chunk async for chunk in stream]
        with_sources = [c for c in chunks if (c.model_extra or {}).get("sources")]
        assert len(with_sources) == 1
        first_text = next(
            i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content
        )
        assert chunks.index(with_sources[0]) < first_text
        sources = orjson.loads(orjson.dumps(with_sources[0].model_extra))["sources"]
        assert sources[0]["document_id"] == ids["bees.md"]
