"""Resuming a stream with ``Last-Event-ID`` and stopping one, on the in-process event log.

``check_resume_ids`` is run on Redis too, across two workers (tests/test_stream_cluster.py).
"""

from __future__ import annotations

import asyncio
import time

import httpx
from httpx_sse import aconnect_sse

from tests.conftest import AppFactory, live_server
from tests.polling import eventually
from tests.procs import SSEResult, read_sse
from tests.sse_client import ReadStream
from tests.test_stream_end import one_done, started_stream

SLOW = {"simulated_delay": 0.01}
LONG = {"provider": "simulated", "simulated": {"min_words": 120}}


async def resume(
    client: httpx.AsyncClient, stream_id: str, last_event_id: str | None
) -> ReadStream:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    async with aconnect_sse(client, "GET", f"/chat/streams/{stream_id}", headers=headers) as source:
        result = ReadStream(source.response.status_code, source.response.headers)
        if source.response.status_code != 200:
            await source.response.aread()
            return result
        async for sse in source.aiter_sse():
            if sse.data:
                result.events.append((sse.id, sse.event, sse.data))
    return result


async def started(
    client: httpx.AsyncClient, body: dict[str, object], after_events: int
) -> tuple[str, asyncio.Task[ReadStream]]:
    """Start a chat stream; return its stream id once ``after_events`` events have arrived,
    and the task that goes on reading it to the end."""
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def read() -> ReadStream:
        async with aconnect_sse(client, "POST", "/chat", json=body) as source:
            result = ReadStream(source.response.status_code, source.response.headers)
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue
                result.events.append((sse.id, sse.event, sse.data))
                if len(result.events) == after_events and not ready.done():
                    ready.set_result(result.session["stream_id"])
        return result

    task = asyncio.create_task(read())
    return await ready, task


async def test_resume_replays_exactly_what_follows_then_follows_live(
    app_factory: AppFactory,
) -> None:
    app = app_factory(streaming=SLOW, llm=LONG)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        stream_id, first = await started(client, {"message": "tell me a story"}, 10)
        cut = "7"
        resumed = await resume(client, stream_id, cut)
        whole = await first
        assert resumed.status == 200
        assert [int(i) for i, _, _ in resumed.events] == list(range(8, len(whole.events) + 1))
        assert resumed.events == whole.events[7:]
        assert whole.text.startswith("".join(d for i, e, d in whole.events[:7] if e == "message"))
        assert resumed.typed("done")[0]["finish_reason"] == "stop"

        # Finished: a resume replays the rest and closes; nothing after the last id is a 204.
        again = await resume(client, stream_id, "3")
        assert again.events == whole.events[3:]
        assert (await resume(client, stream_id, str(len(whole.events)))).status == 204
        assert (await resume(client, stream_id, None)).events == whole.events
        # Unknown or expired ids end a browser's reconnecting too; a bad id is a 400.
        unknown = await client.get("/chat/streams/0190a0a0-0000-7000-8000-000000000000")
        assert unknown.status_code == 204
        bad = await client.get(f"/chat/streams/{stream_id}", headers={"Last-Event-ID": "x1"})
        assert bad.status_code == 400
        by_query = await client.get(f"/chat/streams/{stream_id}?last_event_id=5")
        assert by_query.status_code == 200
        assert by_query.text.count("\nid: ") + by_query.text.startswith("id: ") >= 1


async def test_cancel_stops_generation_and_keeps_the_partial_text(
    app_factory: AppFactory,
) -> None:
    app = app_factory(streaming=SLOW, llm=LONG)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        stream_id, reading = await started(client, {"message": "a long answer please"}, 10)
        response = await client.post(f"/chat/streams/{stream_id}/cancel")
        assert response.status_code == 200
        assert response.json() == {"stream_id": stream_id, "cancelled": True}
        stream = await reading
        done = stream.done
        assert done["finish_reason"] == "cancelled"
        assert 0 < len(stream.deltas) < 120
        assert server.components.streams.active == 0

        session_id = stream.session["session_id"]
        items = (await client.get(f"/sessions/{session_id}/messages")).json()["items"]
        reply = items[-1]
        assert reply["status"] == "cancelled"
        assert reply["content"] == stream.text

        # Found stopped by a cancel: the answer says so; a completed stream's says not.
        again = await client.post(f"/chat/streams/{stream_id}/cancel")
        assert again.json()["cancelled"] is True
        short = await read_sse(f"{server.url}/chat", "POST", json={"message": "b", "max_tokens": 2})
        late = await client.post(f"/chat/streams/{short.session['stream_id']}/cancel")
        assert late.json()["cancelled"] is False
        missing = await client.post("/chat/streams/0190a0a0-0000-7000-8000-000000000000/cancel")
        assert missing.status_code == 404


