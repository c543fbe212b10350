"""Data access for collections, documents and chunks. Every query is filtered by owner."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Row, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from streamforge.db.ids import is_valid_id
from streamforge.models import Chunk, Collection, Document


async def get_collection(db: AsyncSession, owner_id: str, ref: str) -> Collection | None:
    """A collection by id or by name."""
    condition = Collection.name == ref
    if is_valid_id(ref):
        condition = or_(Collection.id == ref, Collection.name == ref)
    result = await db.execute(
        select(Collection)
        .where(Collection.owner_id == owner_id, condition)
        .order_by((Collection.id == ref).desc())
        .limit(1)
    )
    return result.scalar_one_or_none()


async def list_collections(
    db: AsyncSession, owner_id: str, *, limit: int | None = None, offset: int = 0
) -> tuple[Sequence[Collection], int]:
    query = select(Collection).where(Collection.owner_id == owner_id).order_by(Collection.name)
    if limit is not None:
        query = query.limit(limit).offset(offset)
    items = (await db.execute(query)).scalars().all()
    total = await db.scalar(
        select(func.count()).select_from(Collection).where(Collection.owner_id == owner_id)
    )
    return items, int(total or 0)


async def document_counts(db: AsyncSession, collection_ids: Sequence[str]) -> dict[str, int]:
    if not collection_ids:
        return {}
    rows = await db.execute(
        select(Document.collection_id, func.count())
        .where(Document.collection_id.in_(collection_ids))
        .group_by(Document.collection_id)
    )
    return {collection_id: int(count) for collection_id, count in rows.all()}


async def get_document(db: AsyncSession, owner_id: str, document_id: str) -> Document | None:
    if not is_valid_id(document_id):
        return None
    query = select(Document).where(Document.owner_id == owner_id, Document.id == document_id)
    return (await db.execute(query)).scalar_one_or_none()


async def find_document(
    db: AsyncSession, owner_id: str, collection_id: str, name: str
) -> Document | None:
    result = await db.execute(
        select(Document)
        .where(
            Document.owner_id == owner_id,
            Document.collection_id == collection_id,
            Document.name == name,
        )
        .order_by(Document.created_at.desc())
        .limit(1)
    )
    return result.scalar_one_or_none()


async def list_documents(
    db: AsyncSession,
    owner_id: str,
    *,
    collection_id: str | None,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[Document], int]:
    conditions = [Document.owner_id == owner_id]
    if collection_id is not None:
        conditions.append(Document.collection_id == collection_id)
    if status is not None:
        conditions.append(Document.status == status)
    items = (
        (
            await db.execute(
                select(Document)
                .where(*conditions)
                .order_by(Document.created_at.desc(), Document.id.desc())
                .limit(limit)
                .offset(offset)
            )
        )
        .scalars()
        .all()
    )
    total = await db.scalar(select(func.count()).select_from(Document).where(*conditions))
    return items, int(total or 0)


async def document_ids_with_status(db: AsyncSession, statuses: Sequence[str]) -> list[str]:
    rows = await db.execute(
        select(Document.id).where(Document.status.in_(statuses)).order_by(Document.created_at)
    )
    return list(rows.scalars())


async def chunks_by_id(
    db: AsyncSession, owner_id: str, ids: Sequence[int]
) -> Sequence[Row[int, str, str, str, int, int, str]]:
    """The chunks with these ids that the owner has, each with its document's name: rows of
    ``id, document_id, document_name, collection_id, start, end, text``."""
    if not ids:
        return []
    rows = await db.execute(
        select(
            Chunk.id,
            Chunk.document_id,
            Document.name.label("document_name"),
            Chunk.collection_id,
            Chunk.start_offset.label("start"),
            Chunk.end_offset.label("end"),
            Chunk.text,
        )
        .join(Document, Document.id == Chunk.document_id)
        .where(Chunk.owner_id == owner_id, Chunk.id.in_(ids))
    )
    return rows.all()


async def page_starts(db: AsyncSession, document_ids: Sequence[str]) -> dict[str, list[int]]:
    """Where each page begins in the text of those of these documents that have pages."""
    if not document_ids:
        return {}
    rows = await db.execute(
        select(Document.id, Document.page_starts).where(
            Document.id.in_(set(document_ids)), Document.page_starts.is_not(None)
        )
    )
    return {document_id: list(starts) for document_id, starts in rows if starts}


async def documents_of_chunks(db: AsyncSession, ids: Sequence[int]) -> dict[int, str]:
    """Chunk id → document id, for chunks a search found (their owner is already checked by
    the collections searched)."""
    if not ids:
        return {}
    rows = await db.execute(select(Chunk.id, Chunk.document_id).where(Chunk.id.in_(ids)))
    return {int(chunk_id): document_id for chunk_id, document_id in rows}


async def chunks_of(db: AsyncSession, owner_id: str, document_id: str) -> Sequence[Chunk]:
    rows = await db.execute(
        select(Chunk)
        .where(Chunk.owner_id == owner_id, Chunk.document_id == document_id)
        .order_by(Chunk.ordinal)
    )
    return rows.scalars().all()
