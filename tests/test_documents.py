"""Collections and documents over HTTP: every format reaches ``ready`` with exact offsets,
re-uploads are no-ops or replacements, deletes take chunks and vectors along, uploads over the
limit are refused before they are read whole. On SQLite and on PostgreSQL with pgvector."""

from __future__ import annotations

import itertools

import httpx
import pytest
from sqlalchemy import text

from streamforge.components import Components
from tests.conftest import AppFactory, asgi_client, live_server
from tests.rag_support import (
    BEES,
    BREAD,
    ROUTER,
    TIDES,
    create_collection,
    docx_bytes,
    html_bytes,
    ingest,
    markdown_bytes,
    pdf_bytes,
    upload,
)


async def vector_rows(components: Components) -> int:
    total = 0
    async with components.database.read() as db:
        for table in ("vec_chunks_384", "chunk_vectors_384"):
            try:
                total += int((await db.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())
            except Exception:
                await db.rollback()
    return total


async def chunk_rows(components: Components) -> int:
    async with components.database.read() as db:
        return int((await db.execute(text("SELECT count(*) FROM chunks"))).scalar_one())


async def test_every_format_reaches_ready_with_exact_offsets(
    app_factory: AppFactory, rag_database_url: str
) -> None:
    # Small chunks, so every document is split into several overlapping ones.
    app = app_factory(rag_database_url, ingestion={"chunk_size": 120, "chunk_overlap": 30})
    files = {
        "bees.pdf": (pdf_bytes([BEES, TIDES]), [BEES.split(".")[0], "Anemones close"]),
        "bread.docx": (docx_bytes("Bread", [BREAD]), ["Bread", "sourdough starter", "Spring"]),
        "router.html": (html_bytes("Router", [ROUTER]), ["E-4471", "Harlow KT-9"]),
        "tides.md": (markdown_bytes("Tides", [TIDES, BEES]), ["# Tides", "tube feet"]),
        "notes.txt": (f"{BREAD}\r\n\r\n{ROUTER}".encode(), ["amber"]),
    }
    async with asgi_client(app) as client:
        components: Components = app.state.components
        await create_collection(client, "library")
        for name, (data, phrases) in files.items():
            document = await ingest(client, components, "library", name, data)
            assert document["status"] == "ready", (name, document["error"])
            assert document["progress"] == 1.0
            assert document["chunk_count"] >= 2, name
            extracted = (await client.get(f"/documents/{document['id']}/text")).json()
            whole = extracted["text"]
            for phrase in phrases:
                assert phrase in whole, (name, phrase)
            assert "never indexed" not in whole  # scripts are not text
            assert "\r" not in whole
            chunks = extracted["chunks"]
            assert [c["ordinal"] for c in chunks] == list(range(len(chunks)))
            for chunk in chunks:
                assert whole[chunk["start"] : chunk["end"]] == chunk["text"]
            # Consecutive chunks overlap or touch: nothing of the text is skipped.
            for before, after in itertools.pairwise(chunks):
                assert after["start"] <= before["end"] + 2
        assert document["media_type"] == "text/plain"
        listed = (await client.get("/documents", params={"limit": 2})).json()
        assert listed["total"] == 5 and len(listed["items"]) == 2
        second = (await client.get("/documents", params={"limit": 2, "offset": 4})).json()
        assert len(second["items"]) == 1
        ready = (await client.get("/documents", params={"status": "ready"})).json()
        assert ready["total"] == 5
        collection = (await client.get("/collections/library")).json()
        assert collection["document_count"] == 5
        assert collection["embedding_model"] == "simulated-384"


async def test_reupload_is_a_noop_and_a_change_replaces(
    app_factory: AppFactory, rag_database_url: str
) -> None:
    app = app_factory(rag_database_url)
    async with asgi_client(app) as client:
        components: Components = app.state.components
        await create_collection(client, "notes")
        first = await ingest(client, components, "notes", "a.md", markdown_bytes("A", [BEES]))
        chunks_before = (await client.get(f"/documents/{first['id']}/text")).json()["chunks"]

        again = await upload(client, "notes", "a.md", markdown_bytes("A", [BEES]))
        assert again.status_code == 200
        assert again.json()["id"] == first["id"]
        assert again.json()["status"] == "ready"
        assert again.json()["ingested_at"] == first["ingested_at"]
        await components.documents.wait_idle()
        assert (await client.get(f"/documents/{first['id']}/text")).json()["chunks"] == (
            chunks_before
        )

        changed = await ingest(client, components, "notes", "a.md", markdown_bytes("A", [BREAD]))
        assert changed["id"] == first["id"]
        assert changed["content_hash"] != first["content_hash"]
        found = await client.post("/search", json={"query": "sourdough starter", "mode": "text"})
        assert [r["document_id"] for r in found.json()["results"]] == [first["id"]]
        gone = await client.post("/search", json={"query": "queen excluder", "mode": "text"})
        assert gone.json()["results"] == []
        listed = (await client.get("/documents")).json()
        assert listed["total"] == 1


async def test_delete_takes_chunks_and_vectors(
    app_factory: AppFactory, rag_database_url: str
) -> None:
    app = app_factory(rag_database_url)
    async with asgi_client(app) as client:
        components: Components = app.state.components
        await create_collection(client, "one")
        await create_collection(client, "two")
        a = await ingest(client, components, "one", "a.md", markdown_bytes("A", [BEES, TIDES]))
        await ingest(client, components, "one", "b.md", markdown_bytes("B", [BREAD]))
        await ingest(client, components, "two", "c.md", markdown_bytes("C", [ROUTER]))
        total = await chunk_rows(components)
        assert total >= 3
        assert await vector_rows(components) == total

        assert (await client.delete(f"/documents/{a['id']}")).status_code == 204
        assert (await client.get(f"/documents/{a['id']}")).status_code == 404
        remaining = await chunk_rows(components)
        assert remaining == total - a["chunk_count"]
        assert await vector_rows(components) == remaining
        found = await client.post("/search", json={"query": "hive queen excluder"})
        assert all(r["document_id"] != a["id"] for r in found.json()["results"])

        assert (await client.delete("/collections/one")).status_code == 204
        assert (await client.get("/collections/one")).status_code == 404
        assert await chunk_rows(components) == await vector_rows(components) > 0
        listed = (await client.get("/documents")).json()
        assert [d["name"] for d in listed["items"]] == ["c.md"]
        assert (await client.delete(f"/documents/{a['id']}")).status_code == 404


async def test_reindex_runs_ingestion_again(app_factory: AppFactory, rag_database_url: str) -> None:
    app = app_factory(rag_database_url)
    async with asgi_client(app) as client:
        components: Components = app.state.components
        await create_collection(client, "docs")
        document = await ingest(client, components, "docs", "r.html", html_bytes("R", [ROUTER]))
        response = await client.post(f"/documents/{document['id']}/reindex")
        assert response.status_code == 202
        assert response.json()["status"] in ("queued", "processing", "ready")
        await components.documents.wait_idle()
        again = (await client.get(f"/documents/{document['id']}")).json()
        assert again["status"] == "ready"
        assert again["ingested_at"] > document["ingested_at"]
        assert again["chunk_count"] == document["chunk_count"]
        assert await chunk_rows(components) == document["chunk_count"]
        missing = await client.post("/documents/0190a0a0-0000-7000-8000-000000000000/reindex")
        assert missing.status_code == 404


async def test_collections_api(app_factory: AppFactory, database_url: str) -> None:
    app = app_factory(database_url)
    async with asgi_client(app) as client:
        created = await create_collection(client, "handbook")
        assert created["document_count"] == 0
        duplicate = await client.post("/collections", json={"name": "handbook"})
        assert duplicate.status_code == 409
        assert duplicate.json()["error"]["code"] == "conflict"
        bad = await client.post("/collections", json={"name": "../etc"})
        assert bad.status_code == 422
        by_id = await client.get(f"/collections/{created['id']}")
        assert by_id.json()["name"] == "handbook"
        listed = (await client.get("/collections")).json()
        assert listed["total"] == 1
        unknown = await upload(client, "nope", "a.txt", b"hello")
        assert unknown.status_code == 404
        missing_file = await client.post("/documents", data={"collection": "handbook"})
        assert missing_file.status_code == 422
        assert (await client.get("/documents/not-an-id")).status_code == 404


@pytest.mark.parametrize("chunked", [False, True])
async def test_upload_over_the_limit_is_refused_early(
    app_factory: AppFactory, tmp_path: object, chunked: bool
) -> None:
    app = app_factory(ingestion={"max_upload_bytes": 100_000})
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        await create_collection(client, "big")
        payload = b"a" * 400_000
        if chunked:
            boundary = "sfboundary"
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="collection"\r\n\r\n'
                f'big\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="big.txt"\r\nContent-Type: text/plain\r\n\r\n'
            ).encode()
            tail = f"\r\n--{boundary}--\r\n".encode()

            async def body():  # type: ignore[no-untyped-def]
                yield head
                for start in range(0, len(payload), 16_384):
                    yield payload[start : start + 16_384]
                yield tail

            response = await client.post(
                "/documents",
                content=body(),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
        else:
            response = await upload(client, "big", "big.txt", payload)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        # Just under the limit is fine, and nothing of the refused upload was stored.
        small = await upload(client, "big", "small.txt", b"b" * 50_000)
        assert small.status_code == 202
        listed = (await client.get("/documents")).json()
        assert [d["name"] for d in listed["items"]] == ["small.txt"]
