"""Collections and documents: upload, re-index, delete; ingestion is queued.

An upload is stored (bytes, hash, ``queued``) and acknowledged at once; ingestion runs in
worker tasks (``services/ingestion.py``), never inside the request.
Uploading a file whose name and bytes match a document already in the collection changes
nothing; different bytes under the same name replace it. A document deleted or replaced while
it is being ingested is never resurrected: the result is written only if the row still holds
the same bytes.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from streamforge.config.settings import IngestionSettings
from streamforge.db.database import Database
from streamforge.documents.extract import ExtractionFailed, check_filename
from streamforge.errors import Conflict, NotFound, PayloadTooLarge
from streamforge.models import Collection, Document, DocumentStatus
from streamforge.repositories import documents as repo
from streamforge.services.ingestion import Ingestion
from streamforge.stores import ChunkStore, NewChunk


@dataclass(frozen=True, slots=True)
class DocumentTextOf:
    """A document's extracted text, and where its pages begin in it (PDF only)."""

    name: str
    media_type: str | None
    text: str
    page_starts: list[int] | None


@dataclass(frozen=True, slots=True)
class Upload:
    document: Document
    # False when an identical document was already there and nothing was queued.
    queued: bool


def display_name(raw: str) -> str:
    """A refused file name made safe to store and show: controls replaced, length capped."""
    cleaned = "".join("?" if unicodedata.category(ch) == "Cc" else ch for ch in raw)
    cleaned = cleaned.encode("utf-8", "replace").decode("utf-8", "replace")
    return (cleaned.strip() or "unnamed")[:255]


