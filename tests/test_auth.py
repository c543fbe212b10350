"""API keys: who may call what, and that one user never reaches another's data."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import AppFactory, live_server
from tests.polling import eventually
from tests.procs import read_sse


async def _json(response: Awaitable[httpx.Response]) -> Any:
    return (await response).json()


AUTH = {"enabled": True, "key_cache_seconds": 0}


async def keys_for(server_components: object, *names: str) -> dict[str, str]:
    """An admin key, then a user key for each name."""
    from streamforge.models import Role

    auth = server_components.auth  # type: ignore[attr-defined]
    await auth.create_user("root", Role.ADMIN)
    keys = {"root": (await auth.create_key("root", "tests"))[0]}
    for name in names:
        await auth.create_user(name)
        keys[name] = (await auth.create_key(name))[0]
    return keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_every_route_but_the_public_ones_needs_a_key(app_factory: AppFactory) -> None:
    app = app_factory(auth=AUTH)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        keys = await keys_for(server.components, "ada")
        for path in ("/", "/health", "/docs", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path
        for method, path in (
            ("GET", "/sessions"),
            ("POST", "/chat"),
            ("GET", "/metrics"),
            ("GET", "/v1/models"),
            ("GET", "/chat/health"),
            ("GET", "/admin/keys"),
            ("GET", "/chat/streams/0190a0a0-0000-7000-8000-000000000000"),
        ):
            missing = await client.request(method, path, json={"message": "hi"})
            assert missing.status_code == 401, (method, path)
            assert missing.json()["error"]["code"] == "unauthorized"
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = await client.request(method, path, headers=bearer("sf_nope"))
            assert wrong.status_code == 401
            basic = await client.request(method, path, headers={"Authorization": "Basic eDp5"})
            assert basic.status_code == 401
        ok = await client.get("/sessions", headers=bearer(keys["ada"]))
        assert ok.status_code == 200
        answer = await read_sse(
            f"{server.url}/chat", "POST", json={"message": "hi"}, headers=bearer(keys["ada"])
        )
        assert answer.done["status"] == "completed"


async def test_admin_api_creates_lists_and_revokes_keys(app_factory: AppFactory) -> None:
    app = app_factory(auth=AUTH)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        keys = await keys_for(server.components, "ada")
        root, ada = bearer(keys["root"]), bearer(keys["ada"])
        assert (await client.get("/admin/keys", headers=ada)).status_code == 403
        made = await client.post("/admin/users", json={"name": "bob"}, headers=root)
        assert made.status_code == 201 and made.json()["role"] == "user"
        again = await client.post("/admin/users", json={"name": "bob"}, headers=root)
        assert again.status_code == 409
        created = await client.post(
            "/admin/keys", json={"user": "bob", "name": "laptop"}, headers=root
        )
        assert created.status_code == 201
        key = created.json()["key"]
        assert key.startswith("sf_") and len(key) > 40
        assert (await client.get("/sessions", headers=bearer(key))).status_code == 200

        listed = (await client.get("/admin/keys", headers=root)).json()
        assert {k["user"] for k in listed} == {"root", "ada", "bob"}
        # Never the key, never its hash: only its first characters.
        text = str(listed)
        assert key not in text and "hash" not in text
        assert any(k["prefix"] == key[:11] for k in listed)

        revoked = await client.delete(f"/admin/keys/{created.json()['id']}", headers=root)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert (await client.get("/sessions", headers=bearer(key))).status_code == 401
        unknown = await client.delete("/admin/keys/nope", headers=root)
        assert unknown.status_code == 404
        # Roles and owners come from the key, never from a body.
        sneaky = await client.post(
            "/sessions", json={"title": "x", "owner_id": "root"}, headers=ada
        )
        assert sneaky.status_code == 422


async def test_one_user_never_reaches_anothers_sessions_or_streams(
    app_factory: AppFactory,
) -> None:
    app = app_factory(auth=AUTH, streaming={"simulated_delay": 0.02})
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        keys = await keys_for(server.components, "ada", "bob")
        ada, bob = bearer(keys["ada"]), bearer(keys["bob"])
        turn = await read_sse(
            f"{server.url}/chat", "POST", json={"message": "ada's secret"}, headers=ada
        )
        session_id, stream_id = turn.session["session_id"], turn.session["stream_id"]
        for method, path in (
            ("GET", f"/sessions/{session_id}"),
            ("GET", f"/sessions/{session_id}/messages"),
            ("PATCH", f"/sessions/{session_id}"),
            ("DELETE", f"/sessions/{session_id}"),
            ("POST", f"/chat/streams/{stream_id}/cancel"),
        ):
            response = await client.request(method, path, json={"title": "mine"}, headers=bob)
            assert response.status_code == 404, (method, path)
        # A foreign stream reads exactly like an unknown one.
        assert (await client.get(f"/chat/streams/{stream_id}", headers=bob)).status_code == 204
        hijack = await client.post(
            "/chat", json={"message": "hi", "session_id": session_id}, headers=bob
        )
        assert hijack.status_code == 404
        assert (await client.get("/sessions", headers=bob)).json()["items"] == []
        # And ada still has everything, untouched.
        mine = (await client.get(f"/sessions/{session_id}/messages", headers=ada)).json()
        assert mine["items"][0]["content"] == "ada's secret"
        assert (await client.get(f"/sessions/{session_id}", headers=ada)).json()["title"]


async def run_cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamforge",
        *args,
        env={**os.environ, "STREAMFORGE_DATA_DIR": str(tmp_path / "data")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_keys_cli_and_the_refusal_to_serve_openly(tmp_path: Path) -> None:
    code, out, err = await run_cli(tmp_path, "keys", "create", "--user", "ops", "--admin")
    assert code != 0 and out == "" and "--create-database" in err  # no database there yet
    assert not (tmp_path / "data").exists()
    code, out, err = await run_cli(
        tmp_path, "keys", "create", "--user", "ops", "--admin", "--create-database"
    )
    assert code == 0
    key = out.strip()
    key_id = err.split("key id ", 1)[1].split(";", 1)[0]
    assert key.startswith("sf_")
    code, out, _ = await run_cli(tmp_path, "keys", "list")
    assert code == 0 and "ops" in out and key not in out
    # Stored hashed: the key itself is nowhere in the database file.
    assert key.encode() not in (tmp_path / "data" / "streamforge.db").read_bytes()
    code, out, _ = await run_cli(tmp_path, "keys", "revoke", key_id)
    assert code == 0 and "revoked" in out
    code, _, err = await run_cli(tmp_path, "keys", "revoke", "nope")
    # Which database, then the one error.
    assert code != 0 and len(err.strip().splitlines()) == 2
    assert err.startswith("database: ") and err.splitlines()[1].startswith("error: ")

    code, _, err = await run_cli(tmp_path, "serve", "--host", "0.0.0.0", "--port", "1")
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "authentication" in err


# --- the authorisation matrix ------------------------------------------------------------

# Every path parameter names an owned resource, except these.
NOT_OWNED = {"model"}
BODIES = {
    ("PATCH", "/sessions/{session_id}"): {"title": "taken over"},
    ("PUT", "/templates/{name}"): {"system_prompt": "taken over"},
}
MISSING_ID = "0190a0a0-0000-7000-8000-000000000000"


def api_routes(app: object) -> list[tuple[str, str]]:
    """(method, path) of every route of the app, walked from its route table."""
    from fastapi.routing import APIRoute

    def walk(routes: list[object]) -> list[object]:
        found: list[object] = []
        for route in routes:
            inner = getattr(route, "original_router", None)
            found.extend(walk(list(inner.routes)) if inner is not None else [route])
        return found

    return sorted(
        (method, route.path)
        for route in walk(list(app.routes))  # type: ignore[attr-defined]
        if isinstance(route, APIRoute)
        for method in route.methods
    )


async def owned_resources(
    client: httpx.AsyncClient, url: str, name: str, key: str
) -> dict[str, str]:
    """One of each resource for a user: session, stream, template, collection, document."""
    headers = bearer(key)
    turn = await read_sse(
        f"{url}/chat", "POST", json={"message": f"{name}'s message"}, headers=headers
    )
    template = f"{name}-notes"
    made = await client.post(
        "/templates", json={"name": template, "system_prompt": "Be brief."}, headers=headers
    )
    assert made.status_code == 201
    collection = await client.post("/collections", json={"name": f"{name}-docs"}, headers=headers)
    assert collection.status_code == 201
    upload = await client.post(
        "/documents",
        data={"collection": f"{name}-docs"},
        files={"file": ("notes.txt", f"{name} keeps notes here.".encode(), "text/plain")},
        headers=headers,
    )
    assert upload.status_code == 202
    document_id = upload.json()["id"]
    status = await eventually(
        lambda: _json(client.get(f"/documents/{document_id}", headers=headers)),
        until=lambda status: status["status"] == "ready",
        timeout=5,
    )
    assert status["status"] == "ready"
    chat_id = f"{name}-chat"
    ai_sdk = await client.post(
        "/ai-sdk/chat",
        json={
            "id": chat_id,
            "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        },
        headers=headers,
    )
    assert ai_sdk.status_code == 200 and "[DONE]" in ai_sdk.text
    return {
        "session_id": str(turn.session["session_id"]),
        "stream_id": str(turn.session["stream_id"]),
        "name": template,
        "collection": str(collection.json()["id"]),
        "document_id": str(document_id),
        "key_id": "",  # filled with the user's key id
        # The AI SDK's chat ids are the caller's own names: another user's is absent for them.
        "chat_id": chat_id,
    }


def fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace(f"{{{name}}}", value)
    return path


async def snapshot(client: httpx.AsyncClient, key: str, ids: dict[str, str]) -> object:
    """What the owner sees of their resources."""
    headers = bearer(key)
    paths = (
        f"/sessions/{ids['session_id']}",
        f"/sessions/{ids['session_id']}/messages",
        f"/templates/{ids['name']}/versions",
        f"/collections/{ids['collection']}",
        f"/documents/{ids['document_id']}",
        f"/documents/{ids['document_id']}/text",
    )
    seen = [(await client.get(path, headers=headers)).json() for path in paths]
    stream = await read_sse(f"{client.base_url}/chat/streams/{ids['stream_id']}", headers=headers)
    return seen, [(e.id, e.event, e.data) for e in stream.events]


async def test_authorisation_matrix_three_users_every_route_with_an_id(
    app_factory: AppFactory,
) -> None:
    app = app_factory(auth=AUTH, streaming={"simulated_delay": 0.0})
    routes = api_routes(app)
    with_ids = [(m, p) for m, p in routes if "{" in p]
    params = {
        part[1:-1].split(":")[0] for _, p in with_ids for part in p.split("/") if part[:1] == "{"
    }
    known = {"session_id", "stream_id", "name", "collection", "document_id", "key_id", "chat_id"}
    # A new route with an id nobody wrote a probe for fails here.
    assert params <= known | NOT_OWNED, (
        f"routes with ids the matrix does not know: {params - known - NOT_OWNED}"
    )
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        keys = await keys_for(server.components, "ada", "bob", "cy")
        listed = (await client.get("/admin/keys", headers=bearer(keys["root"]))).json()
        users = ("ada", "bob", "cy")
        owned = {}
        for user in users:
            owned[user] = await owned_resources(client, server.url, user, keys[user])
            owned[user]["key_id"] = next(k["id"] for k in listed if k["user"] == user)
        before = {user: await snapshot(client, keys[user], owned[user]) for user in users}

        probes = 0
        for method, path in with_ids:
            if any(f"{{{name}" in path for name in NOT_OWNED):
                continue
            body = BODIES.get((method, path))
            for owner in users:
                for prober in users:
                    if prober == owner:
                        continue

                    missing = {name: MISSING_ID for name in owned[owner]}
                    missing["name"] = "no-such-template"
                    headers = bearer(keys[prober])
                    foreign = await client.request(
                        method, fill(path, owned[owner]), json=body, headers=headers
                    )
                    absent = await client.request(
                        method, fill(path, missing), json=body, headers=headers
                    )
                    probes += 1
                    # Another user's id answers exactly like an id that does not exist.
                    assert foreign.status_code == absent.status_code, (method, path, owner, prober)
                    assert foreign.status_code in (204, 403, 404), (method, path, foreign.text)
                    if foreign.status_code == 404:
                        assert foreign.json()["error"]["code"] == "not_found"
        assert probes >= 3 * 2 * 15
        # ... and changes nothing.
        for user in users:
            assert await snapshot(client, keys[user], owned[user]) == before[user], user


# --- rate limits ---------------------------------------------------------------------------


async def test_requests_per_minute_per_key(app_factory: AppFactory) -> None:
    app = app_factory(auth=AUTH, limits={"requests_per_minute": 10})
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        keys = await keys_for(server.components, "ada", "bob")
        answers = [
            (await client.get("/sessions", headers=bearer(keys["ada"]))).status_code
            for _ in range(12)
        ]
        assert answers == [200] * 10 + [429] * 2
        limited = await client.get("/sessions", headers=bearer(keys["ada"]))
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # Per key: another key has its own ten; health is never limited.
        assert (await client.get("/sessions", headers=bearer(keys["bob"]))).status_code == 200
        assert (await client.get("/health")).status_code == 200


async def test_a_limit_holds_across_two_workers_sharing_redis(tmp_path: Path) -> None:
    from tests.conftest import postgres_database
    from tests.procs import redis_server, server_process

    async with redis_server(tmp_path) as redis, postgres_database() as database:
        env = {
            "STREAMFORGE_DATABASE__URL": database,
            "STREAMFORGE_REDIS__URL": redis.url,
            "STREAMFORGE_AUTH__ENABLED": "true",
            "STREAMFORGE_LIMITS__REQUESTS_PER_MINUTE": "10",
        }
        async with (
            server_process(tmp_path, env, name="first") as first,
            server_process(tmp_path, env, name="second") as second,
        ):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "streamforge",
                "keys",
                "create",
                "--user",
                "ada",
                env={**os.environ, **env, "STREAMFORGE_DATA_DIR": str(tmp_path / "cli")},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, _ = await asyncio.wait_for(process.communicate(), 60)
            key = out.decode().strip()
            statuses = []
            async with httpx.AsyncClient() as client:
                for n in range(16):
                    server = (first, second)[n % 2]
                    response = await client.get(f"{server.url}/sessions", headers=bearer(key))
                    statuses.append(response.status_code)
            assert statuses.count(200) == 10
            assert statuses.count(429) == 6


# --- markers: nothing of one user ever shows up for another --------------------------------


async def test_markers_never_surface_for_another_user(app_factory: AppFactory) -> None:
    import uuid

    app = app_factory(auth=AUTH)
    users = ("ada", "bob", "cy")
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        keys = await keys_for(server.components, *users)
        marker = {user: f"marker{user}{uuid.uuid4().hex[:12]}" for user in users}
        streams = {}
        for user in users:
            headers = bearer(keys[user])
            # The same collection name for everyone: names are per user.
            assert (
                await client.post("/collections", json={"name": "docs"}, headers=headers)
            ).status_code == 201
            text = f"The secret word of {user} is {marker[user]}. Keep it safe."
            upload = await client.post(
                "/documents",
                data={"collection": "docs"},
                files={"file": ("secret.txt", text.encode(), "text/plain")},
                headers=headers,
            )
            document_id = upload.json()["id"]
            # Awaited within this iteration: the loop variables cannot change meanwhile.
            await eventually(
                lambda: client.get(f"/documents/{document_id}", headers=headers),  # noqa: B023
                until=lambda got: got.json()["status"] == "ready",
                timeout=5,
            )
            turn = await read_sse(
                f"{server.url}/chat",
                "POST",
                json={"message": f"remember {marker[user]}", "rag": True},
                headers=headers,
            )
            # The owner does find their own marker, with the words the probes below use.
            assert marker[user] in str(turn.typed("sources"))
            own = await client.post(
                "/search", json={"query": f"secret word of {user}"}, headers=headers
            )
            assert marker[user] in str(own.json()["results"])
            streams[user] = str(turn.session["stream_id"])
            template = {"name": "secret", "system_prompt": f"Say {marker[user]}."}
            assert (await client.post("/templates", json=template, headers=headers)).is_success

        probes = 0
        for prober in users:
            headers = bearer(keys[prober])
            for owner in users:
                if owner == prober:
                    continue
                secret = marker[owner]
                # Words that find the owner's document, without the marker itself (a probe must
                # not put the marker into the prober's own sessions).
                question = f"what is the secret word of {owner}"
                bodies: list[str] = []
                for rag in (True, ["docs"], {"collections": ["docs"], "top_k": 20}):
                    turn = await read_sse(
                        f"{server.url}/chat",
                        "POST",
                        json={"message": question, "rag": rag},
                        headers=headers,
                    )
                    bodies.append(str(turn.typed("sources")) + turn.text)
                for mode in ("hybrid", "vector", "text"):
                    query = {"query": f"secret word of {owner}", "mode": mode, "top_k": 50}
                    found = await client.post("/search", json=query, headers=headers)
                    # The results, not the echoed query.
                    bodies.append(str(found.json()["results"]))
                for path in ("/sessions", "/documents", "/collections", "/templates"):
                    bodies.append((await client.get(path, headers=headers)).text)
                bodies.append((await client.get("/templates/secret", headers=headers)).text)
                resumed = await client.get(f"/chat/streams/{streams[owner]}", headers=headers)
                bodies.append(resumed.text)
                completion = await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "simulated",
                        "messages": [{"role": "user", "content": "secret word?"}],
                        "rag": True,
                    },
                    headers=headers,
                )
                bodies.append(completion.text)
                probes += len(bodies)
                for body in bodies:
                    assert secret not in body, (prober, owner)
        assert probes >= 50


async def test_bodies_cannot_set_owner_role_or_ids(app_factory: AppFactory) -> None:
    from tests.test_hostile_requests import TARGETS

    app = app_factory(auth=AUTH)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        keys = await keys_for(server.components, "ada", "bob")
        ada, bob = bearer(keys["ada"]), bearer(keys["bob"])
        root_user = (await server.components.auth.user("root")).id
        turn = await read_sse(f"{server.url}/chat", "POST", json={"message": "hi"}, headers=ada)
        session_id = str(turn.session["session_id"])
        await client.post("/templates", json={"name": "mine", "system_prompt": "Hi."}, headers=ada)
        forced = {
            "owner_id": root_user,
            "user_id": root_user,
            "owner": "bob",
            "role": "admin",
            "id": MISSING_ID,
            "session_owner": "bob",
        }
        for method, path, valid in TARGETS:
            path = path.replace("{session}", session_id).replace("{template}", "mine")
            for field, value in forced.items():
                body = {**valid, field: value}
                if path.startswith("/admin"):
                    # A user's key never gets near them, whatever the body says.
                    response = await client.request(method, path, json=body, headers=ada)
                    assert response.status_code == 403
                    continue
                response = await client.request(method, path, json=body, headers=ada)
                if path.startswith("/v1/"):
                    # OpenAI's protocol ignores unknown fields; nothing there is stored.
                    assert response.status_code in (200, 422), (path, field, response.text)
                    continue
                assert response.status_code == 422, (method, path, field, response.text)
        # Nothing landed anywhere else: bob and root see nothing of ada's.
        assert (await client.get("/sessions", headers=bob)).json()["items"] == []
        assert (await client.get(f"/sessions/{MISSING_ID}", headers=ada)).status_code == 404
        assert (await client.get("/admin/users", headers=ada)).status_code == 403


async def test_streams_at_once_and_tokens_per_day_per_key(app_factory: AppFactory) -> None:
    app = app_factory(
        auth=AUTH,
        limits={"concurrent_streams": 2, "tokens_per_day": 120},
        streaming={"simulated_delay": 0.05},
    )
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        keys = await keys_for(server.components, "ada", "bob")
        ada = bearer(keys["ada"])
        url = f"{server.url}/chat"
        # Two streams run; a third at the same time is refused, another key is not.
        running = [
            asyncio.create_task(read_sse(url, "POST", json={"message": "one"}, headers=ada)),
            asyncio.create_task(read_sse(url, "POST", json={"message": "two"}, headers=ada)),
        ]
        await asyncio.sleep(0.3)
        third = await client.post("/chat", json={"message": "three"}, headers=ada)
        assert third.status_code == 429 and third.headers["retry-after"] == "1"
        assert "streams running" in third.json()["error"]["message"]
        other = await read_sse(url, "POST", json={"message": "mine"}, headers=bearer(keys["bob"]))
        assert other.done["status"] == "completed"
        finished = await asyncio.gather(*running)
        # Slots come back when generation ends: ada may stream again.
        used = sum(r.done["usage"]["total_tokens"] for r in finished)
        assert used < 120
        again = await read_sse(url, "POST", json={"message": "four"}, headers=ada)
        assert again.done["status"] == "completed"
        used += again.done["usage"]["total_tokens"]
        assert used >= 120  # the day's tokens are spent now
        spent = await client.post("/chat", json={"message": "five"}, headers=ada)
        assert spent.status_code == 429
        assert "tokens for today" in spent.json()["error"]["message"]
        assert 0 < int(spent.headers["retry-after"]) <= 86_400
        spent_v1 = await client.post(
            "/v1/chat/completions",
            json={"model": "simulated", "messages": [{"role": "user", "content": "hi"}]},
            headers=ada,
        )
        assert spent_v1.status_code == 429


async def test_without_authentication_only_loopback_is_answered(app_factory: AppFactory) -> None:
    from tests.conftest import lifespan

    app = app_factory()
    async with lifespan(app):
        for address, expected in (("10.1.2.3", 403), ("127.0.0.1", 200), ("[::1]", 200)):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url=f"http://{address}:8000"
            ) as client:
                response = await client.get("/sessions")
                assert response.status_code == expected, (address, response.text)
                if expected == 403:
                    assert "loopback" in response.json()["error"]["message"]
                # Health stays public, whatever the address.
                assert (await client.get("/health")).status_code == 200
    allowed = app_factory(auth={"allow_unauthenticated_remote": True})
    async with lifespan(allowed):
        transport = httpx.ASGITransport(app=allowed)
        async with httpx.AsyncClient(transport=transport, base_url="http://10.1.2.3") as client:
            assert (await client.get("/sessions")).status_code == 200
