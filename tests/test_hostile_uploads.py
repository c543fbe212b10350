"""Hostile and malformed uploads through the running server: every one ends ``failed`` with a
readable reason, the server keeps answering other requests while it parses them, and its
memory stays bounded (parsing happens in separate, limited processes)."""

from __future__ import annotations

import asyncio
import time

import httpx
import psutil

from tests.conftest import AppFactory, live_server
from tests.hostile_files import HOSTILE, pdf_longer_than
from tests.rag_support import create_collection

MIB = 1 << 20


async def raw_upload(
    client: httpx.AsyncClient, collection: str, filename: str, data: bytes
) -> httpx.Response:
    """A multipart upload written by hand, so the file name reaches the server byte for byte
    (httpx percent-encodes control characters in names, as browsers do; attackers do not)."""
    boundary = b"----streamforge-hostile-boundary"
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8", "surrogatepass")
    body = b"".join(
        [
            b"--" + boundary + b"\r\n",
            b'Content-Disposition: form-data; name="collection"\r\n\r\n',
            collection.encode() + b"\r\n",
            b"--" + boundary + b"\r\n",
            b'Content-Disposition: form-data; name="file"; filename="' + quoted + b'"\r\n',
            b"Content-Type: application/octet-stream\r\n\r\n",
            data,
            b"\r\n--" + boundary + b"--\r\n",
        ]
    )
    return await client.post(
        "/documents",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=" + boundary.decode()},
    )


async def test_hostile_files_fail_with_reasons_while_the_server_serves(
    app_factory: AppFactory,
) -> None:
    files = [make() for make in HOSTILE] + [pdf_longer_than(1_000)]
    assert len(files) >= 20
    app = app_factory(
        ingestion={"parse_timeout": 10, "parse_memory_mb": 256, "max_chars": 1_000},
        streaming={"simulated_delay": 0.0},
    )
    process = psutil.Process()
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        await create_collection(client, "uploads")
        baseline = process.memory_info().rss
        latencies: list[float] = []
        stop = asyncio.Event()

        async def other_requests() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                health = await client.get("/health")
                chat = await client.post("/chat", json={"message": "still there?"})
                latencies.append(time.perf_counter() - started)
                assert health.status_code == 200
                assert chat.status_code == 200 and "event: done" in chat.text
                await asyncio.sleep(0.05)

        prober = asyncio.create_task(other_requests())
        ids: dict[str, tuple[str, str]] = {}
        try:
            for name, data, reason in files:
                response = await raw_upload(client, "uploads", name, data)
                assert response.status_code == 202, (name, response.text)
                ids[response.json()["id"]] = (name, reason)
            await asyncio.wait_for(server.components.documents.wait_idle(), timeout=240)
        finally:
            stop.set()
            await prober

        for document_id, (name, reason) in ids.items():
            document = (await client.get(f"/documents/{document_id}")).json()
            assert document["status"] == "failed", (name, document)
            assert reason in document["error"], (name, document["error"])
            assert document["chunk_count"] == 0
            assert "Traceback" not in document["error"]
            assert "\x00" not in document["name"]
        listed = (await client.get("/documents", params={"status": "failed", "limit": 100})).json()
        assert listed["total"] == len(files)
        search = await client.post("/search", json={"query": "lighthouse keeper"})
        assert search.json()["results"] == []

        # The server answered throughout: rounds kept completing while the parsers ran (how
        # many depends on how fast this machine parses), and none stalled behind a parser.
        assert len(latencies) >= 2
        assert max(latencies) < 5.0
        growth = process.memory_info().rss - baseline
        assert growth < 150 * MIB, f"resident memory grew by {growth / MIB:.0f} MiB"
        # No parser process outlives its document.
        assert not [
            c
            for c in process.children(recursive=True)
            if c.is_running() and "streamforge.documents.worker" in " ".join(c.cmdline())
        ]
