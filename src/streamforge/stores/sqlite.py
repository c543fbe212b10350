"""Chunks on SQLite: sqlite-vec for vectors, FTS5 for full text, in the application's file.

Vectors sit in a ``vec0`` virtual table per vector size, partitioned by collection, so a
search reads only the collections asked for. FTS5 indexes chunk text through triggers (see
migration 0003) with the Porter stemmer; ranking is FTS5's BM25.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from streamforge.stores.base import ChunkStore, Hit, search_terms, space_table

PREFIX = "vec_chunks_"


def _blob(vector: Sequence[float]) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


class SQLiteChunkStore(ChunkStore):
    backend = "sqlite"
    prefix = PREFIX
    vector_placeholder = ":embedding"

    def vector_parameter(self, vector: Sequence[float]) -> bytes:
        return _blob(vector)

    async def _create_space(self, db: AsyncSession, dimensions: int) -> None:
        table = space_table(PREFIX, dimensions)
        await db.execute(
            text(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {table} USING vec0("
                "chunk_id integer primary key, "
                "collection_id text partition key, "
                f"embedding float[{int(dimensions)}] distance_metric=cosine)"
            )
        )

    async def _existing_spaces(self, db: AsyncSession) -> list[int]:
        rows = await db.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB :pattern"),
            {"pattern": f"{PREFIX}[0-9]*"},
        )
        spaces = []
        for (name,) in rows:
            suffix = name[len(PREFIX) :]
            if suffix.isdigit():
                spaces.append(int(suffix))
        return spaces

    async def _delete_from_space(
        self, db: AsyncSession, dimensions: int, ids: Sequence[int]
    ) -> None:
        table = space_table(PREFIX, dimensions)
        placeholders = ", ".join(str(int(i)) for i in ids)
        await db.execute(text(f"DELETE FROM {table} WHERE chunk_id IN ({placeholders})"))

    async def vector_search(
        self,
        db: AsyncSession,
        vector: Sequence[float],
        collection_ids: Sequence[str],
        k: int,
    ) -> list[Hit]:
        dimensions = len(vector)
        if not collection_ids or dimensions not in await self._known_spaces(db):
            return []
        table = space_table(PREFIX, dimensions)
        query = text(
            f"SELECT chunk_id, distance FROM {table} "
            "WHERE embedding MATCH :embedding AND k = :k AND collection_id = :collection"
        )
        blob = _blob(vector)
        hits: list[Hit] = []
        for collection_id in collection_ids:
            rows = await db.execute(query, {"embedding": blob, "k": k, "collection": collection_id})
            hits.extend(Hit(int(chunk_id), 1.0 - float(distance)) for chunk_id, distance in rows)
        hits.sort(key=lambda hit: -hit.score)
        return hits[:k]

    async def _known_spaces(self, db: AsyncSession) -> set[int]:
        if not self._spaces:
            self._spaces.update(await self._existing_spaces(db))
        return self._spaces

    async def text_search(
        self,
        db: AsyncSession,
        query: str,
        collection_ids: Sequence[str],
        k: int,
    ) -> list[Hit]:
        terms = search_terms(query)
        if not terms or not collection_ids:
            return []
        # Each word quoted, so nothing in a query is read as FTS5 syntax; any word may match.
        match = " OR ".join(f'"{term}"' for term in terms)
        collections = {f"c{i}": c for i, c in enumerate(collection_ids)}
        in_list = ", ".join(f":{name}" for name in collections)
        rows = await db.execute(
            text(
                "SELECT chunks.id, bm25(chunks_fts) AS rank FROM chunks_fts "
                "JOIN chunks ON chunks.id = chunks_fts.rowid "
                f"WHERE chunks_fts MATCH :match AND chunks.collection_id IN ({in_list}) "
                "ORDER BY rank LIMIT :k"
            ),
            {"match": match, "k": k, **collections},
        )
        # FTS5's bm25() is negative, lower meaning better.
        return [Hit(int(chunk_id), -float(rank)) for chunk_id, rank in rows]
