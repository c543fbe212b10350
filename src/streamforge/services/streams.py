"""Running streams: the producer tasks that write chat events into the event log.

Generation is a task of its own, not part of the HTTP response, so that what a client reads
and how long generation runs are decided separately. Each run counts the responses that
follow it, on any worker; when the last one leaves, the disconnect policy decides: ``cancel``
stops generation at once (within one token), ``continue`` lets it run for a grace period and
stops it then unless a client has resumed. Cancel, attach and detach travel as control signals
through the event log, so they reach the run on whichever worker produces it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal

from streamforge.models import MessageStatus
from streamforge.streaming.log import EventLog, EventLogUnavailable, Signal, StreamBuffer

logger = logging.getLogger(__name__)

Producer = Callable[["StreamRun"], Coroutine[Any, Any, None]]
DoneCallback = Callable[[StreamBuffer], Awaitable[None]]


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
        "stop_detail",
        "stop_reason",
        "stream_id",
        "task",
    )

    def __init__(self, stream_id: str, buffer: StreamBuffer) -> None:
        self.stream_id = stream_id
        self.buffer = buffer
        self.task: asyncio.Task[None] | None = None
        self.stop_reason: MessageStatus | None = None
        # Why, beyond the status: "shutdown" when the server is stopping.
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
        log.on_signal = self.on_signal

    @property
    def active(self) -> int:
        return len(self._runs)

    def start(self, stream_id: str, produce: Producer, owner_id: str | None = None) -> StreamRun:
        run = StreamRun(stream_id, self.log.create(stream_id, owner_id))
        run.task = asyncio.create_task(self._drive(run, produce), name=f"stream:{stream_id}")
        self._runs[stream_id] = run
        return run

    async def _drive(self, run: StreamRun, produce: Producer) -> None:
        try:
            await produce(run)
        except asyncio.CancelledError:
            pass
        except Exception:  # the producer records its own failures; this is the last resort
            logger.exception("stream %s crashed", run.stream_id)
        finally:
            self._runs.pop(run.stream_id, None)
            if run.grace is not None:
                run.grace.cancel()
            for callback in run.done_callbacks:
                try:
                    await asyncio.shield(callback(run.buffer))
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
        run = self._runs.get(stream_id)
        if run is None or run.task is None or run.task.done():
            return False
        if run.stop_reason is None:
            run.stop_reason = reason
            run.stop_detail = detail
        run.task.cancel()
        return True

    # -- readers joining and leaving, on any worker ------------------------------------

    def attach(self, stream_id: str) -> None:
        run = self._runs.get(stream_id)
        if run is None:
            return
        run.readers += 1
        if run.grace is not None:
            run.grace.cancel()
            run.grace = None

    def detach(self, stream_id: str) -> bool:
        """A reader left; True when that stopped the generation (no reader is left and the
        policy is ``cancel``)."""
        run = self._runs.get(stream_id)
        if run is None:
            return False
        run.readers = max(0, run.readers - 1)
        if run.readers:
            return False
        if self.policy == "cancel" or self.grace <= 0:
            return self.stop(stream_id, MessageStatus.INTERRUPTED)
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

    async def reader_left(self, stream_id: str) -> None:
        """A response following ``stream_id`` ended before the stream did."""
        if stream_id in self._runs:
            if self.detach(stream_id):
                await self.wait(stream_id)
            return
        await self._signal({"op": "detach", "stream_id": stream_id})

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
            self.stop(stream_id, MessageStatus.CANCELLED)
        elif op == "attach":
            self.attach(stream_id)
        elif op == "detach":
            self.detach(stream_id)

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
