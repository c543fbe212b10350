"""Running streams: the producer tasks that write chat events into the event log.

Generation is a task of its own, not part of the HTTP response, so that what a client reads
and how long generation runs are decided separately. Each run counts the responses that
follow it, on any worker; when the last one leaves, the disconnect policy decides: ``cancel``
stops generation at once (within one token), ``continue`` lets it run for a grace period and
stops it then unless a client has resumed. Cancel, attach and detach travel as control signals
through the event log, so they reach the run on whichever worker produces it.

A stream ends exactly once, however many stops reach it (cancels, disconnects, a deleted
session, shutdown): the first stop decides why it ended and cancels the task; later ones only
wait. Whatever happens to the producer, its stream is closed with ``done`` when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, TypeVar

from streamforge.models import MessageStatus
from streamforge.streaming.events import EventType, StreamEvent
from streamforge.streaming.log import (
    EventLog,
    EventLogUnavailable,
    Signal,
    StreamBuffer,
    StreamReader,
)

logger = logging.getLogger(__name__)

Producer = Callable[["StreamRun"], Coroutine[Any, Any, None]]
DoneCallback = Callable[[StreamBuffer], Awaitable[None]]
T = TypeVar("T")

# Why a stop happened, beyond its status (the ``reason`` of the ``done`` event).
STOP_DETAILS = frozenset({"shutdown", "session_deleted"})

# The end of a stream whose producer never logged one (a bug, or a task cancelled before it
# ran): the stream still gets its ``done``, so no reader waits forever.
ABANDONED_ERROR = {
    "code": "internal_error",
    "message": "the answer ended unexpectedly; send the message again",
    "retryable": True,
}


async def to_the_end(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end even when the calling task is cancelled meanwhile (once or
    many times); the cancellation is raised once ``work`` is done.

    For what must happen exactly once after generation stops: recording the reply and
    logging ``usage`` and ``done``. ``asyncio.shield`` alone keeps ``work`` running but lets
    the caller go on at the first cancellation, skipping whatever it does next.
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
            continue
        break
    if cancelled:
        raise asyncio.CancelledError
    return result


class StreamRun:
    """One generation: its buffer, its task and why it was stopped, if it was."""

    __slots__ = (
        "buffer",
        "done_callbacks",
        "grace",
        "message_id",
        "parts",
        "readers",
        "saved",
        "started",
        "stop_detail",
        "stop_reason",
        "stream_id",
        "task",
    )

    def __init__(self, stream_id: str, buffer: StreamBuffer) -> None:
        self.stream_id = stream_id
        self.buffer = buffer
        self.task: asyncio.Task[None] | None = None
        # Set once the task runs: a stop before then is carried out by the task itself.
        self.started = False
        # Set by the first stop only: how the stream ends, and why beyond the status
        # ("shutdown" when the server is stopping, "session_deleted").
        self.stop_reason: MessageStatus | None = None
        self.stop_detail: str | None = None
        # Responses following the stream, on any worker; the one that started it counts.
        self.readers = 1
        self.grace: asyncio.TimerHandle | None = None
        # The reply being generated (chat only), its text so far, and how many of the
        # parts the last checkpoint stored.
        self.message_id: str | None = None
        self.parts: list[str] = []
        self.saved = 0
        self.done_callbacks: list[DoneCallback] = []


DisconnectPolicy = Literal["cancel", "continue"]


class StreamManager:
    def __init__(
        self,
        log: EventLog,
        on_finish: Callable[[StreamBuffer], None] | None = None,
        *,
        policy: DisconnectPolicy = "cancel",
        grace: float = 30.0,
    ) -> None:
        self.log = log
        # Called with each stream's buffer when its producer has ended (metrics).
        self.on_finish = on_finish
        self.policy = policy
        self.grace = grace
        self._runs: dict[str, StreamRun] = {}
        # Set when the server starts shutting down: no new generation from then on.
        self.closing = False

    @property
    def active(self) -> int:
        return len(self._runs)

    def start(self, stream_id: str, produce: Producer, owner_id: str | None = None) -> StreamRun:
        run = StreamRun(stream_id, self.log.create(stream_id, owner_id))
        run.task = asyncio.create_task(self._drive(run, produce), name=f"stream:{stream_id}")
        self._runs[stream_id] = run
        return run

    async def _drive(self, run: StreamRun, produce: Producer) -> None:
        run.started = True
        task = asyncio.current_task()
        if run.stop_reason is not None and task is not None:
            # Stopped before it ran: the producer meets the cancellation at its first await
            # and records the end like any other stop.
            task.cancel()
        try:
            await produce(run)
        except asyncio.CancelledError:
            pass
        except Exception:  # the producer records its own failures; this is the last resort
            logger.exception("stream %s crashed", run.stream_id)
        finally:
            # A stop arriving now finds the run gone: the end below is this stream's only one.
            self._runs.pop(run.stream_id, None)
            if run.grace is not None:
                run.grace.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await to_the_end(self._ended(run))

    async def _ended(self, run: StreamRun) -> None:
        if not run.buffer.closed:
            logger.error("stream %s ended without a done event; closing it", run.stream_id)
            status = run.stop_reason or MessageStatus.FAILED
            run.buffer.append(EventType.ERROR, dict(ABANDONED_ERROR))
            run.buffer.append(
                EventType.DONE,
                {
                    "finish_reason": "error" if status is MessageStatus.FAILED else status.value,
                    "status": status.value,
                    **({"reason": run.stop_detail} if run.stop_detail else {}),
                },
            )
        for callback in run.done_callbacks:
            try:
                await callback(run.buffer)
            except Exception:
                logger.exception("a callback of stream %s failed", run.stream_id)
        if self.on_finish is not None:
            try:
                self.on_finish(run.buffer)
            except Exception:
                logger.exception("observing stream %s failed", run.stream_id)

    def unsaved(self) -> list[tuple[StreamRun, int]]:
        """Runs whose reply has text that no checkpoint stored yet, with their part count."""
        return [
            (run, len(run.parts))
            for run in self._runs.values()
            if run.message_id is not None and len(run.parts) > run.saved
        ]

    async def on_done(self, stream_id: str, callback: DoneCallback) -> None:
        """Call ``callback`` with the stream's buffer once its producer has ended (now, if it
        already has)."""
        run = self._runs.get(stream_id)
        if run is not None:
            run.done_callbacks.append(callback)
            return
        buffer = self.log.get(stream_id)
        if buffer is not None:
            await callback(buffer)

    def is_local(self, stream_id: str) -> bool:
        return stream_id in self._runs

    def stop(self, stream_id: str, reason: MessageStatus, detail: str | None = None) -> bool:
        """Stop a generation of this worker; True while it is stopping (by this call or an
        earlier one), False when it is not here or has ended.

        Only the first stop cancels the task: a second cancellation would interrupt the
        producer while it records the end, and the stream would never get its ``done``."""
        run = self._runs.get(stream_id)
        if run is None or run.task is None or run.task.done():
            return False
        if run.stop_reason is not None:
            return True
        run.stop_reason = reason
        run.stop_detail = detail
        if run.started:
            run.task.cancel()
        return True

    async def cancel(
        self,
        reader: StreamReader,
        detail: str | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> dict[str, Any] | None:
        """Stop a stream on whichever worker generates it and wait for its end: the data of
        its ``done`` event, or None when that did not come within ``timeout``. The stream
        ended ``cancelled`` when this call or an earlier one stopped it; otherwise it had
        already ended (or was ending) some other way, which ``done`` tells.
        Raises ``EventLogUnavailable`` when the producing worker cannot be reached."""
        stream_id = reader.stream_id
        if stream_id in self._runs:
            self.stop(stream_id, MessageStatus.CANCELLED, detail)
            await self.wait(stream_id)
        elif not reader.closed:
            signal: Signal = {"op": "cancel", "stream_id": stream_id}
            if detail is not None:
                signal["detail"] = detail
            await self.log.signal(signal)
        return await until_done(reader, timeout)

    # -- readers joining and leaving, on any worker ------------------------------------

    def attach(self, stream_id: str) -> None:
        run = self._runs.get(stream_id)
        if run is None:
            return
        run.readers += 1
        if run.grace is not None:
            run.grace.cancel()
            run.grace = None

    def detach(self, stream_id: str, reason: MessageStatus = MessageStatus.INTERRUPTED) -> bool:
        """A reader left; True when that stopped the generation (no reader is left and the
        policy is ``cancel``), ending it with ``reason``."""
        run = self._runs.get(stream_id)
        if run is None:
            return False
        run.readers = max(0, run.readers - 1)
        if run.readers:
            return False
        if self.policy == "cancel" or self.grace <= 0:
            return self.stop(stream_id, reason)
        if run.grace is None:
            run.grace = asyncio.get_running_loop().call_later(
                self.grace, self.stop, stream_id, MessageStatus.INTERRUPTED
            )
        return False

    async def reader_joined(self, stream_id: str) -> None:
        """A response started following ``stream_id`` (a resume, an idempotent retry)."""
        if stream_id in self._runs:
            self.attach(stream_id)
            return
        await self._signal({"op": "attach", "stream_id": stream_id})

    async def reader_left(
        self, stream_id: str, reason: MessageStatus = MessageStatus.INTERRUPTED
    ) -> None:
        """A response following ``stream_id`` ended before the stream did; ``reason`` is how
        the stream ends when the policy stops it (``cancelled`` for a client whose way to
        stop is to leave)."""
        if stream_id in self._runs:
            if self.detach(stream_id, reason):
                await self.wait(stream_id)
            return
        await self._signal({"op": "detach", "stream_id": stream_id, "status": reason.value})

    async def _signal(self, signal: Signal) -> None:
        try:
            await self.log.signal(signal)
        except EventLogUnavailable as exc:
            # The producing worker keeps its own policy; at worst it waits out its grace.
            logger.warning("could not signal %s: %s", signal.get("op"), exc.message)

    def on_signal(self, signal: Signal) -> None:
        """A control signal from any worker (this one included): act if the run is here."""
        stream_id = signal.get("stream_id")
        if not isinstance(stream_id, str) or stream_id not in self._runs:
            return
        op = signal.get("op")
        if op == "cancel":
            detail = signal.get("detail")
            known = detail if detail in STOP_DETAILS else None
            self.stop(stream_id, MessageStatus.CANCELLED, known)
        elif op == "attach":
            self.attach(stream_id)
        elif op == "detach":
            cancelled = signal.get("status") == MessageStatus.CANCELLED.value
            reason = MessageStatus.CANCELLED if cancelled else MessageStatus.INTERRUPTED
            self.detach(stream_id, reason)

    async def wait(self, stream_id: str) -> None:
        run = self._runs.get(stream_id)
        if run is not None and run.task is not None:
            await asyncio.gather(run.task, return_exceptions=True)

    async def wait_all(self) -> None:
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def shutdown(self) -> None:
        """Stop every generation and wait until each has recorded its end: each stream ends
        with a retryable ``error`` (code ``shutdown``) and its ``done`` event."""
        self.closing = True
        tasks = []
        for stream_id, run in list(self._runs.items()):
            self.stop(stream_id, MessageStatus.INTERRUPTED, "shutdown")
            if run.task is not None:
                tasks.append(run.task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def until_done(reader: StreamReader, timeout: float) -> dict[str, Any] | None:  # noqa: ASYNC109
    """Follow a stream to its ``done`` event (the last logged one counts): its data, or None
    if it does not come within ``timeout`` or the stream is gone."""
    cursor = max(reader.last_id - 1, 0)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        events: list[StreamEvent] = await reader.read(cursor, min(left, 1.0))
        if events:
            cursor = events[-1].id
            if events[-1].is_terminal:
                data = events[-1].data
                return data if isinstance(data, dict) else None
        elif reader.closed:
            return None
    return None
