"""One timestamp format everywhere: every response of every route in the route table writes
its times in UTC, RFC 3339 with "Z" — a create and a later get of the same object agree (SQLite
hands back naive datetimes, PostgreSQL ones in the session's time zone)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson

from tests.conftest import AppFactory, live_server
from tests.procs import read_sse
from tests.test_auth import AUTH, api_routes, bearer, fill, keys_for, owned_resources

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
# Not JSON: the page, its files and the Prometheus text.
# Pages and the Prometheus text format.
NOT_JSON = {
    "/ui",
    "/ui/app.js",
    "/ui/style.css",
    "/metrics",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}


def bodies(ids: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    """A valid request for every route that takes a body (the documents upload aside)."""
    return {
        ("POST", "/chat"): {"message": "what time is it?", "session_id": ids["session_id"]},
        ("POST", "/sessions"): {"title": "timestamps"},
        ("PATCH", "/sessions/{session_id}"): {"title": "renamed"},
        ("POST", "/templates"): {"name": "clock", "system_prompt": "Tell the time."},
        ("PUT", "/templates/{name}"): {"system_prompt": "Be brief, always."},
        ("POST", "/collections"): {"name": "more-docs"},
        ("POST", "/search"): {"query": "notes"},
        ("POST", "/admin/users"): {"name": "carl"},
        ("POST", "/admin/keys"): {"user": "dora", "name": "walk"},
        ("POST", "/v1/chat/completions"): {
            "model": "simulated",
            "messages": [{"role": "user", "content": "hi"}],
        },
        ("POST", "/v1/embeddings"): {"model": "default", "input": "hello"},
    }


def timestamps(value: Any) -> list[str]:
    """Every string in ``value`` that is a date and time."""
    if isinstance(value, str):
        return [value] if TIMESTAMP.match(value) else []
    if isinstance(value, dict):
        return [found for item in value.values() for found in timestamps(item)]
    if isinstance(value, list):
        return [found for item in value for found in timestamps(item)]
    return []


async def test_every_timestamp_of_every_route_is_rfc3339_utc(
    app_factory: AppFactory, rag_database_url: str
) -> None:
    app = app_factory(rag_database_url, auth=AUTH)
    routes = api_routes(app)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        keys = await keys_for(server.components, "ada")
        headers = bearer(keys["root"])
        ids = await owned_resources(client, server.url, "root", keys["root"])
        made = await client.post("/admin/users", json={"name": "dora"}, headers=headers)
        dora_key = await client.post("/admin/keys", json={"user": "dora"}, headers=headers)
        ids["key_id"] = dora_key.json()["id"]
        ids["model"] = "simulated"
        seen: dict[tuple[str, str], list[str]] = {}
        seen[("POST", "/admin/users")] = timestamps(made.json())
        requests = bodies(ids)
        # Deletions last, so that everything else still finds what it asks about.
        for method, path in sorted(routes, key=lambda route: route[0] == "DELETE"):
            if path in NOT_JSON:
                continue
            url = fill(path, ids)
            if path == "/chat/streams/{stream_id}" or (method, path) == ("POST", "/chat"):
                stream = await read_sse(
                    f"{server.url}{url}",
                    method,
                    json=requests.get((method, path)),
                    headers=headers,
                )
                found = [
                    stamp
                    for event in stream.events
                    if event.event not in ("", "message")
                    for stamp in timestamps(orjson.loads(event.data))
                ]
                seen[(method, path)] = found
                continue
            if (method, path) == ("POST", "/documents"):
                response = await client.post(
                    url,
                    data={"collection": "root-docs"},
                    files={"file": ("clock.txt", b"The clock strikes.", "text/plain")},
                    headers=headers,
                )
            else:
                response = await client.request(
                    method, url, json=requests.get((method, path)), headers=headers
                )
            assert response.status_code < 500, (method, path, response.text)
            if response.status_code == 204 or not response.content:
                continue
            assert response.headers["content-type"].startswith("application/json"), path
            seen[(method, path)] = timestamps(response.json())

    wrong = {
        route: [stamp for stamp in stamps if not RFC3339_UTC.match(stamp)]
        for route, stamps in seen.items()
    }
    assert {route: stamps for route, stamps in wrong.items() if stamps} == {}
    # The walk did see the times of each kind of object, from creates, lists and gets.
    for route in (
        ("GET", "/sessions"),
        ("GET", "/sessions/{session_id}"),
        ("GET", "/sessions/{session_id}/messages"),
        ("POST", "/sessions"),
        ("GET", "/documents"),
        ("GET", "/documents/{document_id}"),
        ("POST", "/documents"),
        ("GET", "/collections"),
        ("GET", "/templates/{name}/versions"),
        ("GET", "/admin/keys"),
        ("POST", "/admin/keys"),
        ("POST", "/admin/users"),
    ):
        assert seen.get(route), route


async def test_a_create_and_a_get_say_the_same_time(
    app_factory: AppFactory, database_url: str
) -> None:
    app = app_factory(database_url)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        created = (await client.post("/sessions", json={"title": "t"})).json()
        got = (await client.get(f"/sessions/{created['id']}")).json()
        listed = (await client.get("/sessions")).json()["items"][0]
    assert created["created_at"] == got["created_at"] == listed["created_at"]
    assert created["created_at"].endswith("Z")
