"""Prompt templates in chat: the rendered system prompt reaches the provider; sessions keep
the template version they started with; a missing variable is a 422 naming it."""

from __future__ import annotations

from typing import Any

from tests.conftest import AppFactory, asgi_client
from tests.sse_client import session_id
from tests.test_chat_stream import ProbeProvider


async def test_template_versions_in_chat(app_factory: AppFactory, database_url: str) -> None:
    probe = ProbeProvider(["ok"], delay=0)
    app = app_factory(database_url)
    async with asgi_client(app) as client:
        app.state.components.providers.register(probe)
        created = await client.post(
            "/templates",
            json={"name": "pirate", "system_prompt": "Talk like a pirate to {audience}."},
        )
        assert created.status_code == 201
        assert created.json()["variables"] == ["audience"]

        chat: dict[str, Any] = {
            "message": "Hello",
            "provider": "probe",
            "template": "pirate",
            "variables": {"audience": "sailors"},
        }
        first = await client.post("/chat", json=chat)
        assert first.status_code == 200
        assert '"template":{"name":"pirate","version":1}' in first.text
        old_session = session_id(first)
        assert probe.seen[-1].messages[0].content == "Talk like a pirate to sailors."

        updated = await client.put(
            "/templates/pirate", json={"system_prompt": "Speak as a captain to {audience}!"}
        )
        assert updated.json()["version"] == 2

        # The old session keeps version 1 and its variables.
        again = await client.post(
            "/chat", json={"message": "More", "provider": "probe", "session_id": old_session}
        )
        assert again.status_code == 200
        assert probe.seen[-1].messages[0].content == "Talk like a pirate to sailors."

        # A new session gets version 2.
        new = await client.post("/chat", json={**chat, "variables": {"audience": "cadets"}})
        assert '"template":{"name":"pirate","version":2}' in new.text
        assert probe.seen[-1].messages[0].content == "Speak as a captain to cadets!"

        # Deleting the template does not break the session that uses it.
        assert (await client.delete("/templates/pirate")).status_code == 204
        kept = await client.post(
            "/chat", json={"message": "Still?", "provider": "probe", "session_id": old_session}
        )
        assert kept.status_code == 200
        assert probe.seen[-1].messages[0].content == "Talk like a pirate to sailors."


async def test_missing_variable_is_a_422_naming_it(app_factory: AppFactory) -> None:
    async with asgi_client(app_factory()) as client:
        await client.post(
            "/templates",
            json={"name": "letter", "system_prompt": "Write to {recipient} in a {tone} tone."},
        )
        response = await client.post(
            "/chat",
            json={"message": "Hi", "template": "letter", "variables": {"tone": "warm"}},
        )
        unknown = await client.post("/chat", json={"message": "Hi", "template": "nope"})
        sessions = (await client.get("/sessions")).json()
    assert response.status_code == 422
    assert "recipient" in response.json()["error"]["message"]
    assert "tone" not in response.json()["error"]["message"].split(":")[-1]
    assert unknown.status_code == 404
    # Nothing was stored for the refused requests.
    assert sessions["total"] == 0
