"""Memory: history replayed within a token budget, older turns condensed into a summary."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from streamforge.chains.providers.base import BaseProvider, Chunk, GenerationRequest
from streamforge.chains.providers.simulated import split_words
from tests.conftest import AppFactory, asgi_client
from tests.sse_client import session_id as sse_session_id

BUDGET = 120


class RecordingProvider(BaseProvider):
    """Answers a fixed sentence per turn, counts tokens as words, records every prompt."""

    name = "recorder"
    context_window = 4096
    default_max_tokens = 64

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def count_tokens(self, text: str) -> int:
        return len(split_words(text))

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        self.requests.append(request)
        if request.messages[0].content.startswith("You condense conversations"):
            # The summariser: a digest naming the first fact it saw.
            body = request.messages[-1].content
            facts = [w for w in body.split() if w.startswith("fact-")]
            yield Chunk(text="Summary: discussed " + " ".join(dict.fromkeys(facts)))
            return
        turn = len([r for r in self.requests if not _is_summary(r)])
        yield Chunk(text=f"Answer number {turn} with a few more words to take space.")

    async def health(self) -> dict[str, Any]:
        return {"status": "ok"}


def _is_summary(request: GenerationRequest) -> bool:
    return request.messages[0].content.startswith("You condense conversations")


async def test_forty_turns_stay_within_the_budget(app_factory: AppFactory) -> None:
    provider = RecordingProvider()
    app = app_factory(memory={"history_budget": BUDGET, "summary_max_tokens": 40})
    async with asgi_client(app) as client:
        app.state.components.providers.register(provider)
        session_id = None
        for turn in range(40):
            body: dict[str, Any] = {
                "message": f"Turn {turn}: remember fact-{turn} please, it matters.",
                "provider": "recorder",
            }
            if session_id:
                body["session_id"] = session_id
            response = await client.post("/chat", json=body)
            assert response.status_code == 200
            session_id = sse_session_id(response)
        session = (await client.get(f"/sessions/{session_id}")).json()

    chats = [r for r in provider.requests if not _is_summary(r)]
    summaries = [r for r in provider.requests if _is_summary(r)]
    assert len(chats) == 40
    assert summaries, "older turns were never condensed"
    for request in chats:
        # The history part — everything between the template's system prompt and the new
        # message — never exceeds the budget, per-message overhead included.
        history = request.messages[1:-1]
        tokens = sum(provider.count_tokens(t.content) + 4 for t in history)
        assert tokens <= BUDGET
    last = chats[-1].messages
    # The summary is in the prompt, right after the system prompt.
    assert last[1].role == "system"
    assert last[1].content.startswith("Summary of the earlier conversation:")
    assert "fact-0" in last[1].content
    # The latest turns are verbatim, in order, ending with the new message.
    assert last[-1].content == "Turn 39: remember fact-39 please, it matters."
    assert last[-2].content == "Answer number 39 with a few more words to take space."
    assert last[-3].content == "Turn 38: remember fact-38 please, it matters."
    # The rolling summary is stored with the session.
    assert session["summary"].startswith("Summary: discussed fact-0")
    assert session["summary_until"]


async def test_short_history_is_replayed_whole(app_factory: AppFactory) -> None:
    provider = RecordingProvider()
    async with asgi_client(app_factory()) as client:
        app_components = client._transport.app.state.components  # type: ignore[attr-defined]
        app_components.providers.register(provider)
        first = await client.post("/chat", json={"message": "one", "provider": "recorder"})
        session_id = sse_session_id(first)
        await client.post(
            "/chat", json={"message": "two", "provider": "recorder", "session_id": session_id}
        )
    messages = provider.requests[-1].messages
    assert [(m.role, m.content) for m in messages[1:]] == [
        ("user", "one"),
        ("assistant", "Answer number 1 with a few more words to take space."),
        ("user", "two"),
    ]
    assert not any(_is_summary(r) for r in provider.requests)
