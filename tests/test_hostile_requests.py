"""A battery of hostile requests: every one gets a clear 4xx JSON error and stores nothing.

Bodies (huge, deeply nested, invalid UTF-8, lone surrogates, NUL characters, wrong types,
truncated, non-finite numbers, ...) go to every route that takes a JSON body; headers (huge,
many) and `Last-Event-ID` values (garbage, another user's) to the stream routes. It runs on
SQLite and on PostgreSQL, which rejects NUL in text itself. Afterwards the database holds
exactly what it held before. No error body carries an address, a memory address or a library's
name (``assert_no_internals``, run on every response of the battery).

Also here: NUL in every string field of every request model of the OpenAPI schema (on
PostgreSQL), malformed ``Content-Length`` (a JSON 400 from the server's protocol, not uvicorn's
plain text), ``/metrics`` with a user's key, and forwarding headers with authentication off.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from streamforge.models import ApiKey, ChatSession, Collection, Message, PromptTemplate, User
from tests.conftest import AppFactory, live_server, postgres_database
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

# Bodies the reliability run found answered with a 500 on PostgreSQL: NUL in strings that
# reach a database beyond the message itself.
NUL_BODIES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/chat", {"message": "a", "idempotency_key": "k\x00"}),
    ("POST", "/chat", {"message": "a", "model": "m\x00"}),
    ("POST", "/chat", {"message": "a", "provider": "simulated\x00"}),
    ("POST", "/chat", {"message": "a", "rag": ["c\x00"]}),
    ("POST", "/chat", {"message": "a", "rag": {"collections": ["c\x00"]}}),
    ("POST", "/chat", {"message": "a", "session_id": "s\x00"}),
    ("POST", "/search", {"query": "q", "collections": ["c\x00"]}),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "m\x00", "messages": [{"role": "user", "content": "a"}]},
    ),
    ("POST", "/v1/embeddings", {"model": "simulated", "input": ["a", "b\x00"]}),
]

# What an error body must never show: addresses with ports, memory addresses, reprs,
# tracebacks, and the names of the libraries underneath.
INTERNALS = re.compile(
    r"\b\d{1,3}(?:\.\d{1,3}){3}:\d+|\[[0-9a-f:]+\]:\d+|0x[0-9a-f]{6,}|<function|object at|"
    r"functools|partial\(|Traceback|File \"|asyncpg|sqlalchemy|psycopg|aiosqlite|sqlean|"
    r"redis\.|RedisError|pydantic_core|pydantic\.|ValidationError\(|"
    r"function-(?:after|before|wrap|plain)\[|constrained-str|lax-or-strict",
    re.IGNORECASE,
)


def assert_no_internals(response: httpx.Response, what: str = "") -> None:
    if response.status_code < 400:
        return
    found = INTERNALS.search(response.text)
    assert found is None, (what or str(response.request.url), found.group(0), response.text[:500])


async def _check_error_body(response: httpx.Response) -> None:
    if response.status_code >= 400:
        await response.aread()
        assert_no_internals(response)


def battery_client(url: str) -> httpx.AsyncClient:
    """A client that checks every error body it receives for internals."""
    return httpx.AsyncClient(
        base_url=url, timeout=30, event_hooks={"response": [_check_error_body]}
    )


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
    async with live_server(app) as server, battery_client(server.url) as client:
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

        for method, path, body in NUL_BODIES:
            response = await client.request(method, path, json=body, headers=ada)
            assert response.status_code == 422, (path, body, response.text[:300])
            assert "NUL" in response.json()["error"]["message"], response.text[:300]
            sent += 1

        # Metrics describe everyone's traffic: a user's key is not enough.
        metrics = await client.get("/metrics", headers=ada)
        assert metrics.status_code == 403 and metrics.json()["error"]["code"] == "forbidden"
        assert (await client.get("/metrics", headers=root)).status_code == 200
        sent += 2

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
                # A resume of a stream that is not there is a 204 (what EventSource and the
                # AI SDK's reconnect take as "nothing to resume").
                resumes = ("/chat/streams/{stream_id}", "/ai-sdk/chat/{chat_id}/stream")
                if route in resumes and method == "GET":
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


# --------------------------------------------------------------------------------------------
# Malformed framing: the server's protocol answers before the app runs.

BAD_FRAMING = {
    "non-numeric Content-Length": b"Content-Length: abc\r\n",
    "negative Content-Length": b"Content-Length: -1\r\n",
    "two Content-Lengths": b"Content-Length: 2\r\nContent-Length: 3\r\n",
    "list Content-Length": b"Content-Length: 2, 3\r\n",
    "exponent Content-Length": b"Content-Length: 1e3\r\n",
    "Content-Length and chunked": b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
    "NUL in a header": b"X-Note: a\x00b\r\nContent-Length: 2\r\n",
    "garbage request line": None,
}


async def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:  # noqa: ASYNC109
    """Send raw bytes, read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()


