"""Alembic environment.

StreamForge applies migrations itself at startup (``streamforge.db.migrate``), handing Alembic
an open connection in ``config.attributes["connection"]``. Run from the command line
(``alembic -c alembic.ini upgrade head``) it connects to ``STREAMFORGE_DATABASE__URL``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from streamforge.config.settings import Settings
from streamforge.db.engine import create_engine
from streamforge.db.migrate import include_name
from streamforge.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_settings() -> None:
    settings = Settings()
    engine = create_engine(settings.database_url)
    async with engine.begin() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_from_settings())