class DocumentService:
    def __init__(
        self,
        settings: IngestionSettings,
        database: Database,
        store: ChunkStore,
        ingestion: Ingestion,
    ) -> None:
        self.settings = settings
        self.database = database
        self.store = store
        self.ingestion = ingestion

    # -- lifecycle: the ingestion queue -------------------------------------------------

    async def start(self) -> None:
        await self.ingestion.start()

    async def stop(self) -> None:
        await self.ingestion.stop()

    @property
    def queued(self) -> int:
        """Documents accepted and not yet ingested by this worker."""
        return self.ingestion.queued

    async def wait_idle(self) -> None:
        """Until every queued document has been ingested (tests, the CLI)."""
        await self.ingestion.wait_idle()

    # -- collections -----------------------------------------------------------------------

    async def create_collection(
        self, owner_id: str, name: str, description: str | None = None
    ) -> Collection:
        async with self.database.write() as db:
            if await repo.get_collection(db, owner_id, name) is not None:
                raise Conflict(f"a collection named {name!r} already exists")
            collection = Collection(owner_id=owner_id, name=name, description=description)
            db.add(collection)
            await db.flush()
            return collection

    async def list_collections(
        self, owner_id: str, limit: int, offset: int
    ) -> tuple[Sequence[Collection], int, dict[str, int]]:
        async with self.database.read() as db:
            items, total = await repo.list_collections(db, owner_id, limit=limit, offset=offset)
            counts = await repo.document_counts(db, [c.id for c in items])
        return items, total, counts

    async def get_collection(self, owner_id: str, ref: str) -> tuple[Collection, int]:
        async with self.database.read() as db:
            collection = await repo.get_collection(db, owner_id, ref)
            if collection is None:
                raise NotFound(f"collection {ref!r} not found")
            counts = await repo.document_counts(db, [collection.id])
        return collection, counts.get(collection.id, 0)

    async def delete_collection(self, owner_id: str, ref: str) -> None:
        async with self.database.write() as db:
            collection = await repo.get_collection(db, owner_id, ref)
            if collection is None:
                raise NotFound(f"collection {ref!r} not found")
            await self.store.delete_collection(db, collection.id)
            await db.delete(collection)

    # -- documents -------------------------------------------------------------------------

    async def upload(
        self, owner_id: str, collection_ref: str, filename: str, data: bytes
    ) -> Upload:
        if len(data) > self.settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"the file is larger than the upload limit of {self.settings.max_upload_bytes} "
                "bytes"
            )
        try:
            name = check_filename(filename)
            refusal = None
        except ExtractionFailed as exc:
            name, refusal = display_name(filename), exc.reason
        digest = hashlib.sha256(data).hexdigest()
        async with self.database.write() as db:
            collection = await repo.get_collection(db, owner_id, collection_ref)
            if collection is None:
                raise NotFound(f"collection {collection_ref!r} not found")
            existing = None
            if refusal is None:
                existing = await repo.find_document(db, owner_id, collection.id, name)
            if (
                existing is not None
                and existing.content_hash == digest
                and existing.status != DocumentStatus.FAILED.value
            ):
                return Upload(existing, queued=False)
            document = existing or Document(
                owner_id=owner_id, collection_id=collection.id, name=name
            )
            document.size = len(data)
            document.content_hash = digest
            document.data = data
            document.text = None
            document.media_type = None
            document.pages = None
            document.page_starts = None
            document.chunk_count = 0
            document.progress = 0.0
            document.ingested_at = None
            if refusal is not None:
                document.status = DocumentStatus.FAILED.value
                document.error = refusal
            else:
                document.status = DocumentStatus.QUEUED.value
                document.error = None
            if existing is None:
                db.add(document)
            else:  # replaced: its old chunks go now, the new ones come with ingestion
                await self.store.delete_document(db, document.id)
            await db.flush()
        if refusal is None:
            self.ingestion.enqueue(document.id)
        return Upload(document, queued=refusal is None)

    async def list_documents(
        self,
        owner_id: str,
        *,
        collection: str | None,
        status: DocumentStatus | None,
        limit: int,
        offset: int,
    ) -> tuple[Sequence[Document], int]:
        async with self.database.read() as db:
            collection_id = None
            if collection is not None:
                found = await repo.get_collection(db, owner_id, collection)
                if found is None:
                    raise NotFound(f"collection {collection!r} not found")
                collection_id = found.id
            return await repo.list_documents(
                db,
                owner_id,
                collection_id=collection_id,
                status=status.value if status else None,
                limit=limit,
                offset=offset,
            )

    async def get_document(self, owner_id: str, document_id: str) -> Document:
        async with self.database.read() as db:
            document = await repo.get_document(db, owner_id, document_id)
        if document is None:
            raise NotFound(f"document {document_id!r} not found")
        return document

    async def document_text(self, owner_id: str, document_id: str) -> DocumentTextOf:
        async with self.database.read() as db:
            document = await repo.get_document(db, owner_id, document_id)
            if document is None:
                raise NotFound(f"document {document_id!r} not found")
            await db.refresh(document, ["text", "page_starts"])
            if document.text is None:
                raise Conflict(f"document {document_id!r} has no extracted text yet")
            return DocumentTextOf(
                document.name,
                document.media_type,
                document.text,
                list(document.page_starts) if document.page_starts else None,
            )

    async def chunks(self, owner_id: str, document_id: str) -> list[NewChunk]:
        async with self.database.read() as db:
            if await repo.get_document(db, owner_id, document_id) is None:
                raise NotFound(f"document {document_id!r} not found")
            rows = await repo.chunks_of(db, owner_id, document_id)
        return [NewChunk(c.ordinal, c.start_offset, c.end_offset, c.text) for c in rows]

    async def delete_document(self, owner_id: str, document_id: str) -> None:
        async with self.database.write() as db:
            document = await repo.get_document(db, owner_id, document_id)
            if document is None:
                raise NotFound(f"document {document_id!r} not found")
            await self.store.delete_document(db, document.id)
            await db.delete(document)

    async def reindex(self, owner_id: str, document_id: str) -> Document:
        async with self.database.write() as db:
            document = await repo.get_document(db, owner_id, document_id)
            if document is None:
                raise NotFound(f"document {document_id!r} not found")
            if document.status in (DocumentStatus.QUEUED.value, DocumentStatus.PROCESSING.value):
                return document
            check_filename(document.name)  # a refused name is a 422 (ExtractionFailed)
            document.status = DocumentStatus.QUEUED.value
            document.error = None
            document.progress = 0.0
            await db.flush()
        self.ingestion.enqueue(document.id)
        return document