async def test_malformed_framing_gets_a_json_400(app_factory: AppFactory) -> None:
    app = app_factory(auth=AUTH)
    async with live_server(app) as server:
        for name, headers in BAD_FRAMING.items():
            if headers is None:
                request = b"\x16\x03\x01 nonsense\r\n\r\n"
            else:
                request = b"POST /sessions HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n{}"
            raw = await raw_exchange(server.port, request)
            head, _, body = raw.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            assert 400 <= status < 500, (name, raw[:300])
            assert b"content-type: application/json" in head.lower(), (name, raw[:300])
            error = orjson.loads(body)["error"]
            assert error["code"] and error["message"], name
            assert INTERNALS.search(body.decode()) is None, (name, body)


# --------------------------------------------------------------------------------------------
# Authentication off: only requests from this machine, and a proxy's are not.


async def test_forwarded_requests_are_remote_when_authentication_is_off(
    app_factory: AppFactory,
) -> None:
    from streamforge.deps import is_loopback

    assert is_loopback("::ffff:127.0.0.1") and is_loopback("::1") and is_loopback("127.8.0.1")
    assert not is_loopback("::ffff:10.0.0.1") and not is_loopback("192.168.1.2")

    forwarded = [
        {"X-Forwarded-For": "203.0.113.7"},
        {"X-Forwarded-For": "127.0.0.1"},  # a proxy's word is not trusted either way
        {"Forwarded": "for=203.0.113.7;proto=https"},
        {"X-Real-IP": "203.0.113.7"},
        {"X-Forwarded-Host": "chat.example.com"},
    ]
    async with live_server(app_factory()) as server, battery_client(server.url) as client:
        assert (await client.get("/sessions")).status_code == 200
        for headers in forwarded:
            response = await client.get("/sessions", headers=headers)
            assert response.status_code == 403, (headers, response.text)
            assert "proxy" in response.json()["error"]["message"]
            metrics = await client.get("/metrics", headers=headers)
            assert metrics.status_code == 403, headers
            # The public routes stay public: a health check through the proxy works.
            assert (await client.get("/health", headers=headers)).status_code == 200
        assert (await client.get("/metrics")).status_code == 200  # the local administrator

    allowed = app_factory(auth={"allow_unauthenticated_remote": True})
    async with live_server(allowed) as server, battery_client(server.url) as client:
        for headers in forwarded:
            assert (await client.get("/sessions", headers=headers)).status_code == 200


async def test_public_metrics_need_no_key(app_factory: AppFactory) -> None:
    app = app_factory(auth={**AUTH, "public_metrics": True})
    async with live_server(app) as server, battery_client(server.url) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/sessions")).status_code == 401


# --------------------------------------------------------------------------------------------
# NUL in every string of every request model, walked from the OpenAPI schema.

NUL_TEXT = "a\x00b"

# A valid body of each route with a JSON body, rich enough that nested models are reached.
VALID_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/chat"): {"message": "hello"},
    ("POST", "/sessions"): {"title": "a title"},
    ("PATCH", "/sessions/{session_id}"): {"title": "a title"},
    ("POST", "/templates"): {"name": "brief", "system_prompt": "Be brief."},
    ("PUT", "/templates/{name}"): {"system_prompt": "Be brief."},
    ("POST", "/collections"): {"name": "notes"},
    ("POST", "/search"): {"query": "hello"},
    ("POST", "/v1/chat/completions"): {
        "model": "simulated",
        "messages": [{"role": "user", "content": "hi"}],
    },
    ("POST", "/v1/embeddings"): {"model": "simulated", "input": "hello"},
    ("POST", "/v1/messages"): {
        "model": "simulated",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    },
    ("POST", "/ai-sdk/chat"): {
        "id": "chat-1",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        "trigger": "submit-message",
    },
    ("POST", "/admin/users"): {"name": "mallory"},
    ("POST", "/admin/keys"): {"user": "mallory"},
}


