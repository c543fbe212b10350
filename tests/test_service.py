"""The original endpoints: /, /health, /chat/health, /docs, /openapi.json; settings; CORS."""

from __future__ import annotations

import httpx
import pytest

from streamforge.components import Components
from streamforge.config.settings import Settings
from streamforge.db.engine import create_engine
from tests.conftest import AppFactory, asgi_client, postgres_database


async def test_index_lists_endpoints(app_factory: AppFactory) -> None:
    async with asgi_client(app_factory()) as client:
        body = (await client.get("/")).json()
    assert body["name"] == "StreamForge"
    assert body["version"]
    for endpoint in ["POST /chat", "GET /health", "GET /chat/health", "GET /sessions"]:
        assert endpoint in body["endpoints"]


async def test_health_reports_each_component(app_factory: AppFactory, database_url: str) -> None:
    async with asgi_client(app_factory(database_url)) as client:
        health = await client.get("/health")
        chat = await client.get("/chat/health")
    assert health.status_code == 200
    components = health.json()["components"]
    assert components["database"]["status"] == "ok"
    assert components["database"]["backend"] in ("sqlite", "postgresql")
    assert components["provider"]["name"] == "simulated"
    assert components["event_log"]["status"] == "ok"
    vectors = components["vector_store"]
    if components["database"]["backend"] == "sqlite":
        assert vectors["status"] == "ok"
        assert vectors["backend"] == "sqlite-vec + FTS5"
    else:  # the machine's PostgreSQL has no pgvector: chat works, retrieval says why not
        assert vectors["status"] == "unavailable"
        assert "pgvector" in vectors["error"]
    assert vectors["embedder"] == "simulated-384"
    assert chat.json()["status"] == "ok"
    assert chat.json()["providers"] == ["local", "simulated"]


async def test_health_degrades_when_the_database_is_gone(app_factory: AppFactory) -> None:
    app = app_factory()
    async with asgi_client(app) as client:
        components = app.state.components
        await components.engine.dispose()
        # Nothing listens on port 1: the database is unreachable.
        components.engine = create_engine("postgresql://nobody@127.0.0.1:1/none")
        response = await client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "degraded"
    assert response.json()["components"]["database"]["status"] == "error"


async def test_docs_and_openapi(app_factory: AppFactory) -> None:
    async with asgi_client(app_factory()) as client:
        docs = await client.get("/docs")
        schema = (await client.get("/openapi.json")).json()
    assert docs.status_code == 200
    assert "text/event-stream" in schema["paths"]["/chat"]["post"]["responses"]["200"]["content"]


async def test_cors_closed_unless_configured(app_factory: AppFactory) -> None:
    headers = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    async with asgi_client(app_factory()) as client:
        closed = await client.options("/chat", headers=headers)
    assert "access-control-allow-origin" not in closed.headers
    async with asgi_client(app_factory(cors={"origins": ["https://example.org"]})) as client:
        opened = await client.options("/chat", headers=headers)
    assert opened.headers["access-control-allow-origin"] == "https://example.org"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFORGE_DATA_DIR", "/srv/streamforge")
    monkeypatch.setenv("STREAMFORGE_STREAMING__HEARTBEAT_INTERVAL", "5")
    monkeypatch.setenv("STREAMFORGE_STREAMING__SIMULATED_DELAY", "0")
    monkeypatch.setenv("STREAMFORGE_LIMITS__MAX_MESSAGE_CHARS", "10")
    monkeypatch.setenv("STREAMFORGE_CORS__ORIGINS", '["*"]')
    settings = Settings()
    assert settings.streaming.heartbeat_interval == 5
    assert settings.streaming.simulated_delay == 0
    assert settings.limits.max_message_chars == 10
    assert settings.cors.origins == ["*"]
    assert settings.database_url == "sqlite:////srv/streamforge/streamforge.db"
    assert settings.server.port == 8000 and settings.server.host == "127.0.0.1"


@pytest.mark.postgres
async def test_retrieval_without_pgvector_says_why(app_factory: AppFactory) -> None:
    """On the machine's PostgreSQL, which has no vector extension, chat works; an upload
    fails with the reason and vector search answers 503 naming pgvector."""
    async with postgres_database() as url:
        app = app_factory(url)
        async with asgi_client(app) as client:
            await check_without_pgvector(client, app.state.components)


async def check_without_pgvector(client: httpx.AsyncClient, components: Components) -> None:
    await client.post("/collections", json={"name": "docs"})
    uploaded = await client.post(
        "/documents", data={"collection": "docs"}, files={"file": ("a.md", b"# A\n\nText.")}
    )
    assert uploaded.status_code == 202
    await components.documents.wait_idle()
    document = (await client.get(f"/documents/{uploaded.json()['id']}")).json()
    assert document["status"] == "failed"
    assert "pgvector" in document["error"]
    search = await client.post("/search", json={"query": "text", "mode": "vector"})
    assert search.status_code == 503
    assert "pgvector" in search.json()["error"]["message"]
    text_only = await client.post("/search", json={"query": "text", "mode": "text"})
    assert text_only.status_code == 200
