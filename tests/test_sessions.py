"""Sessions and messages, stored on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx

from streamforge.chains.providers.simulated import DEFAULT_ANSWER
from tests.conftest import AppFactory, asgi_client, live_server
from tests.procs import SSEParser
from tests.sse_client import read_chat
from tests.sse_client import session_id as sse_session_id
from tests.test_chat_stream import ProbeProvider


async def test_crud(app_factory: AppFactory, database_url: str) -> None:
    async with asgi_client(app_factory(database_url)) as client:
        created = [
            (await client.post("/sessions", json={"title": f"session {i}"})).json()
            for i in range(5)
        ]
        untitled = await client.post("/sessions")
        assert untitled.status_code == 201
        assert untitled.json()["title"] is None

        page = (await client.get("/sessions", params={"limit": 4})).json()
        assert page["total"] == 6
        assert page["limit"] == 4
        assert [s["id"] for s in page["items"]] == [
            untitled.json()["id"],
            *[s["id"] for s in reversed(created)][:3],
        ]
        second = (await client.get("/sessions", params={"limit": 4, "offset": 4})).json()
        assert [s["id"] for s in second["items"]] == [created[1]["id"], created[0]["id"]]

        one = created[2]
        got = await client.get(f"/sessions/{one['id']}")
        assert got.status_code == 200
        assert got.json()["title"] == "session 2"

        renamed = await client.patch(f"/sessions/{one['id']}", json={"title": "Renamed ✓"})
        assert renamed.status_code == 200
        assert renamed.json()["title"] == "Renamed ✓"
        assert (await client.get(f"/sessions/{one['id']}")).json()["title"] == "Renamed ✓"

        assert (await client.delete(f"/sessions/{one['id']}")).status_code == 204
        assert (await client.get(f"/sessions/{one['id']}")).status_code == 404
        assert (await client.delete(f"/sessions/{one['id']}")).status_code == 404
        assert (await client.get("/sessions")).json()["total"] == 5


async def test_two_turns_keep_order_and_history(app_factory: AppFactory, database_url: str) -> None:
    probe = ProbeProvider(["Second", " answer"], delay=0)
    app = app_factory(database_url)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        server.components.providers.register(probe)
        first = await read_chat(client, {"message": "First question"})
        session_id = first.session["session_id"]
        second = await read_chat(
            client, {"message": "Second question", "session_id": session_id, "provider": "probe"}
        )
        assert second.session["session_id"] == session_id
        response = await client.get(f"/sessions/{session_id}/messages")

    messages = response.json()["items"]
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "completed"),
        ("assistant", "completed"),
        ("user", "completed"),
        ("assistant", "completed"),
    ]
    assert [m["content"] for m in messages] == [
        "First question",
        DEFAULT_ANSWER,
        "Second question",
        "Second answer",
    ]
    assert messages[1]["id"] == first.session["assistant_message_id"]
    assert messages[1]["completion_tokens"] == len(first.deltas)
    # The provider answering the second turn saw the whole first turn.
    seen = [(turn.role, turn.content) for turn in probe.seen[0].messages]
    assert seen == [
        ("system", "You are a helpful assistant."),
        ("user", "First question"),
        ("assistant", DEFAULT_ANSWER),
        ("user", "Second question"),
    ]


async def test_messages_are_paginated_oldest_first(
    app_factory: AppFactory, database_url: str
) -> None:
    app = app_factory(database_url)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        first = await read_chat(client, {"message": "turn 0"})
        session_id = first.session["session_id"]
        for turn in range(1, 4):
            await read_chat(client, {"message": f"turn {turn}", "session_id": session_id})
        page1 = (await client.get(f"/sessions/{session_id}/messages?limit=3")).json()
        page2 = (await client.get(f"/sessions/{session_id}/messages?limit=3&offset=3")).json()
    assert page1["total"] == 8
    contents = [m["content"] for m in page1["items"] + page2["items"]]
    assert contents[0::2] == ["turn 0", "turn 1", "turn 2"]
    for message in page1["items"] + page2["items"]:
        assert set(message) >= {"id", "role", "content", "status", "created_at"}


async def test_new_app_on_same_database_sees_everything(
    app_factory: AppFactory, database_url: str
) -> None:
    async with asgi_client(app_factory(database_url)) as client:
        created = (await client.post("/sessions", json={"title": "kept"})).json()
        response = await client.post(
            "/chat", json={"message": "remember me", "session_id": created["id"]}
        )
        assert response.status_code == 200
    async with asgi_client(app_factory(database_url)) as client:
        sessions = (await client.get("/sessions")).json()
        assert [s["id"] for s in sessions["items"]] == [created["id"]]
        messages = (await client.get(f"/sessions/{created['id']}/messages")).json()["items"]
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "remember me", "completed"),
        ("assistant", DEFAULT_ANSWER, "completed"),
    ]


async def test_deleting_a_session_deletes_its_messages(
    app_factory: AppFactory, database_url: str
) -> None:
    app = app_factory(database_url)
    async with asgi_client(app) as client:
        response = await client.post("/chat", json={"message": "to be deleted"})
        session_id = sse_session_id(response)
        assert (await client.delete(f"/sessions/{session_id}")).status_code == 204
        components = app.state.components
        from sqlalchemy import func, select

        from streamforge.models import Message

        async with components.database.read() as db:
            left = await db.scalar(
                select(func.count()).select_from(Message).where(Message.session_id == session_id)
            )
        assert left == 0
        assert (await client.get(f"/sessions/{session_id}/messages")).status_code == 404


async def test_disconnect_is_stored_interrupted(app_factory: AppFactory, database_url: str) -> None:
    probe = ProbeProvider([f" w{i}" for i in range(10)], delay=0.2)
    app = app_factory(database_url)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        server.components.providers.register(probe)
        body = {"message": "cut me off", "provider": "probe"}
        async with client.stream("POST", "/chat", json=body) as response:
            raw = b""
            async for chunk in response.aiter_bytes():
                raw += chunk
                if raw.count(b"\ndata:  w") >= 2:
                    break
        await asyncio.wait_for(probe.closed.wait(), 2)
        await server.components.streams.wait_all()
        parser = SSEParser()
        session = next(event for event in parser.feed(raw) if event.event == "session")
        session_id = session.json()["session_id"]
        messages = (await client.get(f"/sessions/{session_id}/messages")).json()["items"]
    assert messages[0]["content"] == "cut me off"
    assert messages[1]["status"] == "interrupted"
    assert messages[1]["content"] == " w0 w1"
