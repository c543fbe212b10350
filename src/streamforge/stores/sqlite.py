"""Chunks on SQLite: sqlite-vec for vectors, FTS5 for full text, in the application's file.

Vectors sit in a ``vec0`` virtual table per vector size, partitioned by collection, so a
search reads only the collections asked for. sqlite-vec searches exactly; a collection of at
least ``ivf_min_vectors`` is also searched through an in-memory IVF index built from those
vectors in the background (``stores/ivf.py``), and exactly again whenever the index is behind
the collection's latest write. FTS5 indexes chunk text through triggers (see
migration 0003) with the Porter stemmer; ranking is FTS5's BM25.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import numpy as np
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from streamforge.db.database import Database
from streamforge.models import Chunk, Collection
from streamforge.stores.base import ChunkStore, Hit, space_table
from streamforge.stores.ivf import IVFIndex

logger = logging.getLogger(__name__)

PREFIX = "vec_chunks_"


def _blob(vector: Sequence[float]) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


class SQLiteChunkStore(ChunkStore):
    backend = "sqlite"

    def __init__(
        self, database: Database, *, ivf_min_vectors: int = 5_000, ivf_probes: int = 24
    ) -> None:
        super().__init__(database)
        self.ivf_min_vectors = ivf_min_vectors
        self.ivf_probes = ivf_probes
        self._indexes: dict[tuple[str, int], IVFIndex] = {}
        # (collection, dimensions) → the version at which the collection was too small.
        self._small: dict[tuple[str, int], int] = {}
        self._builds: dict[tuple[str, int], asyncio.Task[None]] = {}

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

    async def _vector_search(
        self,
        db: AsyncSession,
        vector: Sequence[float],
        collection_ids: Sequence[str],
        k: int,
    ) -> list[Hit]:
        dimensions = len(vector)
        table = space_table(PREFIX, dimensions)
        query = text(
            f"SELECT chunk_id, distance FROM {table} "
            "WHERE embedding MATCH :embedding AND k = :k AND collection_id = :collection"
        )
        blob = _blob(vector)
        query_vector = np.asarray(vector, dtype=np.float32)
        hits: list[Hit] = []
        for collection_id in collection_ids:
            index = await self._index(db, collection_id, dimensions)
            if index is not None:
                hits.extend(index.search(query_vector, k, self.ivf_probes))
                continue
            rows = await db.execute(query, {"embedding": blob, "k": k, "collection": collection_id})
            hits.extend(Hit(int(chunk_id), 1.0 - float(distance)) for chunk_id, distance in rows)
        hits.sort(key=lambda hit: -hit.score)
        return hits[:k]

    async def _index(
        self, db: AsyncSession, collection_id: str, dimensions: int
    ) -> IVFIndex | None:
        """The collection's IVF index if it is large and the index is current; otherwise
        None (search exactly), starting a build in the background when one is due."""
        if self.ivf_min_vectors <= 0:
            return None
        key = (collection_id, dimensions)
        version = await db.scalar(
            select(Collection.vectors_version).where(Collection.id == collection_id)
        )
        if version is None:
            self._indexes.pop(key, None)
            return None
        index = self._indexes.get(key)
        if index is not None and index.version == version:
            return index
        if self._small.get(key) == version:
            return None
        count = await db.scalar(
            select(func.count()).select_from(Chunk).where(Chunk.collection_id == collection_id)
        )
        if int(count or 0) < self.ivf_min_vectors:
            self._small[key] = version
            self._indexes.pop(key, None)
            return None
        building = self._builds.get(key)
        if building is None or building.done():
            self._builds[key] = asyncio.create_task(self._build(collection_id, dimensions))
        return None

    async def build_index(self, collection_id: str, dimensions: int) -> None:
        """Build (or rebuild) a collection's index now, and wait for it."""
        await self._build(collection_id, dimensions)

    def index_of(self, collection_id: str, dimensions: int) -> IVFIndex | None:
        return self._indexes.get((collection_id, dimensions))

    async def _build(self, collection_id: str, dimensions: int) -> None:
        table = space_table(PREFIX, dimensions)
        try:
            # One read transaction: the version and the vectors are of the same snapshot.
            async with self.database.read() as db:
                version = await db.scalar(
                    select(Collection.vectors_version).where(Collection.id == collection_id)
                )
                rows = await db.execute(
                    text(f"SELECT chunk_id, embedding FROM {table} WHERE collection_id = :c"),
                    {"c": collection_id},
                )
                fetched = rows.all()
            if version is None or not fetched:
                return
            ids = np.fromiter((row[0] for row in fetched), dtype=np.int64, count=len(fetched))
            blob = b"".join(row[1] for row in fetched)
            del fetched
            vectors = np.frombuffer(blob, dtype=np.float32).reshape(len(ids), dimensions)
            index = await asyncio.to_thread(IVFIndex.build, int(version), ids, vectors)
            self._indexes[(collection_id, dimensions)] = index
            logger.info(
                "built the vector index of collection %s: %d vectors in %d cells",
                collection_id,
                len(index),
                len(index.centroids),
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("building the vector index of collection %s failed", collection_id)

    async def aclose(self) -> None:
        for task in self._builds.values():
            task.cancel()
        await asyncio.gather(*self._builds.values(), return_exceptions=True)
        self._builds.clear()
        self._indexes.clear()

    async def _text_search(
        self,
        db: AsyncSession,
        terms: Sequence[str],
        collection_ids: Sequence[str],
        k: int,
    ) -> list[Hit]:
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
