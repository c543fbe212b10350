"""Running streams: the producer tasks that write chat events into the event log.

Generation is a task of its own, not part of the HTTP response, so that what a client reads
and how long generation runs are decided separately: a disconnect cancels the producer
explicitly, and later a client will be able to resume from the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from streamforge.models import MessageStatus
from streamforge.streaming.log import InProcessEventLog, StreamBuffer

logger = logging.getLogger(__name__)

Producer = Callable[["StreamRun"], Coroutine[Any, Any, None]]


class StreamRun:
    """One generation: its buffer, its task and why it was stopped, if it was."""

    __slots__ = ("buffer", "stop_reason", "stream_id", "task")

    def __init__(self, stream_id: str, buffer: StreamBuffer) -> None:
        self.stream_id = stream_id
        self.buffer = buffer
        self.task: asyncio.Task[None] | None = None
        self.stop_reason: MessageStatus | None = None


class StreamManager:
    def __init__(
        self,
        log: InProcessEventLog,
        on_finish: Callable[[StreamBuffer], None] | None = None,
    ) -> None:
        self.log = log
        # Called with each stream's buffer when its producer has ended (metrics).
        self.on_finish = on_finish
        self._runs: dict[str, StreamRun] = {}

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
            if self.on_finish is not None:
                try:
                    self.on_finish(run.buffer)
                except Exception:
                    logger.exception("observing stream %s failed", run.stream_id)

    def stop(self, stream_id: str, reason: MessageStatus) -> bool:
        run = self._runs.get(stream_id)
        if run is None or run.task is None or run.task.done():
            return False
        if run.stop_reason is None:
            run.stop_reason = reason
        run.task.cancel()
        return True

    async def wait(self, stream_id: str) -> None:
        run = self._runs.get(stream_id)
        if run is not None and run.task is not None:
            await asyncio.gather(run.task, return_exceptions=True)

    async def wait_all(self) -> None:
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def shutdown(self) -> None:
        """Stop every generation and wait until each has recorded its end."""
        tasks = []
        for stream_id, run in list(self._runs.items()):
            self.stop(stream_id, MessageStatus.INTERRUPTED)
            if run.task is not None:
                tasks.append(run.task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
