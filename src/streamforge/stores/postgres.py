"""Chunks on PostgreSQL: pgvector (HNSW, cosine) for vectors, tsvector for full text.

Vectors sit in a table per vector size with an HNSW index; deleting a chunk deletes its vector
through the foreign key. Filtered searches use pgvector's iterative index scan, so a filter on
a small collection still fills ``k``. Full text uses the English configuration over a GIN
index on a stored tsvector column (migration 0003); any of the query's words may match, ranked by
``ts_rank_cd``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from streamforge.db.database import Database
from streamforge.stores.base import ChunkStore, Hit, space_table

PREFIX = "chunk_vectors_"
# Any constant; the same in every worker, so two creating one table take turns.
_DDL_LOCK_KEY = 0x5F0F_0002


def search_settings(ef_search: int) -> dict[str, str]:
    """pgvector's search settings, given to every connection as it opens (no SET per query).

    Iterative scans let a filtered search walk on through the graph until it has ``k``
    results; ``relaxed_order`` may return near neighbours slightly out of order, so results
    are sorted again here.
    """
    return {"hnsw.ef_search": str(int(ef_search)), "hnsw.iterative_scan": "relaxed_order"}


def _literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"


class PostgresChunkStore(ChunkStore):
    backend = "postgresql"
    vectors_cascade = True
    prefix = PREFIX
    vector_placeholder = "CAST(:embedding AS vector)"

    def vector_parameter(self, vector: Sequence[float]) -> str:
        return _literal(vector)

    def __init__(self, database: Database, *, ef_search: int = 100) -> None:
        super().__init__(database)
        self.ef_search = int(ef_search)
        self._missing: str | None = None

    async def start(self) -> None:
        async with self.database.read() as db:
            row = (
                await db.execute(
                    text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                )
            ).first()
        if row is None:
            self._missing = (
                "the PostgreSQL server has no pgvector extension: install pgvector and run "
                "CREATE EXTENSION vector, or use SQLite"
            )

    def unavailable(self) -> str | None:
        return self._missing

    async def _create_space(self, db: AsyncSession, dimensions: int) -> None:
        self._require_vectors()
        table = space_table(PREFIX, dimensions)
        await db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK_KEY})
        await db.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {table} ("
                "chunk_id bigint PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE, "
                "collection_id varchar(36) NOT NULL, "
                f"embedding vector({int(dimensions)}) NOT NULL)"
            )
        )
        await db.execute(
            text(
                f"CREATE INDEX IF NOT EXISTS ix_{table}_hnsw ON {table} "
                "USING hnsw (embedding vector_cosine_ops)"
            )
        )

    async def _existing_spaces(self, db: AsyncSession) -> list[int]:
        rows = await db.execute(
            text(
                "SELECT tablename FROM pg_tables "
                "WHERE schemaname = current_schema() AND tablename LIKE :pattern"
            ),
            {"pattern": f"{PREFIX}%"},
        )
        return [int(name[len(PREFIX) :]) for (name,) in rows if name[len(PREFIX) :].isdigit()]

    async def _vector_search(
        self,
        db: AsyncSession,
        vector: Sequence[float],
        collection_ids: Sequence[str],
        k: int,
    ) -> list[Hit]:
        table = space_table(PREFIX, len(vector))
        if k > self.ef_search:
            # The graph search keeps ef_search candidates: widen it for a larger k.
            await db.execute(
                text("SELECT set_config('hnsw.ef_search', :ef, true)"), {"ef": str(int(k))}
            )
        rows = await db.execute(
            text(
                # No index on collection_id, on purpose: the planner must walk the HNSW graph
                # (filtering as it goes) rather than sort a whole collection exactly.
                f"SELECT chunk_id, embedding <=> CAST(:embedding AS vector) AS distance "
                f"FROM {table} WHERE collection_id = ANY(:collections) "
                "ORDER BY embedding <=> CAST(:embedding AS vector) LIMIT :k"
            ),
            {"embedding": _literal(vector), "collections": list(collection_ids), "k": k},
        )
        hits = [Hit(int(chunk_id), 1.0 - float(distance)) for chunk_id, distance in rows]
        # relaxed_order may return near neighbours slightly out of order.
        hits.sort(key=lambda hit: -hit.score)
        return hits

    async def _text_search(
        self,
        db: AsyncSession,
        terms: Sequence[str],
        collection_ids: Sequence[str],
        k: int,
    ) -> list[Hit]:
        # to_tsquery stems the words and drops stop words; "|" lets any of them match. The
        # terms are \w+ words, so nothing in them is tsquery syntax. The matches are found
        # through the GIN index first, in a CTE of their own: given the collection filter
        # too, the planner prefers the collection's btree and then tests every chunk of the
        # collection against the query.
        # The planner costs testing a tsvector far too low and picks a sequential scan over
        # the GIN index for any but the rarest words; measured 2 to 4 times slower.
        await db.execute(text("SELECT set_config('enable_seqscan', 'off', true)"))
        rows = await db.execute(
            text(
                "WITH matches AS MATERIALIZED ("
                "SELECT id, collection_id, search_vector FROM chunks "
                "WHERE search_vector @@ to_tsquery('english', :query)) "
                "SELECT id, ts_rank_cd(search_vector, to_tsquery('english', :query), 1) AS rank "
                "FROM matches WHERE collection_id = ANY(:collections) "
                "ORDER BY rank DESC LIMIT :k"
            ),
            {"query": " | ".join(terms), "collections": list(collection_ids), "k": k},
        )
        return [Hit(int(chunk_id), float(rank)) for chunk_id, rank in rows]
