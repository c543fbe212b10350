"""A stream ends exactly once, whatever mix of cancels, disconnects, deletes and shutdown
reaches it (issue 13): in the stream manager itself, then on a real server process with the
in-process event log (one worker on SQLite), SIGTERM included.

The same, across two workers on PostgreSQL and Redis, is in tests/test_stream_cluster.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamforge.chains.providers.base import GenerationRequest
from streamforge.chains.providers.simulated import SimulatedProvider
from streamforge.models import MessageStatus
from streamforge.services.generation import Outcome, RetryPolicy, generate
from streamforge.services.streams import StreamManager, StreamRun
from streamforge.streaming.events import EventType
from streamforge.streaming.log import InProcessEventLog, StreamBuffer
from tests.conftest import AppFactory, live_server
from tests.procs import Event, SSEResult, free_port, read_sse, server_process

# -- the stream manager ----------------------------------------------------------------------


def ends(buffer: StreamBuffer) -> list[EventType]:
    """The types of the events after the last text delta."""
    types = [e.type for e in buffer.events]
    last_text = max((i for i, t in enumerate(types) if t is EventType.MESSAGE), default=0)
    return types[last_text + 1 :]


async def slow_generation(
    manager: StreamManager, finish_seconds: float = 0.2
) -> tuple[StreamRun, list[Outcome], asyncio.Event]:
    """A long simulated generation whose reply takes ``finish_seconds`` to record."""
    provider = SimulatedProvider(delay=0.005, min_words=1000)
    recorded: list[Outcome] = []
    recording = asyncio.Event()

    async def prepare() -> GenerationRequest:
        return GenerationRequest(messages=[])

    async def finish(outcome: Outcome) -> None:
        recording.set()
        await asyncio.sleep(finish_seconds)
        recorded.append(outcome)

    async def produce(run: StreamRun) -> None:
        await generate(run, [provider], prepare, RetryPolicy(), finish)

    return manager.start("s1", produce), recorded, recording


async def until_events(buffer: StreamBuffer, count: int) -> None:
    while buffer.last_id < count:
        await buffer.wait(buffer.last_id, 1.0)


async def test_stops_while_the_reply_is_recorded_still_give_one_done() -> None:
    """The battery's fault: a second cancel reached the task while it recorded the reply,
    and the stream never got its usage and done."""
    manager = StreamManager(InProcessEventLog())
    run, recorded, recording = await slow_generation(manager)
    await until_events(run.buffer, 5)
    assert manager.stop("s1", MessageStatus.CANCELLED)
    await recording.wait()
    # More cancels, a disconnect, a shutdown: all while the reply is being recorded.
    assert all(manager.stop("s1", MessageStatus.CANCELLED) for _ in range(5))
    assert manager.detach("s1")
    shutdown = asyncio.create_task(manager.shutdown())
    await manager.wait("s1")
    await shutdown
    assert ends(run.buffer) == [EventType.USAGE, EventType.DONE]
    done = run.buffer.done
    assert done is not None and done["status"] == "cancelled" and "reason" not in done
    assert [o.status for o in recorded] == [MessageStatus.CANCELLED]
    assert manager.active == 0
    assert not manager.stop("s1", MessageStatus.CANCELLED)


async def test_the_task_cancelled_from_outside_while_it_records_still_closes_the_stream() -> None:
    manager = StreamManager(InProcessEventLog())
    run, recorded, recording = await slow_generation(manager)
    await until_events(run.buffer, 3)
    assert run.task is not None
    manager.stop("s1", MessageStatus.INTERRUPTED, "shutdown")
    await recording.wait()
    for _ in range(3):
        run.task.cancel()
        await asyncio.sleep(0.01)
    await asyncio.gather(run.task, return_exceptions=True)
    assert ends(run.buffer) == [EventType.ERROR, EventType.USAGE, EventType.DONE]
    assert run.buffer.events[-2].data == run.buffer.done["usage"]  # type: ignore[index]
    assert run.buffer.events[-3].data["code"] == "shutdown"
    assert len(recorded) == 1


async def test_a_stop_before_the_task_ran_records_the_end_too() -> None:
    manager = StreamManager(InProcessEventLog())
    run, recorded, _ = await slow_generation(manager, finish_seconds=0)
    assert manager.stop("s1", MessageStatus.CANCELLED)  # the task has not run yet
    await manager.wait("s1")
    assert run.buffer.done is not None and run.buffer.done["status"] == "cancelled"
    assert [o.status for o in recorded] == [MessageStatus.CANCELLED]


async def test_a_producer_that_ends_without_done_still_closes_its_stream() -> None:
    log = InProcessEventLog(retention=0)
    manager = StreamManager(log)
    ended: list[StreamBuffer] = []

    async def produce(run: StreamRun) -> None:
        run.buffer.append(EventType.MESSAGE, "half an ans")

    async def on_done(buffer: StreamBuffer) -> None:
        ended.append(buffer)

    run = manager.start("s2", produce)
    await manager.on_done("s2", on_done)
    reader = asyncio.create_task(run.buffer.read(1, 5.0))
    await manager.wait("s2")
    assert [e.type for e in await reader] == [EventType.ERROR, EventType.DONE]
    assert run.buffer.done == {"finish_reason": "error", "status": "failed"}
    assert ended == [run.buffer]
    assert log.get("s2") is None  # closed, so it expires like any finished stream


# -- one worker: a real server process, SQLite and the in-process event log --------------------

# Long enough never to end on its own during a trial; short pauses keep the whole set fast.
ONE_WORKER = {
    "STREAMFORGE_LLM__SIMULATED__MIN_WORDS": "400",
    "STREAMFORGE_STREAMING__SIMULATED_DELAY": "0.01",
    "STREAMFORGE_STREAMING__HEARTBEAT_INTERVAL": "0.5",
}
# Each trial of N cancels at once, 20 times, for these N.
CANCELS_AT_ONCE = (2, 5, 20)
REPEATS = 20


def one_done(result: SSEResult) -> Event:
    """The stream's only ``done`` event, which is its last event."""
    dones = [e for e in result.events if e.event == "done"]
    assert len(dones) == 1, [e.event for e in result.events][-5:]
    assert result.events[-1] is dones[0]
    assert [e.event for e in result.events].count("usage") == 1
    assert result.ended == "complete"
    return dones[0]


