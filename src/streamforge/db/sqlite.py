"""SQLite through sqlean, driven by aiosqlite.

Many Pythons (macOS's, pyenv builds) ship a ``sqlite3`` that cannot load extensions, and the
vector search of a later release needs sqlite-vec. sqlean bundles its own SQLite with
extension loading and FTS5, so StreamForge never depends on the interpreter's build; every
connection loads sqlite-vec as it opens.
SQLAlchemy's aiosqlite dialect takes the exception classes from the module it is given, so the
adapter below hands it sqlean's, keeping IntegrityError and friends mapped correctly.
"""

from __future__ import annotations

import types
from typing import Any

import aiosqlite
import sqlean
import sqlite_vec  # type: ignore[import-untyped]
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi, SQLiteDialect_aiosqlite

DIALECT_NAME = "sqlite.sqlean"


def _connect(database: str, **kwargs: Any) -> aiosqlite.Connection:
    kwargs.setdefault("check_same_thread", False)

    def connector() -> Any:
        connection = sqlean.connect(database, **kwargs)
        connection.enable_load_extension(True)
        try:
            sqlite_vec.load(connection)
        finally:
            connection.enable_load_extension(False)
        return connection

    return aiosqlite.Connection(connector, iter_chunk_size=64)


def _adapter_module() -> types.ModuleType:
    module = types.ModuleType("streamforge_aiosqlean")
    module.Connection = aiosqlite.Connection  # type: ignore[attr-defined]
    module.connect = _connect  # type: ignore[attr-defined]
    module.__version__ = getattr(aiosqlite, "__version__", "0")  # type: ignore[attr-defined]
    for name in (
        "DatabaseError",
        "Error",
        "IntegrityError",
        "NotSupportedError",
        "OperationalError",
        "ProgrammingError",
        "sqlite_version",
        "sqlite_version_info",
        "Warning",
        "InterfaceError",
        "InternalError",
        "DataError",
    ):
        setattr(module, name, getattr(sqlean, name))
    return module


class SQLiteDialect_sqlean(SQLiteDialect_aiosqlite):
    driver = "sqlean"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> AsyncAdapt_aiosqlite_dbapi:
        return AsyncAdapt_aiosqlite_dbapi(_adapter_module(), sqlean)


registry.register(DIALECT_NAME, __name__, "SQLiteDialect_sqlean")
