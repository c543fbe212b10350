"""Apply Alembic migrations at startup, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant works; it only has to be the same in every StreamForge worker.
_PG_LOCK_KEY = 0x5F0F_0001


# Tables and indexes outside the models' metadata: FTS5 and its shadow tables, the vector tables
# made per embedding size (and sqlite-vec's shadow tables), PostgreSQL's tsvector column and
# its index.
_UNMODELLED_TABLES = ("chunks_fts", "vec_chunks_", "chunk_vectors_")
_UNMODELLED_INDEXES = ("ix_chunks_tsv", "ix_chunk_vectors_")
_UNMODELLED_COLUMNS = ("search_vector",)


def include_name(name: str | None, type_: str, _parents: Mapping[Any, str | None]) -> bool:
    """Alembic's filter: compare only what the models describe."""
    if name is None:
        return True
    if type_ == "table":
        return not name.startswith(_UNMODELLED_TABLES)
    if type_ == "index":
        return not name.startswith(_UNMODELLED_INDEXES)
    if type_ == "column":
        return name not in _UNMODELLED_COLUMNS
    return True


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade_to_head(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Several workers may start at once: one migrates, the others wait and find it done.
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            await connection.commit()
        try:
            await connection.run_sync(_upgrade)
            await connection.commit()
        finally:
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY}
                )
                await connection.commit()