class Walk:
    """Variants of a valid value, each with NUL in one string the schema allows."""

    def __init__(self, components: dict[str, Any]) -> None:
        self.components = components

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.components[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def example(self, schema: dict[str, Any]) -> Any:
        schema = self.resolve(schema)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                branches = [b for b in schema[key] if self.resolve(b).get("type") != "null"]
                return self.example(branches[0])
        if "enum" in schema:
            return schema["enum"][0]
        if "const" in schema:
            return schema["const"]
        kind = schema.get("type")
        if kind == "string":
            return "x"
        if kind in ("integer", "number"):
            return schema.get("minimum", 1)
        if kind == "boolean":
            return False
        if kind == "array":
            return [self.example(schema.get("items", {}))] if schema.get("minItems") else []
        properties = schema.get("properties", {})
        return {name: self.example(properties[name]) for name in schema.get("required", [])}

    def variants(self, schema: dict[str, Any], base: Any) -> Iterator[tuple[str, Any]]:
        schema = self.resolve(schema)
        for key in ("anyOf", "oneOf"):
            for branch in schema.get(key, []):
                yield from self.variants(branch, base)
        kind = schema.get("type")
        if kind == "string":
            yield "", NUL_TEXT
        elif kind == "array":
            items = schema.get("items", {})
            first = base[0] if isinstance(base, list) and base else self.example(items)
            for where, value in self.variants(items, first):
                yield f"[0]{where}", [value]
        elif kind == "object" or "properties" in schema:
            value = base if isinstance(base, dict) else self.example(schema)
            for name, prop in schema.get("properties", {}).items():
                for where, changed in self.variants(prop, value.get(name)):
                    yield f".{name}{where}", {**value, name: changed}
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for where, changed in self.variants(extra, None):
                    yield f".<value>{where}", {**value, "k": changed}
                yield ".<key>", {**value, NUL_TEXT: self.example(extra)}


@pytest.mark.postgres
async def test_nul_in_any_string_of_any_request_model_is_a_422_on_postgres(
    app_factory: AppFactory,
) -> None:
    async with postgres_database() as database_url:
        app = app_factory(database_url, auth=AUTH)
        async with live_server(app) as server, battery_client(server.url) as client:
            from streamforge.models import Role

            auth = server.components.auth
            await auth.create_user("root", Role.ADMIN)
            await auth.create_user("ada")
            root = {"Authorization": f"Bearer {(await auth.create_key('root'))[0]}"}
            ada = {"Authorization": f"Bearer {(await auth.create_key('ada'))[0]}"}
            session = await client.post("/sessions", json={}, headers=ada)
            template = await client.post(
                "/templates", json={"name": "mine", "system_prompt": "Hi."}, headers=ada
            )
            assert session.status_code == 201 and template.status_code == 201
            fill = {"session_id": session.json()["id"], "name": "mine"}
            before = await counts(app)

            schema = app.openapi()
            walk = Walk(schema["components"]["schemas"])
            sent: list[str] = []
            wrong: list[tuple[str, int, str]] = []
            for path, operations in schema["paths"].items():
                for method, operation in operations.items():
                    method = method.upper()
                    target = re.sub(r"\{(\w+)\}", lambda m: fill.get(m[1], "unknown"), path)
                    headers = root if path.startswith("/admin") else ada
                    content = operation.get("requestBody", {}).get("content", {})
                    if "application/json" in content:
                        valid = VALID_BODIES[(method, path)]
                        body_schema = content["application/json"]["schema"]
                        for where, body in walk.variants(body_schema, valid):
                            what = f"{method} {path} body{where}"
                            response = await client.request(
                                method, target, json=body, headers=headers
                            )
                            sent.append(what)
                            # Anthropic's Messages API refuses an invalid body with a 400.
                            invalid = 400 if path == "/v1/messages" else 422
                            if response.status_code != invalid:
                                wrong.append((what, response.status_code, response.text[:200]))
                    if "multipart/form-data" in content:
                        form = walk.resolve(content["multipart/form-data"]["schema"])
                        for name, prop in form["properties"].items():
                            if walk.resolve(prop).get("format") == "binary":
                                continue
                            response = await client.request(
                                method,
                                target,
                                data={name: NUL_TEXT},
                                files={"file": ("notes.txt", b"text", "text/plain")},
                                headers=headers,
                            )
                            what = f"{method} {path} form.{name}"
                            sent.append(what)
                            if response.status_code != 422:
                                wrong.append((what, response.status_code, response.text[:200]))
                    for parameter in operation.get("parameters", []):
                        if parameter["in"] not in ("query", "path"):
                            continue
                        if not any(w == "" for w, _ in walk.variants(parameter["schema"], None)):
                            continue
                        name = parameter["name"]
                        if parameter["in"] == "path":
                            url = re.sub(
                                r"\{(\w+)\}",
                                lambda m, name=name: (
                                    "a%00b" if m[1] == name else fill.get(m[1], "x")
                                ),
                                path,
                            )
                        else:
                            url = f"{target}?{name}=a%00b"
                        response = await client.request(method, url, headers=headers)
                        what = f"{method} {path} {parameter['in']}.{name}"
                        sent.append(what)
                        if not 400 <= response.status_code < 500:
                            wrong.append((what, response.status_code, response.text[:200]))

            assert wrong == []
            # The walk reached what the reliability run found, and much more.
            for expected in (
                "POST /chat body.idempotency_key",
                "POST /chat body.model",
                "POST /chat body.rag[0]",
                "POST /chat body.rag.collections[0]",
                "POST /search body.collections[0]",
                "POST /chat body.variables.<key>",
                "POST /v1/chat/completions body.messages[0].content[0].text",
                "POST /v1/embeddings body.input[0]",
                "POST /documents form.collection",
            ):
                assert expected in sent, (expected, sent)
            assert len(sent) > 60, len(sent)
            assert await counts(app) == before
