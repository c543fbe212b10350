"""Collections, documents and search."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from streamforge.deps import DocumentServiceDep, OwnerDep, RetrievalServiceDep
from streamforge.documents.extract import page_of
from streamforge.errors import PayloadTooLarge
from streamforge.models import Collection, Document, DocumentStatus
from streamforge.schemas.common import ErrorResponse, LimitQuery, OffsetQuery, Page, StorableText
from streamforge.schemas.documents import (
    ChunkPublic,
    CollectionCreate,
    CollectionPublic,
    DocumentPublic,
    DocumentText,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from streamforge.services.retrieval import SearchMode

router = APIRouter(tags=["documents"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 409, 413, 422, 503)
}
_READ_CHUNK = 1024 * 1024


def _collection(collection: Collection, count: int) -> CollectionPublic:
    return CollectionPublic(
        id=collection.id,
        name=collection.name,
        description=collection.description,
        embedding_model=collection.embedding_model,
        dimensions=collection.dimensions,
        document_count=count,
        created_at=collection.created_at,
    )


def _document(document: Document) -> DocumentPublic:
    return DocumentPublic.model_validate(document)


@router.post("/collections", status_code=201, responses=_ERRORS, summary="Create a collection")
async def create_collection(
    body: CollectionCreate, owner: OwnerDep, service: DocumentServiceDep
) -> CollectionPublic:
    collection = await service.create_collection(owner, body.name, body.description)
    return _collection(collection, 0)


@router.get("/collections", responses=_ERRORS, summary="List collections")
async def list_collections(
    owner: OwnerDep, service: DocumentServiceDep, limit: LimitQuery = 20, offset: OffsetQuery = 0
) -> Page[CollectionPublic]:
    items, total, counts = await service.list_collections(owner, limit, offset)
    return Page(
        items=[_collection(c, counts.get(c.id, 0)) for c in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/collections/{collection}", responses=_ERRORS, summary="Get a collection")
async def get_collection(
    collection: str, owner: OwnerDep, service: DocumentServiceDep
) -> CollectionPublic:
    found, count = await service.get_collection(owner, collection)
    return _collection(found, count)


@router.delete(
    "/collections/{collection}",
    status_code=204,
    responses=_ERRORS,
    summary="Delete a collection with its documents, chunks and vectors",
)
async def delete_collection(
    collection: str, owner: OwnerDep, service: DocumentServiceDep
) -> Response:
    await service.delete_collection(owner, collection)
    return Response(status_code=204)


@router.post(
    "/documents",
    status_code=202,
    responses={**_ERRORS, 200: {"model": DocumentPublic}},
    summary="Upload a document (txt, md, html, pdf, docx) into a collection",
    description="Ingestion runs in the background: poll `GET /documents/{id}` for its status "
    "and progress. Uploading the same file again changes nothing (200); a changed file under "
    "the same name replaces the old one.",
)
async def upload_document(
    owner: OwnerDep,
    service: DocumentServiceDep,
    response: Response,
    file: Annotated[UploadFile, File(description="The file.")],
    collection: Annotated[StorableText, Form(min_length=1, max_length=100)],
) -> DocumentPublic:
    limit = service.settings.max_upload_bytes
    parts: list[bytes] = []
    size = 0
    try:
        while chunk := await file.read(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the file is larger than the upload limit of {limit} bytes")
            parts.append(chunk)
    finally:
        await file.close()
    upload = await service.upload(owner, collection, file.filename or "", b"".join(parts))
    if not upload.queued and upload.document.status != DocumentStatus.FAILED.value:
        response.status_code = 200
    return _document(upload.document)


@router.get("/documents", responses=_ERRORS, summary="List documents")
async def list_documents(
    owner: OwnerDep,
    service: DocumentServiceDep,
    limit: LimitQuery = 20,
    offset: OffsetQuery = 0,
    collection: Annotated[StorableText | None, Query(max_length=100)] = None,
    status: DocumentStatus | None = None,
) -> Page[DocumentPublic]:
    items, total = await service.list_documents(
        owner, collection=collection, status=status, limit=limit, offset=offset
    )
    return Page(items=[_document(d) for d in items], total=total, limit=limit, offset=offset)


@router.get("/documents/{document_id}", responses=_ERRORS, summary="A document and its status")
async def get_document(
    document_id: str, owner: OwnerDep, service: DocumentServiceDep
) -> DocumentPublic:
    return _document(await service.get_document(owner, document_id))


@router.get(
    "/documents/{document_id}/text",
    responses=_ERRORS,
    summary="The text extracted from a document, its pages and its chunks with their offsets",
    description="What a citation's `start` and `end` index into: the page opens a cited "
    "passage in its document with this. `page_starts` says where each page of a PDF begins.",
)
async def get_document_text(
    document_id: str,
    owner: OwnerDep,
    service: DocumentServiceDep,
    chunks: Annotated[
        bool, Query(description="Include the chunks (false: the text and its pages only).")
    ] = True,
) -> DocumentText:
    found = await service.document_text(owner, document_id)
    parts = await service.chunks(owner, document_id) if chunks else []
    return DocumentText(
        id=document_id,
        name=found.name,
        media_type=found.media_type,
        text=found.text,
        page_starts=found.page_starts,
        chunks=[
            ChunkPublic(
                ordinal=c.ordinal,
                start=c.start,
                end=c.end,
                page=page_of(found.page_starts, c.start),
                text=c.text,
            )
            for c in parts
        ],
    )


@router.delete(
    "/documents/{document_id}",
    status_code=204,
    responses=_ERRORS,
    summary="Delete a document with its chunks and vectors",
)
async def delete_document(
    document_id: str, owner: OwnerDep, service: DocumentServiceDep
) -> Response:
    await service.delete_document(owner, document_id)
    return Response(status_code=204)


@router.post(
    "/documents/{document_id}/reindex",
    status_code=202,
    responses=_ERRORS,
    summary="Extract, split and embed a document again",
)
async def reindex_document(
    document_id: str, owner: OwnerDep, service: DocumentServiceDep
) -> DocumentPublic:
    return _document(await service.reindex(owner, document_id))


@router.post(
    "/search",
    responses=_ERRORS,
    tags=["search"],
    summary="Retrieval without generation: ranked chunks for a query",
)
async def search(
    body: SearchRequest, owner: OwnerDep, service: RetrievalServiceDep
) -> SearchResponse:
    result = await service.search(
        owner,
        body.query,
        collections=body.collections,
        top_k=body.top_k,
        mode=SearchMode(body.mode),
        per_document=body.per_document,
    )
    return SearchResponse(
        query=result.query,
        mode=result.mode.value,
        results=[
            SearchHit(
                rank=rank,
                score=chunk.score,
                document_id=chunk.document_id,
                document_name=chunk.document_name,
                collection_id=chunk.collection_id,
                chunk_id=chunk.chunk_id,
                start=chunk.start,
                end=chunk.end,
                page=chunk.page,
                text=chunk.text,
            )
            for rank, chunk in enumerate(result.chunks, start=1)
        ],
        timings={name: round(ms, 3) for name, ms in result.timings.items()},
        warnings=result.warnings,
    )
