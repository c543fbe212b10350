"""Collections, the documents uploaded into them, and the chunks their text is split into.

A chunk's vector and full-text index entries live beside it in the same database (sqlite-vec
and FTS5 on SQLite, pgvector and a tsvector index on PostgreSQL); ``streamforge.stores`` keeps
them in step with the rows here.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from streamforge.db.types import UTCDateTime
from streamforge.models.base import Base, IdMixin, OwnedMixin, TimestampMixin

# SQLite makes an INTEGER PRIMARY KEY the rowid, which FTS5 and sqlite-vec key their rows by.
ChunkKey = BigInteger().with_variant(Integer(), "sqlite")


class DocumentStatus(enum.StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class Collection(IdMixin, OwnedMixin, TimestampMixin, Base):
    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_collections_owner_name"),)

    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The embedder that produced the collection's vectors, fixed by its first document.
    embedding_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    dimensions: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Bumped by every write of the collection's vectors: in-memory indexes compare it to know
    # when they are stale.
    vectors_version: Mapped[int] = mapped_column(Integer, default=0)


class Document(IdMixin, OwnedMixin, TimestampMixin, Base):
    __tablename__ = "documents"
    __table_args__ = (
        Index("ix_documents_collection_name", "collection_id", "name"),
        Index("ix_documents_owner_created", "owner_id", "created_at"),
    )

    collection_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("collections.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str | None] = mapped_column(String(100), nullable=True)
    size: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=DocumentStatus.QUEUED.value)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    pages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Where each page begins in ``text`` (PDF only): citations of a passage name its page.
    page_starts: Mapped[list[int] | None] = mapped_column(JSON, nullable=True, deferred=True)
    # The uploaded bytes (for re-indexing) and the text extracted from them, which every
    # chunk's offsets index into.
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True, deferred=True)
    ingested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Chunk(OwnedMixin, Base):
    __tablename__ = "chunks"
    __table_args__ = (
        Index("ix_chunks_document_ordinal", "document_id", "ordinal"),
        Index("ix_chunks_collection_id", "collection_id"),
    )

    id: Mapped[int] = mapped_column(ChunkKey, primary_key=True, autoincrement=True)
    collection_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("collections.id", ondelete="CASCADE")
    )
    document_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("documents.id", ondelete="CASCADE")
    )
    ordinal: Mapped[int] = mapped_column(Integer)
    start_offset: Mapped[int] = mapped_column(Integer)
    end_offset: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
