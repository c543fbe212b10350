"""A battery of hostile requests: every one gets a clear 4xx JSON error and stores nothing.

Bodies (huge, deeply nested, invalid UTF-8, lone surrogates, NUL characters, wrong types,
truncated, non-finite numbers, ...) go to every route that takes a JSON body; headers (huge,
many) and `Last-Event-ID` values (garbage, another user's) to the stream routes. It runs on
SQLite and on PostgreSQL, which rejects NUL in text itself. Afterwards the database holds
exactly what it held before.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from sqlalchemy import func, select

from streamforge.models import ApiKey, ChatSession, Collection, Message, PromptTemplate, User
from tests.conftest import AppFactory, live_server
from tests.procs import read_sse

AUTH = {"enabled": True, "key_cache_seconds": 0}

# Routes that take a JSON body, with a valid body each; "{session}" and "{template}" are
# filled in with the caller's own.
TARGETS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/chat", {"message": "hello"}),
    ("POST", "/sessions", {"title": "a title"}),
    ("PATCH", "/sessions/{session}", {"title": "a title"}),
    ("POST", "/templates", {"name": "brief", "system_prompt": "Be brief."}),
    ("PUT", "/templates/{template}", {"system_prompt": "Be brief."}),
    ("POST", "/collections", {"name": "notes"}),
    ("POST", "/search", {"query": "hello"}),
    ("POST", "/v1/chat/completions", {"model": "simulated", "messages": []}),
    ("POST", "/v1/embeddings", {"model": "simulated", "input": "hello"}),
    ("POST", "/admin/users", {"name": "mallory"}),
    ("POST", "/admin/keys", {"user": "mallory"}),
]

NESTED = b"[" * 50_000 + b"]" * 50_000


def hostile_bodies(valid: dict[str, Any]) -> list[tuple[str, bytes, str]]:
    """(name, raw body, content type) of hostile variants of a valid body."""
    import json

    def with_strings(value: str) -> bytes:
        replaced = {k: (value if isinstance(v, str) else v) for k, v in valid.items()}
        # ensure_ascii keeps lone surrogates as \\ud800 escapes: JSON the client can send.
        return json.dumps(replaced, ensure_ascii=True).encode()

    first_key = next(iter(valid))
    ctype = "application/json"
    return [
        ("ten megabytes", b'{"' + first_key.encode() + b'": "' + b"a" * 10_000_000 + b'"}', ctype),
        ("deeply nested", b'{"' + first_key.encode() + b'": ' + NESTED + b"}", ctype),
        ("deeply nested top", NESTED, ctype),
        ("invalid utf-8", b'{"' + first_key.encode() + b'": "\xff\xfe\xc3("}', ctype),
        ("lone surrogate", with_strings("a\ud800b"), ctype),
        ("low surrogate", with_strings("\udfffz"), ctype),
        ("nul character", with_strings("a\x00b"), ctype),
        ("only nul", with_strings("\x00"), ctype),
        ("array body", b"[1, 2, 3]", ctype),
        ("null body", b"null", ctype),
        ("string body", b'"hello"', ctype),
        ("empty body", b"", ctype),
        ("truncated", b'{"' + first_key.encode() + b'": "abc', ctype),
        ("infinity", b'{"' + first_key.encode() + b'": Infinity}', ctype),
        ("nan", b'{"' + first_key.encode() + b'": NaN}', ctype),
        ("huge number", b'{"' + first_key.encode() + b'": 1e999999}', ctype),
        ("wrong type", b'{"' + first_key.encode() + b'": {"nested": true}}', ctype),
        ("long array", b'{"' + first_key.encode() + b'": [' + b"1," * 200_000 + b"1]}", ctype),
        ("comment", b'{"' + first_key.encode() + b'": "a" /* hi */}', ctype),
        ("two documents", b'{"' + first_key.encode() + b'": "a"}{"x": 1}', ctype),
    ]


async def counts(app: Any) -> dict[str, int]:
    database = app.state.components.database
    result = {}
    async with database.read() as db:
        for model in (ChatSession, Message, PromptTemplate, Collection, User, ApiKey):
            result[model.__name__] = int(
                (await db.execute(select(func.count()).select_from(model))).scalar_one()
            )
    return result


def assert_clear_4xx(response: httpx.Response, what: str) -> None:
    assert 400 <= response.status_code < 500, (what, response.status_code, response.text[:300])
    error = response.json()["error"]
    assert isinstance(error["code"], str) and error["code"], what
    assert isinstance(error["message"], str) and error["message"], what


async def test_hostile_requests_get_clear_4xx_and_store_nothing(
    app_factory: AppFactory, database_url: str
) -> None:
    app = app_factory(database_url, auth=AUTH)
    async with (
        live_server(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as client,
    ):
        from streamforge.models import Role

        auth = server.components.auth
        await auth.create_user("root", Role.ADMIN)
        await auth.create_user("ada")
        await auth.create_user("bob")
        root = {"Authorization": f"Bearer {(await auth.create_key('root'))[0]}"}
        ada = {"Authorization": f"Bearer {(await auth.create_key('ada'))[0]}"}
        bob = {"Authorization": f"Bearer {(await auth.create_key('bob'))[0]}"}
        turn = await read_sse(f"{server.url}/chat", "POST", json={"message": "hi"}, headers=ada)
        session_id = str(turn.session["session_id"])
        stream_id = str(turn.session["stream_id"])
        made = await client.post(
            "/templates", json={"name": "mine", "system_prompt": "Hi."}, headers=ada
        )
        assert made.status_code == 201
        before = await counts(app)

        sent = 0
        slowest = 0.0
        for method, path, valid in TARGETS:
            path = path.replace("{session}", session_id).replace("{template}", "mine")
            headers = root if path.startswith("/admin") else ada
            for name, body, ctype in hostile_bodies(valid):
                if path == "/sessions" and name in ("null body", "empty body"):
                    continue  # the body is optional there: no body makes an untitled session
                started = time.perf_counter()
                response = await client.request(
                    method, path, content=body, headers={**headers, "Content-Type": ctype}
                )
                slowest = max(slowest, time.perf_counter() - started)
                assert_clear_4xx(response, f"{method} {path}: {name}")
                sent += 1

        # Every id in every path (from the route table), and the list filters, made hostile.
        from tests.test_auth import api_routes

        for method, route in api_routes(app):
            if "{" not in route or route.startswith("/v1/models"):
                continue
            for bad in ("%00", "a%00b", "%ff%fe", "%ed%a0%80", "x" * 5000, "..%2f..%2fetc"):
                target = "/".join(
                    bad if part.startswith("{") else part for part in route.split("/")
                )
                headers = root if target.startswith("/admin") else ada
                response = await client.request(method, target, headers=headers, json={})
                if route == "/chat/streams/{stream_id}" and method == "GET":
                    assert response.status_code in (204, 400, 404, 422), (target, response.text)
                else:
                    assert_clear_4xx(response, f"{method} {target[:80]}")
                sent += 1
        for query in ("collection=%00", "status=%00", "collection=%ff", "limit=-1", "offset=1e9"):
            response = await client.get(f"/documents?{query}", headers=ada)
            assert_clear_4xx(response, query)
            sent += 1

        # Multipart uploads with hostile fields.
        for collection, filename in (
            ("a\x00b", "notes.txt"),
            ("mine", "no\x00tes.txt"),
            ("x" * 10_000, "notes.txt"),
            ("mine", "x" * 10_000 + ".txt"),
        ):
            response = await client.post(
                "/documents",
                data={"collection": collection},
                files={"file": (filename, b"some text", "text/plain")},
                headers=ada,
            )
            assert_clear_4xx(response, f"upload {collection[:20]!r} {filename[:20]!r}")
            sent += 1

        # Headers: huge, many, and Last-Event-ID values that are garbage or not this user's.
        stream = f"/chat/streams/{stream_id}"
        for name, extra in (
            ("huge header", {"X-Filler": "a" * 100_000}),
            ("many headers", {f"X-H{n}": "v" * 100 for n in range(500)}),
            ("huge key", {"Authorization": "Bearer " + "k" * 100_000}),
        ):
            response = await client.get("/sessions", headers={**ada, **extra})
            assert_clear_4xx(response, name)
            sent += 1
        for garbage in (
            "x1",
            "-1",
            "1.5",
            "1e3",
            "3 4",
            "\uff10\uff11",  # full-width digits
            "9" * 30,
            "NaN",
            "0x10",
            "1;2",
        ):
            raw = {**ada, "Last-Event-ID": garbage.encode("utf-8")}
            response = await client.get(stream, headers=raw)
            assert_clear_4xx(response, f"Last-Event-ID {garbage!r}")
            response = await client.get(f"{stream}?last_event_id={garbage}", headers=ada)
            assert_clear_4xx(response, f"last_event_id {garbage!r}")
            sent += 2
        # Another user's stream id with a valid Last-Event-ID reads as unknown: nothing.
        foreign = await client.get(stream, headers={**bob, "Last-Event-ID": "1"})
        assert foreign.status_code == 204 and foreign.content == b""
        sent += 1

        assert sent >= 200
        assert slowest < 10, slowest
        # Nothing stored half-way, and the server still answers.
        assert await counts(app) == before
        assert (await client.get("/health")).status_code == 200
        again = await read_sse(f"{server.url}/chat", "POST", json={"message": "ok?"}, headers=ada)
        assert again.done["status"] == "completed"
        await asyncio.sleep(0)
