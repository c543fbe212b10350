"""Vector and full-text search over chunks, one interface for SQLite and PostgreSQL."""

from __future__ import annotations

from streamforge.db.database import Database
from streamforge.stores.base import ChunkStore, DocumentChunks, Hit, NewChunk, search_terms


def create_store(
    database: Database,
    *,
    ef_search: int = 100,
    ivf_min_vectors: int = 5_000,
    ivf_probes: int = 24,
) -> ChunkStore:
    """The store for the database's backend."""
    if database.engine.dialect.name == "sqlite":
        from streamforge.stores.sqlite import SQLiteChunkStore

        return SQLiteChunkStore(database, ivf_min_vectors=ivf_min_vectors, ivf_probes=ivf_probes)
    from streamforge.stores.postgres import PostgresChunkStore

    return PostgresChunkStore(database, ef_search=ef_search)


__all__ = ["ChunkStore", "DocumentChunks", "Hit", "NewChunk", "create_store", "search_terms"]
