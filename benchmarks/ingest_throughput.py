"""Ingestion throughput: chunks per second from upload to ``ready``, with all-MiniLM-L6-v2.

Documents go through ``DocumentService`` exactly as ``POST /documents`` sends them: stored,
queued, parsed in the sandboxed process, split, embedded in batches off the event loop and
written with their vectors and full-text entries. The corpus is the labelled set shipped with
the package (Markdown), repeated under new names until it has ``--documents`` files, plus the
same number of PDFs made from it, so both the parsing and the embedding paths are measured.

For comparison it also times the embedder alone on the same chunks (the ceiling: ingestion
cannot be faster than embedding), and reports ingestion as a share of it.

Run from the repository root::

    python benchmarks/ingest_throughput.py --documents 40

It prints a summary, then one JSON line with the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fpdf import FPDF

from streamforge.components import Components
from streamforge.config.settings import Settings
from streamforge.evaluation.run import CORPUS
from streamforge.models.base import LOCAL_OWNER
from streamforge.repositories import documents as repo


def pdf_of(text: str) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    pdf.add_page()
    latin = text.encode("latin-1", "replace").decode("latin-1")
    pdf.multi_cell(0, 5, latin.replace("#", ""))
    return bytes(pdf.output())


async def run(documents: int, backend_url: str | None, scratch: Path) -> dict[str, Any]:
    sources = sorted(CORPUS.glob("*.md"))
    files: list[tuple[str, bytes]] = []
    for index in range(documents):
        source = sources[index % len(sources)]
        text = source.read_text(encoding="utf-8")
        files.append((f"{index:04d}-{source.name}", text.encode()))
        files.append((f"{index:04d}-{source.stem}.pdf", pdf_of(text)))
    settings = Settings(
        data_dir=scratch,
        database={"url": backend_url},
        llm={"provider": "simulated"},
        embeddings={"provider": "local"},
    )
    components = await Components.start(settings)
    try:
        await components.embeddings.embed_query("warm up")  # load the model first
        service = components.documents
        await service.create_collection(LOCAL_OWNER, "bench")
        started = time.perf_counter()
        for name, data in files:
            await service.upload(LOCAL_OWNER, "bench", name, data)
        await service.wait_idle()
        elapsed = time.perf_counter() - started
        async with components.database.read() as db:
            listed, _ = await repo.list_documents(
                db, LOCAL_OWNER, collection_id=None, status=None, limit=10_000, offset=0
            )
        failed = [d.name for d in listed if d.status != "ready"]
        chunks = sum(d.chunk_count for d in listed)
        texts: list[str] = []
        for document in listed[: max(1, len(listed) // 4)]:
            texts.extend(c.text for c in await service.chunks(LOCAL_OWNER, document.id))
        t0 = time.perf_counter()
        await components.embeddings.embed_documents(texts)
        embed_rate = len(texts) / (time.perf_counter() - t0)
        return {
            "backend": components.store.backend,
            "files": len(files),
            "failed": failed,
            "chunks": chunks,
            "seconds": round(elapsed, 2),
            "chunks_per_s": round(chunks / elapsed, 1),
            "files_per_s": round(len(files) / elapsed, 2),
            "embed_only_chunks_per_s": round(embed_rate, 1),
            "share_of_embedding_rate": round((chunks / elapsed) / embed_rate, 3),
        }
    finally:
        await components.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=40, help="Markdown files (and PDFs)")
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sf-ingest-") as scratch:
        result = asyncio.run(run(args.documents, args.database_url, Path(scratch)))
    print(
        f"{result['files']} files, {result['chunks']} chunks in {result['seconds']} s: "
        f"{result['chunks_per_s']} chunks/s ({result['files_per_s']} files/s); "
        f"the embedder alone: {result['embed_only_chunks_per_s']} chunks/s; "
        f"ingestion runs at {result['share_of_embedding_rate']:.0%} of it; "
        f"failed: {len(result['failed'])}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
