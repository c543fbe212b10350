"""The event log: every event of a stream, kept for readers to replay and follow.

A producer appends to the stream's ``StreamBuffer`` in the worker that generates it; any number
of readers read the events after an id and wait for more. Finished streams stay readable for
``retention`` seconds.

``EventLog`` is the component's interface. ``InProcessEventLog`` (the default) keeps streams
in this process only; ``streaming.redis_log.RedisEventLog`` also copies every stream into Redis
Streams, so that any worker can resume it, and carries control signals (cancel, attach,
detach) between workers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from streamforge.errors import EventLogUnavailable as EventLogUnavailable
from streamforge.streaming.events import EventType, StreamEvent

# A control signal between workers: {"op": "cancel" | "attach" | "detach", "stream_id": ...}.
Signal = dict[str, Any]


class StreamReader(Protocol):
    """What a response needs of a stream: who owns it, how far it is, and its events."""

    @property
    def stream_id(self) -> str: ...

    @property
    def owner_id(self) -> str | None: ...

    @property
    def closed(self) -> bool: ...

    @property
    def last_id(self) -> int: ...

    async def read(self, after: int, timeout: float) -> list[StreamEvent]:  # noqa: ASYNC109
        """The events after ``after``, waiting up to ``timeout`` for one; [] when none came.
        Raises ``EventLogUnavailable`` when the events cannot be read."""
        ...


class Unreachable:
    """A stream that cannot be read now: a response over it is one retryable error."""

    def __init__(self, stream_id: str, error: EventLogUnavailable) -> None:
        self.stream_id = stream_id
        self.owner_id: str | None = None
        self.closed = False
        self.last_id = 0
        self.error = error

    async def read(self, after: int, timeout: float) -> list[StreamEvent]:  # noqa: ASYNC109
        raise self.error


class StreamBuffer:
    __slots__ = (
        "_on_close",
        "_waiter",
        "closed",
        "closed_at",
        "dirty",
        "events",
        "flushed",
        "on_dirty",
        "owner_id",
        "stream_id",
    )

    def __init__(
        self,
        stream_id: str,
        on_close: Callable[[StreamBuffer], None] | None = None,
        owner_id: str | None = None,
    ) -> None:
        self.stream_id = stream_id
        # Who may read, resume or cancel the stream.
        self.owner_id = owner_id
        self._on_close = on_close
        self.events: list[StreamEvent] = []
        self.closed = False
        self.closed_at: float | None = None
        self._waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # For a log that copies streams elsewhere (Redis): events copied so far, and a hook
        # called once when new events wait to be copied.
        self.flushed = 0
        self.dirty = False
        self.on_dirty: Callable[[StreamBuffer], None] | None = None

    @property
    def last_id(self) -> int:
        return len(self.events)

    def append(self, type_: EventType, data: Any) -> StreamEvent:
        if self.closed:
            raise RuntimeError(f"stream {self.stream_id} is closed")
        event = StreamEvent(len(self.events) + 1, type_, data)
        self.events.append(event)
        if type_ is EventType.DONE:
            self.closed = True
            self.closed_at = time.monotonic()
            if self._on_close is not None:
                self._on_close(self)
        if self.on_dirty is not None and not self.dirty:
            self.dirty = True
            self.on_dirty(self)
        self._wake()
        return event

    @property
    def done(self) -> dict[str, Any] | None:
        """The data of the ``done`` event, once the stream has one (it is the last)."""
        if not self.events or self.events[-1].type is not EventType.DONE:
            return None
        data = self.events[-1].data
        return data if isinstance(data, dict) else None

    async def read(self, after: int, timeout: float) -> list[StreamEvent]:  # noqa: ASYNC109
        # Every append wakes the waiters; one that is past the last event (a resume with an
        # id from a worker ahead of this log) waits on, not returning empty on each.
        deadline = time.monotonic() + timeout
        while True:
            events = self.events[max(after, 0) :]
            if events or self.closed:
                return events
            left = deadline - time.monotonic()
            if left <= 0 or not await self.wait(after, left):
                return []

    async def wait(self, last_id: int, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until there is an event after ``last_id``; False when ``timeout`` passes first."""
        if len(self.events) > last_id or self.closed:
            return True
        waiter = self._waiter
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(waiter)
        except TimeoutError:
            return False
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        self._waiter = asyncio.get_running_loop().create_future()
        waiter.set_result(None)