async def test_continue_policy_waits_for_a_resume_then_stops_after_the_grace_period(
    app_factory: AppFactory,
) -> None:
    streaming = {**SLOW, "disconnect_policy": "continue", "disconnect_grace": 0.6}
    app = app_factory(streaming=streaming, llm=LONG)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        # Left and resumed within the grace period: generation never stopped.
        cut = await read_sse(f"{server.url}/chat", "POST", json={"message": "a"}, stop_after=5)
        stream_id = str(cut.session["stream_id"])
        await asyncio.sleep(0.2)
        rest = await read_sse(
            f"{server.url}/chat/streams/{stream_id}", headers={"Last-Event-ID": "5"}
        )
        assert rest.done["status"] == "completed"
        assert len(rest.deltas) + len(cut.deltas) >= 120

        # Left for good: the reply is stopped when the grace period ends, and stored
        # interrupted with exactly the text that was logged.
        left = await read_sse(f"{server.url}/chat", "POST", json={"message": "b"}, stop_after=5)
        stream_id = str(left.session["stream_id"])
        await asyncio.sleep(0.3)
        assert server.components.streams.active == 1
        await asyncio.sleep(0.8)
        assert server.components.streams.active == 0
        logged = await resume(client, stream_id, "0")
        assert logged.done["status"] == "interrupted"
        items = (await client.get(f"/sessions/{left.session['session_id']}/messages")).json()
        assert items["items"][-1]["status"] == "interrupted"
        assert items["items"][-1]["content"] == logged.text
        assert 5 < len(logged.deltas) < 120


async def test_a_retry_with_the_same_idempotency_key_attaches_to_the_first_stream(
    app_factory: AppFactory,
) -> None:
    app = app_factory(streaming=SLOW, llm=LONG)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        body = {"message": "only once", "idempotency_key": "9f1c-retry"}
        # Three at once, as a flaky network's retries would arrive.
        first, second, third = await asyncio.gather(
            *(read_sse(f"{server.url}/chat", "POST", json=body) for _ in range(3))
        )
        stream_ids = {r.session["stream_id"] for r in (first, second, third)}
        assert len(stream_ids) == 1
        assert first.events == second.events == third.events
        session_id = first.session["session_id"]
        items = (await client.get(f"/sessions/{session_id}/messages")).json()["items"]
        assert [m["role"] for m in items] == ["user", "assistant"]
        assert items[-1]["content"] == first.text

        # After the log forgot the stream, a retry replays the stored reply.
        server.components.event_log.retention = 0
        server.components.event_log.get("nothing")  # expires finished streams
        later = await read_sse(f"{server.url}/chat", "POST", json=body)
        assert later.session["stream_id"] in stream_ids
        assert later.session["replayed"] is True
        assert later.text == first.text
        assert later.done["status"] == "completed"
        # Another key is another turn.
        other = await read_sse(
            f"{server.url}/chat", "POST", json={**body, "idempotency_key": "other"}
        )
        assert other.session["stream_id"] not in stream_ids


async def check_resume_ids(producer: str, reader: str, heartbeat: float) -> None:
    """Resume ids, read on ``reader`` from a stream generated on ``producer``: past the end
    of a live stream, the resume follows it and closes at its done (no ping after it); past
    the end of a finished one it is a 204; an id no stream can have is a 400 (never a
    retryable error, which would make EventSource reconnect forever)."""
    session, first = await started_stream(producer, after=3)
    stream_id = str(session["stream_id"])

    async def timed(last_event_id: str) -> tuple[SSEResult, float]:
        result = await read_sse(
            f"{reader}/chat/streams/{stream_id}", headers={"Last-Event-ID": last_event_id}
        )
        return result, time.perf_counter()

    ahead = asyncio.create_task(timed("1000"))
    whole = await first
    done_at = one_done(whole).at
    past, ended_at = await ahead
    assert past.status == 200 and past.ended == "complete"
    assert past.events == []
    assert ended_at - done_at < heartbeat + 1.0
    last = len(whole.events)

    url = f"{reader}/chat/streams/{stream_id}"
    async with httpx.AsyncClient() as client:
        # A worker reading from Redis may see the end a moment after the producer's client.
        await eventually(
            lambda: client.get(url, headers={"Last-Event-ID": str(last)}),
            until=lambda response: response.status_code == 204,
            timeout=5,
        )
        for past_the_end in (str(last), str(last + 1), "1000", "9223372036854775807"):
            response = await client.get(url, headers={"Last-Event-ID": past_the_end})
            assert response.status_code == 204, (past_the_end, response.text)
        for no_event in ("99999999999999999999", "9223372036854775808", "x1", "-1", "1.0"):
            response = await client.get(url, headers={"Last-Event-ID": no_event})
            assert response.status_code == 400, (no_event, response.text)
            assert response.json()["error"]["code"] == "bad_request"
        by_query = await client.get(url, params={"last_event_id": "99999999999999999999"})
        assert by_query.status_code == 400
        too_long = await client.get(url, headers={"Last-Event-ID": "1" * 21})
        assert too_long.status_code == 422
    replay = await read_sse(url, headers={"Last-Event-ID": "0"})
    assert [e.id for e in replay.events] == [e.id for e in whole.events]
    one_done(replay)
    tail = await read_sse(url, headers={"Last-Event-ID": str(last - 1)})
    assert [e.event for e in tail.events] == ["done"]


async def test_resume_ids_past_the_end_and_out_of_range(app_factory: AppFactory) -> None:
    heartbeat = 0.2
    app = app_factory(
        streaming={"simulated_delay": 0.01, "heartbeat_interval": heartbeat},
        llm={"provider": "simulated", "simulated": {"min_words": 60}},
    )
    async with live_server(app) as server:
        await check_resume_ids(server.url, server.url, heartbeat)