async def started_stream(
    url: str, after: int = 5
) -> tuple[dict[str, Any], asyncio.Task[SSEResult]]:
    """POST /chat on ``url``: its ``session`` event once ``after`` events have arrived, and
    the task that goes on reading the stream to its end."""
    ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    sessions: list[dict[str, Any]] = []

    def on_event(event: Event) -> None:
        if event.event == "session":
            sessions.append(event.json())
        if event.id is not None and int(event.id) >= after and not ready.done():
            ready.set_result(sessions[0])

    reader = asyncio.create_task(
        read_sse(f"{url}/chat", "POST", json={"message": "go on"}, on_event=on_event, timeout=30)
    )
    await asyncio.wait({reader, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        raise AssertionError(f"the stream ended before {after} events: {reader.result()}")
    return ready.result(), reader


def following(
    url: str, stream_id: str, last_event_id: str
) -> tuple[asyncio.Task[SSEResult], asyncio.Event]:
    """A resume of ``stream_id`` on ``url``, and an event set once it has received one."""
    connected = asyncio.Event()

    def on_event(_: Event) -> None:
        connected.set()

    task = asyncio.create_task(
        read_sse(
            f"{url}/chat/streams/{stream_id}",
            headers={"Last-Event-ID": last_event_id},
            on_event=on_event,
            timeout=30,
        )
    )
    return task, connected


async def cancel_all(
    client: httpx.AsyncClient, urls: Sequence[str], stream_id: str, count: int
) -> list[httpx.Response]:
    """``count`` cancels of one stream at once, spread over ``urls``."""
    return await asyncio.gather(
        *(
            client.post(f"{urls[i % len(urls)]}/chat/streams/{stream_id}/cancel", timeout=15)
            for i in range(count)
        )
    )


async def concurrent_cancel_trial(
    client: httpx.AsyncClient,
    producer: str,
    others: Sequence[str],
    count: int,
) -> None:
    """One stream on ``producer``, resumed from id 0 and from id 3 on every server, stopped
    by ``count`` cancels at once spread over every server: each reader gets exactly one
    ``done`` within 2 s of the first cancel, and every cancel answers true."""
    servers = [producer, *others]
    session, first = await started_stream(producer)
    stream_id = str(session["stream_id"])
    resumers = [following(url, stream_id, last)[0] for url in servers for last in ("0", "3")]
    sent = time.perf_counter()
    answers = await cancel_all(client, servers, stream_id, count)
    results = await asyncio.gather(first, *resumers)
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"stream_id": stream_id, "cancelled": True}
    for result in results:
        assert result.status == 200
        done = one_done(result)
        assert done.json()["status"] == "cancelled"
        assert done.at - sent < 2.0
    whole = results[0]
    for resumed in results[1:]:
        replayed = [e for e in resumed.events if e.id is not None]
        assert [e.id for e in replayed] == [e.id for e in whole.events][-len(replayed) :]


async def completed_then_cancelled(client: httpx.AsyncClient, servers: Sequence[str]) -> None:
    """Cancels of a stream that completed say so: false, every one of them."""
    short = await read_sse(f"{servers[0]}/chat", "POST", json={"message": "short", "max_tokens": 3})
    assert one_done(short).json()["status"] == "completed"
    stream_id = str(short.session["stream_id"])
    for answer in await cancel_all(client, servers, stream_id, 5):
        assert answer.json() == {"stream_id": stream_id, "cancelled": False}


async def active_streams(client: httpx.AsyncClient, url: str) -> int:
    return int((await client.get(f"{url}/chat/health")).json()["active_streams"])


async def test_concurrent_cancels_on_one_worker_end_each_stream_once(tmp_path: Path) -> None:
    async with (
        server_process(tmp_path, ONE_WORKER) as server,
        httpx.AsyncClient() as client,
    ):
        for count in CANCELS_AT_ONCE:
            for _ in range(REPEATS):
                await concurrent_cancel_trial(client, server.url, [], count)
        assert await active_streams(client, server.url) == 0
        await completed_then_cancelled(client, [server.url])


async def test_sigterm_meeting_concurrent_cancels_exits_within_the_grace_period(
    tmp_path: Path,
) -> None:
    """Cancels, disconnects and a shutdown reach the same streams at once: every client that
    stays gets exactly one done, cancel answers match how each stream ended, and the server
    exits well within its 10 s grace period."""
    async with server_process(tmp_path, ONE_WORKER) as server, httpx.AsyncClient() as client:
        streams = [
            (str(session["stream_id"]), reader)
            for session, reader in [await started_stream(server.url) for _ in range(4)]
        ]
        resuming = [following(server.url, stream_id, "0") for stream_id, _ in streams]
        for _, connected in resuming:
            await asyncio.wait_for(connected.wait(), 10)
        resumers = [task for task, _ in resuming]
        # One more client leaves (a disconnect) as the rest happens.
        leaving = asyncio.create_task(
            read_sse(
                f"{server.url}/chat/streams/{streams[0][0]}",
                headers={"Last-Event-ID": "0"},
                stop_after=2,
            )
        )

        async def cancels(stream_id: str) -> list[httpx.Response | BaseException]:
            return await asyncio.gather(
                *(
                    client.post(f"{server.url}/chat/streams/{stream_id}/cancel", timeout=15)
                    for _ in range(5)
                ),
                return_exceptions=True,
            )

        cancelling = [asyncio.create_task(cancels(stream_id)) for stream_id, _ in streams]
        await asyncio.sleep(0.005)
        began = time.perf_counter()
        code = await server.terminate(timeout=15)
        took = time.perf_counter() - began
        results = await asyncio.gather(*(reader for _, reader in streams), *resumers)
        answers = await asyncio.gather(*cancelling)
        await leaving
    assert code in (0, -15)
    assert took < 5.0, took
    ended: dict[str, str] = {}
    for result in results:
        done = one_done(result).json()
        assert done["status"] in ("cancelled", "interrupted")
        stream_id = str(result.session["stream_id"])
        assert ended.setdefault(stream_id, done["status"]) == done["status"]
        if done["status"] == "interrupted":
            assert done["reason"] == "shutdown"
            assert result.typed("error")[-1]["code"] == "shutdown"
    for (stream_id, _), replies in zip(streams, answers, strict=True):
        for reply in replies:
            if isinstance(reply, httpx.Response) and reply.status_code == 200:
                assert reply.json()["cancelled"] is (ended[stream_id] == "cancelled")


# -- deleting a session --------------------------------------------------------------------


async def test_deleting_a_session_mid_stream_stops_its_generation(
    app_factory: AppFactory,
) -> None:
    app = app_factory(streaming={"simulated_delay": 0.01}, llm={"simulated": {"min_words": 400}})
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        session, reading = await started_stream(server.url, after=10)
        stream_id, session_id = str(session["stream_id"]), str(session["session_id"])
        resumed, connected = following(server.url, stream_id, "4")
        await asyncio.wait_for(connected.wait(), 10)
        deleted = await client.delete(f"/sessions/{session_id}")
        assert deleted.status_code == 204
        # The delete answers once the generation has ended.
        assert server.components.streams.active == 0
        for result in await asyncio.gather(reading, resumed):
            done = one_done(result).json()
            assert done["status"] == "cancelled" and done["reason"] == "session_deleted"
            assert done["finish_reason"] == "cancelled"
        whole = reading.result()
        assert 10 <= len(whole.deltas) < 400
        assert (await client.get(f"/sessions/{session_id}")).status_code == 404
        assert (await client.get(f"/sessions/{session_id}/messages")).status_code == 404
        # A cancel afterwards finds it stopped the way a cancel does.
        again = await client.post(f"/chat/streams/{stream_id}/cancel")
        assert again.json()["cancelled"] is True


# -- errors clients see ----------------------------------------------------------------------


async def test_the_retryable_stream_error_names_no_address_or_library_message(
    app_factory: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis unreachable: the resume's retryable error, the cancel's 503 and the health
    report say so without the address or the client library's message; the log has them."""
    port = free_port()  # nothing listens there
    app = app_factory(redis={"url": f"redis://127.0.0.1:{port}/0", "timeout": 1.0})
    stream_id = "0190a0a0-0000-7000-8000-000000000000"
    with caplog.at_level(logging.WARNING, logger="streamforge"):
        async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
            resumed = await read_sse(
                f"{server.url}/chat/streams/{stream_id}", headers={"Last-Event-ID": "3"}
            )
            cancel = await client.post(f"/chat/streams/{stream_id}/cancel")
            health = (await client.get("/health")).json()["components"]["event_log"]
    assert resumed.status == 200
    [error] = resumed.events
    assert error.event == "error" and error.id is None
    body = error.json()
    assert body["code"] == "event_log_unavailable" and body["retryable"] is True
    assert cancel.status_code == 503
    assert health["status"] == "error"
    for shown in (error.data, cancel.text, str(health)):
        for leak in (str(port), "127.0.0.1", "Error", "refused", "redis://", "(", "<"):
            assert leak not in shown, (leak, shown)
    assert any(str(port) in record.getMessage() for record in caplog.records)