def closed_stream(
    stream_id: str, owner_id: str | None, events: list[tuple[EventType, Any]]
) -> StreamBuffer:
    """A finished stream made of the given events, kept by no log (a replay from storage)."""
    buffer = StreamBuffer(stream_id, owner_id=owner_id)
    for type_, data in events:
        buffer.append(type_, data)
    return buffer


class EventLog(Protocol):
    backend: str

    def create(self, stream_id: str, owner_id: str | None = None) -> StreamBuffer:
        """A new stream produced by this worker."""
        ...

    def get(self, stream_id: str) -> StreamBuffer | None:
        """A stream produced by this worker, while it is retained."""
        ...

    async def open(self, stream_id: str) -> StreamReader | None:
        """A stream produced by any worker, while it is retained."""
        ...

    async def signal(self, signal: Signal) -> None:
        """Send a control signal to every worker."""
        ...

    async def recover(self, stream_id: str) -> list[StreamEvent] | None:
        """The logged events of a stream whose producer is gone, if the log kept them."""
        ...

    async def seal(self, stream_id: str, events: list[tuple[EventType, Any]]) -> None:
        """Append the final events of a stream whose producer is gone."""
        ...

    def interrupt_readers(self, message: str) -> None:
        """End every response that follows another worker's stream (shutdown)."""
        ...

    async def start(self, on_signal: Callable[[Signal], None] | None = None) -> None:
        """Start background work; ``on_signal`` is called with every control signal that
        reaches this worker (its own included)."""
        ...

    async def aclose(self) -> None: ...

    async def health(self) -> dict[str, Any]: ...

    def __len__(self) -> int: ...


class InProcessEventLog:
    """Streams by id. Finished ones are dropped after ``retention`` seconds, or sooner, oldest
    first, when more than ``max_finished`` are kept."""

    backend = "in-process"

    def __init__(self, retention: float = 600.0, max_finished: int = 10_000) -> None:
        self.retention = retention
        self.max_finished = max_finished
        self._streams: dict[str, StreamBuffer] = {}
        # Streams in the order they finished: expiry looks only at the front.
        self._finished: deque[StreamBuffer] = deque()
        self.on_signal: Callable[[Signal], None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def open(self, stream_id: str) -> StreamReader | None:
        return self.get(stream_id)

    async def signal(self, signal: Signal) -> None:
        if self.on_signal is not None:
            self.on_signal(signal)

    async def recover(self, stream_id: str) -> list[StreamEvent] | None:
        buffer = self.get(stream_id)
        return None if buffer is None else list(buffer.events)

    async def seal(self, stream_id: str, events: list[tuple[EventType, Any]]) -> None:
        buffer = self.get(stream_id)
        if buffer is not None and not buffer.closed:
            for type_, data in events:
                buffer.append(type_, data)

    def interrupt_readers(self, message: str) -> None:
        """Every stream here has a producer in this process, which ends it itself."""

    async def start(self, on_signal: Callable[[Signal], None] | None = None) -> None:
        self.on_signal = on_signal
        # Expiry also runs on every create and get; the sweeper frees finished streams on
        # time when no new stream comes.
        self._sweeper = asyncio.create_task(self._sweep(), name="event-log-sweeper")

    async def _sweep(self) -> None:
        interval = min(max(self.retention / 4, 1.0), 30.0)
        while True:
            await asyncio.sleep(interval)
            self._expire()

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "backend": self.backend, "streams": len(self._streams)}

    def streams(self) -> list[StreamBuffer]:
        self._expire()
        return list(self._streams.values())

    def create(self, stream_id: str, owner_id: str | None = None) -> StreamBuffer:
        self._expire()
        buffer = StreamBuffer(stream_id, on_close=self._finished.append, owner_id=owner_id)
        self._streams[stream_id] = buffer
        return buffer

    def get(self, stream_id: str) -> StreamBuffer | None:
        self._expire()
        return self._streams.get(stream_id)

    def __len__(self) -> int:
        return len(self._streams)

    def _expire(self) -> None:
        deadline = time.monotonic() - self.retention
        finished = self._finished
        while finished and (
            len(finished) > self.max_finished or (finished[0].closed_at or 0.0) < deadline
        ):
            buffer = finished.popleft()
            if self._streams.get(buffer.stream_id) is buffer:
                del self._streams[buffer.stream_id]
