"""Ingestion: the worker tasks that turn a queued upload into searchable chunks.

    queued → processing (extract in a sandboxed process → split → embed → store) → ready
                                                                                 ↘ failed

Progress is written as the document moves through the steps, at most every half second.
Many documents are in flight at once (``concurrency``) so the embedder batches chunks across
them (``services/embeddings.py``); files are parsed in one warm sandboxed process
(``documents/sandbox.py``) that stops when the queue is empty. A document deleted or replaced
while it is being ingested is never resurrected: the result is written only if the row still
holds the same bytes. ``services/documents.py`` queues uploads here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter
from sqlalchemy import select
from sqlalchemy.orm import undefer

from streamforge.config.settings import IngestionSettings
from streamforge.db.database import Database
from streamforge.db.group import GroupCommit
from streamforge.documents.extract import Extracted, ExtractionFailed
from streamforge.documents.sandbox import Limits, WarmSandbox
from streamforge.models import Collection, Document, DocumentStatus
from streamforge.models.base import utcnow
from streamforge.repositories import documents as repo
from streamforge.services.embeddings import EmbeddingService
from streamforge.stores import ChunkStore, DocumentChunks, NewChunk

logger = logging.getLogger(__name__)

# Progress points of the steps; embedding fills the range between the last two.
_EXTRACTED, _SPLIT, _EMBEDDED = 0.2, 0.25, 0.95
_PROGRESS_INTERVAL = 0.5
# Texts shorter than this are split on the event loop (a thread hop costs more).
_INLINE_SPLIT = 20_000


# What a claim reads of a document: bytes, hash, name, owner, collection.
_Claim = tuple[bytes, str, str, str, str]


@dataclass(frozen=True, slots=True)
class _Embedded:
    document_id: str
    digest: str
    owner_id: str
    collection_id: str
    extracted: Extracted
    chunks: list[NewChunk]
    vectors: list[list[float]]


def split_text(text: str, chunk_size: int, chunk_overlap: int) -> list[NewChunk]:
    """Split with LangChain's recursive splitter; each chunk keeps its offsets into ``text``.

    The splitter returns substrings of the text in order; each is found from just after the
    previous chunk's start, so ``text[start:end] == chunk.text`` holds by construction.
    """
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=chunk_size,
        chunk_overlap=min(chunk_overlap, chunk_size // 2),
        strip_whitespace=True,
    )
    chunks: list[NewChunk] = []
    cursor = 0
    for piece in splitter.split_text(text):
        start = text.find(piece, cursor)
        if start < 0:  # never expected; fall back to a search from the beginning
            start = text.find(piece)
            if start < 0:
                continue
        end = start + len(piece)
        chunks.append(NewChunk(len(chunks), start, end, piece))
        cursor = start + 1
    return chunks


class Ingestion:
    """The queue of documents to ingest, and the worker tasks that ingest them."""

    def __init__(
        self,
        settings: IngestionSettings,
        database: Database,
        store: ChunkStore,
        embedder: EmbeddingService,
    ) -> None:
        self.settings = settings
        self.database = database
        self.store = store
        self.embedder = embedder
        self.limits = Limits(
            timeout=settings.parse_timeout,
            memory_mb=settings.parse_memory_mb,
            max_chars=settings.max_chars,
            max_pages=settings.max_pages,
        )
        self.sandbox = WarmSandbox(self.limits)
        # Documents in flight start and finish together: one transaction for many.
        self._claims = GroupCommit(self._claim_many)
        self._finishes = GroupCommit(self._finish_many)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._pending: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        for index in range(self.settings.concurrency):
            self._workers.append(asyncio.create_task(self._work(), name=f"ingest-{index}"))
        # Documents a previous run accepted but did not finish are picked up again.
        async with self.database.read() as db:
            unfinished = await repo.document_ids_with_status(
                db, [DocumentStatus.QUEUED.value, DocumentStatus.PROCESSING.value]
            )
        for document_id in unfinished:
            self.enqueue(document_id)

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        await self._claims.aclose()
        await self._finishes.aclose()
        await self.sandbox.aclose()

    @property
    def queued(self) -> int:
        """Documents accepted and not yet ingested by this worker."""
        return len(self._pending)

    async def wait_idle(self) -> None:
        """Until every queued document has been ingested (tests, the CLI)."""
        await self._idle.wait()

    def enqueue(self, document_id: str) -> None:
        if document_id in self._pending:
            return
        self._pending.add(document_id)
        self._idle.clear()
        self._queue.put_nowait(document_id)

    # -- ingestion -------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            document_id = await self._queue.get()
            try:
                await self._ingest(document_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.exception("ingesting document %s failed", document_id)
                await self._fail(document_id, None, f"ingestion failed: {exc}")
            finally:
                self._pending.discard(document_id)
                if not self._pending:
                    await self.sandbox.aclose()
                    if not self._pending:
                        self._idle.set()

    async def _ingest(self, document_id: str) -> None:
        started = time.monotonic()
        claimed = await self._claims.submit(document_id)
        if claimed is None:
            return
        data, digest, name, owner_id, collection_id = claimed
        try:
            extracted = await self.sandbox.extract(data, name, owner_id)
        except ExtractionFailed as exc:
            await self._fail(document_id, digest, exc.reason)
            return
        del data, claimed
        last = time.monotonic()
        if last - started >= _PROGRESS_INTERVAL:
            await self._progress(document_id, digest, _EXTRACTED)
        text = extracted.text
        if len(text) > _INLINE_SPLIT:
            chunks = await asyncio.to_thread(
                split_text, text, self.settings.chunk_size, self.settings.chunk_overlap
            )
        else:
            chunks = split_text(text, self.settings.chunk_size, self.settings.chunk_overlap)
        if not chunks:
            await self._fail(document_id, digest, "the document contains no text")
            return

        async def embedded(done: int, total: int) -> None:
            nonlocal last
            if time.monotonic() - last >= _PROGRESS_INTERVAL:
                last = time.monotonic()
                share = done / total
                await self._progress(document_id, digest, _SPLIT + share * (_EMBEDDED - _SPLIT))

        # Progress of a document embedded in one batch is not worth a write.
        many = len(chunks) > self.embedder.batch_size
        vectors = await self.embedder.embed_documents(
            [c.text for c in chunks], embedded if many else None
        )
        await self._finishes.submit(
            _Embedded(document_id, digest, owner_id, collection_id, extracted, chunks, vectors)
        )

    async def _claim_many(self, document_ids: list[str]) -> list[_Claim | None]:
        """Mark queued documents as processing, one transaction for all, and read them."""
        async with self.database.write() as db:
            rows = await db.scalars(
                select(Document)
                .where(Document.id.in_(document_ids))
                .options(undefer(Document.data))
            )
            found = {document.id: document for document in rows}
            claims: list[_Claim | None] = []
            for document_id in document_ids:
                document = found.get(document_id)
                if document is None or document.status not in (
                    DocumentStatus.QUEUED.value,
                    DocumentStatus.PROCESSING.value,
                ):
                    claims.append(None)
                    continue
                document.status = DocumentStatus.PROCESSING.value
                document.progress = 0.01
                claims.append(
                    (
                        document.data,
                        document.content_hash,
                        document.name,
                        document.owner_id,
                        document.collection_id,
                    )
                )
            return claims

    async def _finish_many(self, results: list[_Embedded]) -> list[None]:
        """Write the chunks of documents embedded together, one transaction for all. A
        document deleted or replaced meanwhile is left alone (its bytes no longer match)."""
        async with self.database.write() as db:
            ids = [result.document_id for result in results]
            documents = {
                d.id: d
                for d in await db.scalars(
                    select(Document).where(Document.id.in_(ids)).with_for_update()
                )
            }
            wanted = {result.collection_id for result in results}
            collections = {
                c.id: c
                for c in await db.scalars(select(Collection).where(Collection.id.in_(wanted)))
            }
            writes: list[tuple[_Embedded, Document]] = []
            for result in results:
                document = documents.get(result.document_id)
                collection = collections.get(result.collection_id)
                if document is None or document.content_hash != result.digest or collection is None:
                    continue
                if collection.embedding_model is None:
                    collection.embedding_model = self.embedder.name
                    collection.dimensions = self.embedder.dimensions
                elif collection.embedding_model != self.embedder.name:
                    document.status = DocumentStatus.FAILED.value
                    document.error = (
                        f"the collection holds vectors of {collection.embedding_model!r}, "
                        f"not of the configured embedder {self.embedder.name!r}"
                    )
                    continue
                writes.append((result, document))
            await self.store.write_documents(
                db,
                [
                    DocumentChunks(r.owner_id, r.collection_id, r.document_id, r.chunks, r.vectors)
                    for r, _ in writes
                ],
            )
            now = utcnow()
            for result, document in writes:
                document.text = result.extracted.text
                document.media_type = result.extracted.media_type
                document.pages = result.extracted.pages
                starts = result.extracted.page_starts
                document.page_starts = None if starts is None else list(starts)
                document.chunk_count = len(result.chunks)
                document.status = DocumentStatus.READY.value
                document.error = None
                document.progress = 1.0
                document.ingested_at = now
        return [None] * len(results)

    async def _progress(self, document_id: str, digest: str, progress: float) -> None:
        async with self.database.write() as db:
            document = await db.get(Document, document_id)
            if document is not None and document.content_hash == digest:
                document.progress = round(progress, 3)

    async def _fail(self, document_id: str, digest: str | None, reason: str) -> None:
        async with self.database.write() as db:
            document = await db.get(Document, document_id)
            if document is None or (digest is not None and document.content_hash != digest):
                return
            document.status = DocumentStatus.FAILED.value
            document.error = reason
            document.progress = 1.0
