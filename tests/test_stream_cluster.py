"""Streams that survive, shown with real server processes on PostgreSQL and Redis.

Every test here starts ``streamforge serve`` processes (tests.procs), a private Redis it may
crash, and a fresh PostgreSQL database, then acts on them as clients and operators would:
cutting connections at exact events, resuming on another process, cancelling across
processes, SIGKILL and SIGTERM, restarting Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import postgres_database
from tests.polling import eventually
from tests.procs import (
    Event,
    RedisServer,
    ServerProcess,
    SSEResult,
    read_sse,
    redis_server,
    server_process,
)
from tests.test_resume import check_resume_ids
from tests.test_stream_end import (
    CANCELS_AT_ONCE,
    ONE_WORKER,
    REPEATS,
    active_streams,
    completed_then_cancelled,
    concurrent_cancel_trial,
    following,
    one_done,
    started_stream,
)

pytestmark = pytest.mark.postgres

# 197 words at most: with session, usage and done, a stream of exactly 200 events.
LONG_ANSWER = {"STREAMFORGE_LLM__SIMULATED__MIN_WORDS": "400"}
WORDS_200 = 197


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async with redis_server(tmp_path) as server:
        yield server


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with postgres_database() as url:
        yield url


def shared(database: str, redis: RedisServer, **extra: str) -> dict[str, str]:
    """Settings of processes that share one PostgreSQL database and one Redis."""
    return {
        "STREAMFORGE_DATABASE__URL": database,
        "STREAMFORGE_REDIS__URL": redis.url,
        **extra,
    }


@contextlib.asynccontextmanager
async def server_pair(
    tmp_path: Path, env: dict[str, str], names: tuple[str, str] = ("first", "second")
) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes on the same settings, started side by side."""
    async with contextlib.AsyncExitStack() as stack:
        one, two = await asyncio.gather(
            *(stack.enter_async_context(server_process(tmp_path, env, name=n)) for n in names)
        )
        yield one, two


def dsn(database: str) -> str:
    return database.replace("postgresql+asyncpg://", "postgresql://")


async def reply_row(database: str, stream_id: str) -> asyncpg.Record:
    connection = await asyncpg.connect(dsn(database))
    try:
        row = await connection.fetchrow(
            "SELECT id, status, content, error FROM messages "
            "WHERE stream_id = $1 AND role = 'assistant'",
            stream_id,
        )
    finally:
        await connection.close()
    assert row is not None
    return row


