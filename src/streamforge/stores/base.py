"""What every chunk store does.

A store writes a document's chunks, their vectors and their full-text entries in one
transaction, deletes them together, and answers two kinds of query, each returning chunk ids
with a score (higher is better) restricted to the given collections:

- ``vector_search``: nearest chunks by cosine similarity to a unit-length query vector;
- ``text_search``: best full-text matches of the query's words (any of them), BM25-style.

Vectors live in one table per vector size, made when first needed, since the migrations cannot
know which embedder a deployment uses.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from streamforge.db.database import Database
from streamforge.errors import ServiceUnavailable
from streamforge.models import Chunk, Collection

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 64
_DELETE_BATCH = 500


@dataclass(frozen=True, slots=True)
class NewChunk:
    ordinal: int
    start: int
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class DocumentChunks:
    """A document's chunks and their vectors, to be written."""

    owner_id: str
    collection_id: str
    document_id: str
    chunks: Sequence[NewChunk]
    vectors: Sequence[Sequence[float]]


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: int
    score: float


# English function words: in an any-word match they match nearly every chunk, which costs
# time and ranks nothing (PostgreSQL's english configuration drops the same kind of words).
STOPWORDS = frozenset(
    (
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
    )
)


def search_terms(query: str) -> list[str]:
    """The distinct words of a query, in order, at most ``MAX_QUERY_TERMS``; stop words are
    left out unless the query has nothing else."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        seen.setdefault(word, None)
    words = list(seen)
    content = [word for word in words if word not in STOPWORDS]
    return (content or words)[:MAX_QUERY_TERMS]


class ChunkStore(abc.ABC):
    backend: str
    # True where deleting a chunk row deletes its vector too (a foreign key).
    vectors_cascade: bool = False
    # Vector tables are named prefix + dimensions; how a vector is bound in SQL.
    prefix: str
    vector_placeholder: str

    @abc.abstractmethod
    def vector_parameter(self, vector: Sequence[float]) -> object:
        """A vector as the backend's driver binds it."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._spaces: set[int] = set()

    async def start(self) -> None:  # noqa: B027 - most stores need no start
        """Check what the backend offers; called once at startup."""

    def unavailable(self) -> str | None:
        """Why vector search cannot work here, or None when it can."""
        return None

    async def write_chunks(
        self,
        db: AsyncSession,
        *,
        owner_id: str,
        collection_id: str,
        document_id: str,
        chunks: Sequence[NewChunk],
        vectors: Sequence[Sequence[float]],
    ) -> None:
        """Replace a document's chunks with these, with their vectors and text entries."""
        await self.write_documents(
            db, [DocumentChunks(owner_id, collection_id, document_id, chunks, vectors)]
        )

    async def write_documents(self, db: AsyncSession, documents: Sequence[DocumentChunks]) -> None:
        """Replace the chunks of several documents at once: one statement per table rather
        than per document (ingestion writes the documents embedded together)."""
        for document in documents:
            if len(document.chunks) != len(document.vectors):
                raise ValueError("one vector per chunk")
        ids = [document.document_id for document in documents]
        await self._delete_where(db, Chunk.document_id.in_(ids))
        filled = [document for document in documents if document.chunks]
        if not filled:
            return
        result = await db.execute(
            insert(Chunk).returning(Chunk.id, sort_by_parameter_order=True),
            [
                {
                    "owner_id": document.owner_id,
                    "collection_id": document.collection_id,
                    "document_id": document.document_id,
                    "ordinal": chunk.ordinal,
                    "start_offset": chunk.start,
                    "end_offset": chunk.end,
                    "text": chunk.text,
                }
                for document in filled
                for chunk in document.chunks
            ],
        )
        chunk_ids = iter([row[0] for row in result.all()])
        # Vectors by (space, collection): the statement binds one collection.
        groups: dict[tuple[int, str], tuple[list[int], list[Sequence[float]]]] = {}
        for document in filled:
            for vector in document.vectors:
                key = (len(vector), document.collection_id)
                group = groups.setdefault(key, ([], []))
                group[0].append(next(chunk_ids))
                group[1].append(vector)
        for (dimensions, collection_id), (group_ids, vectors) in groups.items():
            await self.ensure_space(db, dimensions)
            await self._insert_vectors(db, dimensions, collection_id, group_ids, vectors)
        await self._touch(db, sorted({document.collection_id for document in filled}))

    async def delete_document(self, db: AsyncSession, document_id: str) -> None:
        await self._delete_where(db, Chunk.document_id == document_id)

    async def delete_collection(self, db: AsyncSession, collection_id: str) -> None:
        await self._delete_where(db, Chunk.collection_id == collection_id)

    async def _delete_where(self, db: AsyncSession, condition: ColumnElement[bool]) -> None:
        touched = await db.execute(select(Chunk.collection_id).where(condition).distinct())
        await self._touch(db, list(touched.scalars()))
        if self.vectors_cascade:
            await db.execute(delete(Chunk).where(condition))
            return
        ids = list((await db.execute(select(Chunk.id).where(condition))).scalars())
        if not ids:
            return
        spaces = await self._existing_spaces(db)
        for start in range(0, len(ids), _DELETE_BATCH):
            batch = ids[start : start + _DELETE_BATCH]
            for dimensions in spaces:
                await self._delete_from_space(db, dimensions, batch)
            await db.execute(delete(Chunk).where(Chunk.id.in_(batch)))

    async def _touch(self, db: AsyncSession, collection_ids: Sequence[str]) -> None:
        if collection_ids:
            await db.execute(
                update(Collection)
                .where(Collection.id.in_(collection_ids))
                .values(vectors_version=Collection.vectors_version + 1)
            )

    async def aclose(self) -> None:  # noqa: B027 - most stores have nothing to stop
        """Stop background work; called at shutdown."""

    async def ensure_space(self, db: AsyncSession, dimensions: int) -> None:
        """Create the vector table for this vector size, once per process."""
        if dimensions in self._spaces:
            return
        await self._create_space(db, dimensions)
        self._spaces.add(dimensions)

    @abc.abstractmethod
    async def _create_space(self, db: AsyncSession, dimensions: int) -> None: ...

    @abc.abstractmethod
    async def _existing_spaces(self, db: AsyncSession) -> list[int]: ...

    async def _insert_vectors(
        self,
        db: AsyncSession,
        dimensions: int,
        collection_id: str,
        ids: Sequence[int],
        vectors: Sequence[Sequence[float]],
    ) -> None:
        table = space_table(self.prefix, dimensions)
        await db.execute(
            text(
                f"INSERT INTO {table} (chunk_id, collection_id, embedding) "
                f"VALUES (:id, :collection, {self.vector_placeholder})"
            ),
            [
                {
                    "id": chunk_id,
                    "collection": collection_id,
                    "embedding": self.vector_parameter(vector),
                }
                for chunk_id, vector in zip(ids, vectors, strict=True)
            ],
        )

    async def _delete_from_space(
        self, db: AsyncSession, dimensions: int, ids: Sequence[int]
    ) -> None:
        """Delete these chunks' vectors (stores whose vectors do not cascade)."""
        raise NotImplementedError

    async def vector_search(
        self,
        db: AsyncSession,
        vector: Sequence[float],
        collection_ids: Sequence[str],
        k: int,
    ) -> list[Hit]:
        """Nearest chunks by cosine similarity, best first."""
        self._require_vectors()
        if not collection_ids or not await self._has_space(db, len(vector)):
            return []
        return await self._vector_search(db, vector, collection_ids, k)

    async def text_search(
        self,
        db: AsyncSession,
        query: str,
        collection_ids: Sequence[str],
        k: int,
    ) -> list[Hit]:
        """Best full-text matches of any of the query's words, best first."""
        terms = search_terms(query)
        if not terms or not collection_ids:
            return []
        return await self._text_search(db, terms, collection_ids, k)

    def _require_vectors(self) -> None:
        missing = self.unavailable()
        if missing is not None:
            raise ServiceUnavailable(missing)

    async def _has_space(self, db: AsyncSession, dimensions: int) -> bool:
        """Whether a vector table of this size exists (another worker may have made it)."""
        if dimensions not in self._spaces:
            self._spaces.update(await self._existing_spaces(db))
        return dimensions in self._spaces

    @abc.abstractmethod
    async def _vector_search(
        self,
        db: AsyncSession,
        vector: Sequence[float],
        collection_ids: Sequence[str],
        k: int,
    ) -> list[Hit]: ...

    @abc.abstractmethod
    async def _text_search(
        self,
        db: AsyncSession,
        terms: Sequence[str],
        collection_ids: Sequence[str],
        k: int,
    ) -> list[Hit]: ...


def space_table(prefix: str, dimensions: int) -> str:
    """A vector table's name; dimensions is an int, so the name is safe to format into SQL."""
    return f"{prefix}{int(dimensions)}"
