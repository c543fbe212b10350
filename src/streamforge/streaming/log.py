"""The in-process event log: every event of a stream, kept for readers to replay and follow.

A producer appends; any number of readers read the events after an id and wait for more.
Finished streams stay readable for ``retention`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from streamforge.streaming.events import EventType, StreamEvent


class StreamBuffer:
    __slots__ = (
        "_on_close",
        "_waiter",
        "closed",
        "closed_at",
        "events",
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
        self._wake()
        return event

    def after(self, last_id: int) -> list[StreamEvent]:
        # Ids are 1-based positions, so the events after ``last_id`` start at that index.
        return self.events[max(last_id, 0) :]

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


class InProcessEventLog:
    """Streams by id. Finished ones are dropped after ``retention`` seconds, or sooner, oldest
    first, when more than ``max_finished`` are kept."""

    def __init__(self, retention: float = 600.0, max_finished: int = 10_000) -> None:
        self.retention = retention
        self.max_finished = max_finished
        self._streams: dict[str, StreamBuffer] = {}
        # Streams in the order they finished: expiry looks only at the front.
        self._finished: deque[StreamBuffer] = deque()

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
