"""Ingestion through the HTTP API against the embedder alone, on the same texts.

A StreamForge server (uvicorn, SQLite in a temporary directory, all-MiniLM-L6-v2, default
settings) receives every document of a test collection with ``POST /documents`` and ingests
them in the background; the clock runs from the first upload until ``GET /documents``
reports none queued or processing. Then, in this process, sentence-transformers' own
``encode`` (batch 64, which sorts by length, 2 threads as the server uses) embeds the same
documents' texts, chunked as the server chunks them. The ratio of the two is the figure.

    python benchmarks/ingest_http.py ../shared/ir/cacm
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

import httpx

from _client import free_port, start_process, stop_server, uvicorn_command, wait_until_healthy
from streamforge.chains.embeddings import minilm_path
from streamforge.config.settings import IngestionSettings
from streamforge.evaluation.collections import load
from streamforge.services.documents import split_text


async def ingest(url: str, files: list[tuple[str, bytes]], uploaders: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        assert (await client.post("/collections", json={"name": "bench"})).status_code == 201
        started = time.perf_counter()
        queue = list(reversed(files))

        async def upload() -> None:
            while queue:
                name, data = queue.pop()
                response = await client.post(
                    "/documents", data={"collection": "bench"}, files={"file": (name, data)}
                )
                assert response.status_code in (200, 202), response.text

        await asyncio.gather(*(upload() for _ in range(uploaders)))
        uploaded = time.perf_counter() - started
        while True:
            busy = 0
            for status in ("queued", "processing"):
                page = await client.get("/documents", params={"status": status, "limit": 1})
                busy += page.json()["total"]
            if not busy:
                break
            await asyncio.sleep(0.2)
        seconds = time.perf_counter() - started
        ready = (await client.get("/documents", params={"status": "ready", "limit": 1})).json()
        failed = (await client.get("/documents", params={"status": "failed", "limit": 1})).json()
    return {
        "seconds": seconds,
        "upload_seconds": uploaded,
        "ready": ready["total"],
        "failed": failed["total"],
    }


def embedder_alone(files: list[tuple[str, bytes]], threads: int) -> tuple[float, int]:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    settings = IngestionSettings()
    texts = [
        chunk.text
        for _, data in files
        for chunk in split_text(data.decode(), settings.chunk_size, settings.chunk_overlap)
    ]
    model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    model.encode(texts[:64], batch_size=64)
    started = time.perf_counter()
    model.encode(texts, batch_size=64, normalize_embeddings=True)
    return time.perf_counter() - started, len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection", help="a SMART folder or 'shipped'")
    parser.add_argument("--uploaders", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    collection = load(args.collection)
    files = collection.files
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sf-ingest-") as scratch:
        env = {
            "STREAMFORGE_DATA_DIR": scratch,
            "STREAMFORGE_LLM__PROVIDER": "simulated",
            "STREAMFORGE_EMBEDDINGS__PROVIDER": "local",
            "PYTHONPATH": os.pathsep.join(sys.path),
        }
        server = start_process(uvicorn_command("streamforge.main:app", port), env=env)
        try:
            asyncio.run(wait_until_healthy(server, port))
            result = asyncio.run(ingest(f"http://127.0.0.1:{port}", files, args.uploaders))
        finally:
            stop_server(server)
    alone, chunks = embedder_alone(files, args.threads)
    served = len(files) / result["seconds"]
    bare = len(files) / alone
    print(
        f"{collection.name}: {len(files)} documents through the HTTP API in "
        f"{result['seconds']:.1f} s: {served:.1f} documents/s (ready {result['ready']:.0f}, "
        f"failed {result['failed']:.0f}); the embedder alone on the same {chunks} chunks: "
        f"{alone:.1f} s, {bare:.1f} documents/s; ingestion runs at {served / bare:.0%} of it"
    )
    print(
        json.dumps(
            {
                "collection": collection.name,
                "documents": len(files),
                "chunks": chunks,
                **{k: round(v, 2) for k, v in result.items()},
                "documents_per_s": round(served, 2),
                "embedder_alone_s": round(alone, 2),
                "embedder_documents_per_s": round(bare, 2),
                "ratio": round(served / bare, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