async def metric(url: str, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{url}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head == name or head.startswith(name + "{"):
                total += float(value)
    return total


def ids(events: list[Event]) -> list[int]:
    return [int(e.id) for e in events if e.id is not None]


def text_of(events: list[Event]) -> str:
    return "".join(e.data for e in events if e.event == "message")


async def reassemble_with_cuts(
    start_url: str,
    resume_urls: list[str],
    body: dict[str, Any],
    cuts: list[int],
) -> tuple[str, list[Event]]:
    """POST to ``start_url``, cut the connection after event ``cuts[0]``, resume (cycling
    through ``resume_urls``) with Last-Event-ID, cut again at each later point, then read to
    the end. Returns the stream id and every event received, in order."""
    first = await read_sse(f"{start_url}/chat", "POST", json=body, stop_after=cuts[0])
    assert first.status == 200, first.body
    events = list(first.events)
    stream_id = str(first.typed("session")[0]["stream_id"])
    points = [*cuts[1:], None]
    for index, cut in enumerate(points):
        url = resume_urls[index % len(resume_urls)]
        last = events[-1].id
        assert last is not None
        stop_after = None if cut is None else cut - int(last)
        part = await read_sse(
            f"{url}/chat/streams/{stream_id}",
            headers={"Last-Event-ID": last},
            stop_after=stop_after,
        )
        assert part.status == 200, (part.status, part.body)
        events.extend(part.events)
    return stream_id, events


def random_cuts(seed: int, total: int = 200, count: int = 20) -> list[int]:
    return sorted(random.Random(seed).sample(range(2, total - 2), count))


async def uninterrupted(url: str, body: dict[str, Any]) -> SSEResult:
    whole = await read_sse(f"{url}/chat", "POST", json=body)
    assert whole.status == 200
    return whole


@pytest.mark.parametrize("backend", ["in-process", "redis"])
async def test_cut_twenty_times_and_resumed_gives_the_exact_answer(
    backend: str, tmp_path: Path
) -> None:
    """In-process: one server on SQLite. Redis: two servers on PostgreSQL and Redis, every
    resume on the other process, so each replay comes out of Redis."""
    env = {
        **LONG_ANSWER,
        "STREAMFORGE_STREAMING__SIMULATED_DELAY": "0.004",
        "STREAMFORGE_STREAMING__DISCONNECT_POLICY": "continue",
    }
    body = {"message": "tell me everything", "max_tokens": WORDS_200}
    async with contextlib.AsyncExitStack() as stack:
        if backend == "redis":
            redis = await stack.enter_async_context(redis_server(tmp_path))
            database = await stack.enter_async_context(postgres_database())
            env = shared(database, redis, **env)
        first = await stack.enter_async_context(server_process(tmp_path, env, name="first"))
        servers = [first]
        if backend == "redis":
            second = server_process(tmp_path, env, name="second")
            servers.append(await stack.enter_async_context(second))
        whole = await uninterrupted(first.url, body)
        assert len(whole.events) == 200
        for seed in (1, 2):
            _, events = await reassemble_with_cuts(
                first.url, [s.url for s in reversed(servers)], body, random_cuts(seed)
            )
            # No gap, no duplicate: every id from 1 to 200 exactly once, in order.
            assert ids(events) == list(range(1, 201))
            assert text_of(events) == whole.text
            assert events[-1].event == "done"
        async with httpx.AsyncClient() as client:
            health = (await client.get(f"{servers[-1].url}/health")).json()
        assert health["components"]["event_log"]["backend"] == backend
        assert await metric(servers[-1].url, "streamforge_resumes_total") >= 20


async def test_two_processes_resume_and_cancel_across_workers(
    tmp_path: Path, database: str, redis: RedisServer
) -> None:
    env = shared(
        database,
        redis,
        **LONG_ANSWER,
        STREAMFORGE_STREAMING__SIMULATED_DELAY="0.03",
        STREAMFORGE_STREAMING__DISCONNECT_POLICY="continue",
    )
    async with server_pair(tmp_path, env) as (first, second):
        body = {"message": "across workers", "max_tokens": WORDS_200}
        whole = await uninterrupted(first.url, body)

        # Started on the first, cut, resumed on the second (and back and forth).
        stream_id, events = await reassemble_with_cuts(
            first.url, [second.url, first.url], body, random_cuts(7, count=6)
        )
        assert ids(events) == list(range(1, 201))
        assert text_of(events) == whole.text
        reply = await reply_row(database, stream_id)
        assert reply["status"] == "completed"
        assert reply["content"] == whole.text
        assert await metric(second.url, "streamforge_resumes_total") >= 3


async def test_a_cancel_sent_to_the_second_stops_the_first_within_one_token(
    tmp_path: Path, database: str, redis: RedisServer
) -> None:
    # A quarter second per token: "within one token" is then a statement about the signal
    # path (HTTP on the second, Redis pub/sub, the producer's task), not about the machine.
    env = shared(database, redis, **LONG_ANSWER, STREAMFORGE_STREAMING__SIMULATED_DELAY="0.25")
    async with server_pair(tmp_path, env) as (first, second):
        # A cancel sent to the second stops generation on the first within one token.
        state: dict[str, Any] = {}

        async def on_event(event: Event) -> None:
            if event.event == "session":
                state["stream"] = orjson.loads(event.data)["stream_id"]
            elif event.event == "message" and "sent_after" not in state and int(event.id or 0) >= 6:
                state["sent_after"] = int(event.id or 0)
                async with httpx.AsyncClient() as client:
                    response = await client.post(
                        f"{second.url}/chat/streams/{state['stream']}/cancel", timeout=15
                    )
                state["answer"] = response.json()

        result = await read_sse(
            f"{first.url}/chat", "POST", json={"message": "stop me"}, on_event=on_event
        )
        assert state["answer"] == {"stream_id": state["stream"], "cancelled": True}
        assert result.typed("done")[0]["status"] == "cancelled"
        late = [
            e
            for e in result.events
            if e.event == "message" and int(e.id or 0) > state["sent_after"]
        ]
        assert len(late) <= 1
        reply = await reply_row(database, state["stream"])
        assert reply["status"] == "cancelled"
        assert reply["content"] == result.text
        assert await metric(second.url, "streamforge_cancels_total") == 1


async def test_concurrent_cancels_across_two_workers_end_each_stream_once(
    tmp_path: Path, database: str, redis: RedisServer
) -> None:
    """Cancels at once on both workers, readers on both: exactly one done each, within 2 s
    of the first cancel, and every cancel answers true; then SIGTERM to the producer while
    cancels to both are under way: it exits well within its grace period, and the clients on
    either worker still get exactly one done."""
    env = shared(database, redis, **ONE_WORKER)
    async with server_pair(tmp_path, env) as (first, second), httpx.AsyncClient() as client:
        for count in CANCELS_AT_ONCE:
            for repeat in range(REPEATS):
                producer, other = (first, second) if repeat % 2 == 0 else (second, first)
                await concurrent_cancel_trial(client, producer.url, [other.url], count)
        assert await active_streams(client, first.url) == 0
        assert await active_streams(client, second.url) == 0
        await completed_then_cancelled(client, [second.url, first.url])

        session, reading = await started_stream(first.url)
        stream_id = str(session["stream_id"])
        resuming = [following(url, stream_id, "0") for url in (first.url, second.url)]
        for _, connected in resuming:
            await asyncio.wait_for(connected.wait(), 10)
        cancels = asyncio.gather(
            *(
                client.post(f"{url}/chat/streams/{stream_id}/cancel", timeout=15)
                for url in (first.url, second.url) * 3
            ),
            return_exceptions=True,
        )
        began = asyncio.get_running_loop().time()
        code = await first.terminate(timeout=15)
        took = asyncio.get_running_loop().time() - began
        results = await asyncio.gather(reading, *(task for task, _ in resuming))
        answers = await cancels
    assert code in (0, -15)
    assert took < 5.0, took
    statuses = {one_done(result).json()["status"] for result in results}
    assert len(statuses) == 1 and statuses <= {"cancelled", "interrupted"}
    for answer in answers:
        if isinstance(answer, httpx.Response) and answer.status_code == 200:
            assert answer.json()["cancelled"] is (statuses == {"cancelled"})
    reply = await reply_row(database, stream_id)
    assert reply["status"] in statuses


async def test_resume_ids_and_delete_across_workers(
    tmp_path: Path, database: str, redis: RedisServer
) -> None:
    """On Redis, read by the other worker: resume ids past the end or out of range answer as
    on the in-process log (tests/test_resume.py); a session deleted on the other worker
    stops its generation, and its clients get their end events."""
    heartbeat = 0.2
    env = shared(
        database,
        redis,
        STREAMFORGE_LLM__SIMULATED__MIN_WORDS="60",
        STREAMFORGE_STREAMING__SIMULATED_DELAY="0.02",
        STREAMFORGE_STREAMING__HEARTBEAT_INTERVAL=str(heartbeat),
    )
    async with server_pair(tmp_path, env) as (first, second):
        await check_resume_ids(first.url, second.url, heartbeat)

        session, reading = await started_stream(first.url, after=10)
        stream_id = str(session["stream_id"])
        resumed, connected = following(second.url, stream_id, "2")
        await asyncio.wait_for(connected.wait(), 10)
        async with httpx.AsyncClient(base_url=second.url) as client:
            deleted = await client.delete(f"/sessions/{session['session_id']}")
            assert deleted.status_code == 204
            assert (await client.get(f"/sessions/{session['session_id']}")).status_code == 404
        for result in await asyncio.gather(reading, resumed):
            done = one_done(result).json()
            assert done["status"] == "cancelled" and done["reason"] == "session_deleted"
        assert len(reading.result().deltas) < 60
        async with httpx.AsyncClient() as client:
            assert await active_streams(client, first.url) == 0


async def wait_for_status(database: str, stream_id: str, within: float = 15) -> asyncpg.Record:
    """The reply once it has left ``streaming``."""
    return await eventually(
        lambda: reply_row(database, stream_id),
        until=lambda row: row["status"] != "streaming",
        timeout=within,
        interval=0.2,
        what=f"the reply of stream {stream_id} leaving streaming",
    )


async def messages_of(database: str, session_id: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn(database))
    try:
        return list(
            await connection.fetch(
                "SELECT role, status, content FROM messages WHERE session_id = $1 ORDER BY id",
                session_id,
            )
        )
    finally:
        await connection.close()


async def test_sigkill_leaves_an_interrupted_reply_and_a_retry_never_generates_twice(
    tmp_path: Path, database: str, redis: RedisServer
) -> None:
    env = shared(
        database,
        redis,
        **LONG_ANSWER,
        STREAMFORGE_STREAMING__SIMULATED_DELAY="0.05",
        STREAMFORGE_SERVER__HEARTBEAT_INTERVAL="0.3",
        STREAMFORGE_SERVER__WORKER_TIMEOUT="2",
    )
    async with server_pair(tmp_path, env, ("doomed", "survivor")) as (doomed, survivor):
        body = {"message": "remember this", "idempotency_key": "turn-0001", "max_tokens": 150}

        def kill_at_20(event: Event) -> None:
            if event.id == "20":
                doomed.kill()

        cut = await read_sse(f"{doomed.url}/chat", "POST", json=body, on_event=kill_at_20)
        assert cut.ended == "broken"
        assert not cut.typed("done")
        stream_id = str(cut.session["stream_id"])
        session_id = str(cut.session["session_id"])

        # The survivor notices the dead worker and ends its reply with the logged text.
        reply = await wait_for_status(database, stream_id)
        assert reply["status"] == "interrupted"
        logged = await read_sse(
            f"{survivor.url}/chat/streams/{stream_id}", headers={"Last-Event-ID": "0"}
        )
        assert logged.status == 200
        assert logged.typed("error")[-1]["code"] == "worker_lost"
        assert logged.done is not None and logged.done["status"] == "interrupted"
        assert reply["content"] == logged.text
        assert len(logged.deltas) >= 18  # the events the client saw were logged
        assert logged.text.startswith(cut.text) or cut.text.startswith(logged.text)
        stored = await messages_of(database, session_id)
        assert [(m["role"], m["status"]) for m in stored] == [
            ("user", "completed"),
            ("assistant", "interrupted"),
        ]
        assert stored[0]["content"] == "remember this"

        # Retries with the same key (several at once) attach to that stream: no generation.
        retries = await asyncio.gather(
            *(read_sse(f"{survivor.url}/chat", "POST", json=body) for _ in range(5))
        )
        for retry in retries:
            assert retry.status == 200
            assert retry.session["stream_id"] == stream_id
            assert retry.done is not None and retry.done["status"] == "interrupted"
            assert retry.text == logged.text
        assert len(await messages_of(database, session_id)) == 2
        assert await metric(survivor.url, "streamforge_streams_total") == 0


async def test_startup_pass_marks_a_crashed_single_worker_reply_interrupted(
    tmp_path: Path,
) -> None:
    """One worker on SQLite with the in-process log, killed outright and started again: the
    reply is interrupted at startup and keeps the text of its last checkpoint."""
    env = {
        **LONG_ANSWER,
        "STREAMFORGE_STREAMING__SIMULATED_DELAY": "0.05",
        "STREAMFORGE_STREAMING__CHECKPOINT_INTERVAL": "0.2",
    }
    async with server_process(tmp_path, env, name="alone") as server:

        def kill_at_25(event: Event) -> None:
            if event.id == "25":
                server.kill()

        cut = await read_sse(
            f"{server.url}/chat", "POST", json={"message": "crash"}, on_event=kill_at_25
        )
        session_id = str(cut.session["session_id"])
    async with (
        server_process(tmp_path, env, name="alone") as again,
        httpx.AsyncClient(base_url=again.url) as client,
    ):
        messages = (await client.get(f"/sessions/{session_id}/messages")).json()["items"]
        assert [m["status"] for m in messages] == ["completed", "interrupted"]
        assert messages[1]["error"]["code"] == "worker_lost"
        kept = messages[1]["content"]
        # Everything up to the last checkpoint: most of what the client saw, nothing else.
        assert cut.text.startswith(kept)
        assert len(kept.split()) >= 10


async def test_sigterm_gives_fifty_open_streams_a_final_event_and_stores_them(
    tmp_path: Path, database: str, redis: RedisServer
) -> None:
    env = shared(database, redis, **LONG_ANSWER, STREAMFORGE_STREAMING__SIMULATED_DELAY="0.2")
    async with server_process(tmp_path, env) as server:
        started = 0
        all_started = asyncio.Event()

        def counter() -> Any:
            seen = 0

            def on_event(event: Event) -> None:
                nonlocal seen, started
                seen += 1
                if seen == 3:
                    started += 1
                    if started == 50:
                        all_started.set()

            return on_event

        readers = [
            asyncio.create_task(
                read_sse(
                    f"{server.url}/chat",
                    "POST",
                    json={"message": f"stream {n}"},
                    on_event=counter(),
                )
            )
            for n in range(50)
        ]
        await asyncio.wait_for(all_started.wait(), 60)
        code = await server.terminate(timeout=30)
        results = await asyncio.gather(*readers)
    assert code in (0, -15)
    for result in results:
        assert result.ended == "complete"
        error = result.typed("error")[-1]
        assert error["code"] == "shutdown" and error["retryable"] is True
        assert result.done is not None
        assert result.done["status"] == "interrupted" and result.done["reason"] == "shutdown"
        reply = await reply_row(database, str(result.session["stream_id"]))
        assert reply["status"] == "interrupted"
        assert reply["content"] == result.text and result.text


async def test_redis_restarted_mid_stream(
    tmp_path: Path, database: str, redis: RedisServer
) -> None:
    env = shared(database, redis, **LONG_ANSWER, STREAMFORGE_STREAMING__SIMULATED_DELAY="0.03")
    async with server_pair(tmp_path, env) as (first, second):
        body = {"message": "through the outage", "max_tokens": 120}
        whole = await uninterrupted(first.url, body)
        tasks: list[asyncio.Task[Any]] = []

        def act(event: Event) -> None:
            if event.event == "session":
                stream_id = event.json()["stream_id"]
                # A reader on the other worker follows the stream out of Redis.
                tasks.append(
                    asyncio.create_task(
                        read_sse(
                            f"{second.url}/chat/streams/{stream_id}",
                            headers={"Last-Event-ID": "1"},
                        )
                    )
                )
            if event.id == "20":
                tasks.append(asyncio.create_task(redis.restart(down_for=1.0)))

        live = await read_sse(f"{first.url}/chat", "POST", json=body, on_event=act)
        remote, _ = await asyncio.gather(*tasks)
        # The generating worker's client never noticed.
        assert live.done is not None and live.done["status"] == "completed"
        assert live.text == whole.text
        # The other worker's client got the stream, or a retryable error (no id) to retry.
        if not remote.typed("done"):
            error = remote.events[-1]
            assert error.event == "error" and error.id is None
            assert error.json()["retryable"] is True
        else:
            assert remote.text == whole.text

        # Both recover without a restart: Redis gets the whole stream back, and new chats,
        # resumes and health work on each worker.
        stream_id = str(live.session["stream_id"])
        async with httpx.AsyncClient() as client:
            for server in (first, second):

                async def health_of(url: str = server.url) -> dict[str, Any]:
                    return (await client.get(f"{url}/health")).json()  # type: ignore[no-any-return]

                health = await eventually(
                    health_of,
                    until=lambda found: found["components"]["event_log"]["status"] == "ok",
                    timeout=10,
                    interval=0.1,
                )
                assert health["components"]["event_log"]["status"] == "ok"
        replay = await eventually(
            lambda: read_sse(
                f"{second.url}/chat/streams/{stream_id}", headers={"Last-Event-ID": "0"}
            ),
            until=lambda found: found.typed("done"),
            timeout=5,
            interval=0.1,
            what="the whole stream back in Redis",
        )
        assert ids(replay.events) == list(range(1, len(live.events) + 1))
        assert replay.text == whole.text
        after = await read_sse(f"{second.url}/chat", "POST", json={"message": "still here?"})
        assert after.done is not None and after.done["status"] == "completed"


async def test_serve_with_workers_shares_streams_between_them(
    tmp_path: Path, database: str, redis: RedisServer
) -> None:
    env = shared(
        database,
        redis,
        **LONG_ANSWER,
        STREAMFORGE_STREAMING__SIMULATED_DELAY="0.01",
        STREAMFORGE_STREAMING__DISCONNECT_POLICY="continue",
    )
    async with server_process(tmp_path, env, workers=2) as server:
        # New connections land on either worker process.
        workers = set()
        for _ in range(40):
            async with httpx.AsyncClient() as client:
                health = (await client.get(f"{server.url}/health")).json()
            workers.add(health["components"]["event_log"]["worker"])
            if len(workers) == 2:
                break
        assert len(workers) == 2
        body = {"message": "any worker", "max_tokens": 100}
        whole = await uninterrupted(server.url, body)
        _, events = await reassemble_with_cuts(
            server.url, [server.url], body, random_cuts(3, total=103, count=8)
        )
        assert ids(events) == list(range(1, 104))
        assert text_of(events) == whole.text


async def test_serve_refuses_several_workers_without_redis(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamforge",
        "serve",
        "--workers",
        "2",
        env={**os.environ, "STREAMFORGE_DATA_DIR": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode != 0
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "STREAMFORGE_REDIS__URL" in lines[0]
