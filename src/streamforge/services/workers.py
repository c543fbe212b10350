"""Workers: each server process records that it is alive; replies left by a dead one end.

While a reply streams, its text so far is stored every ``checkpoint_interval`` seconds (one
transaction for all of this worker's replies), so that a worker killed outright loses at most
that much of what its clients saw, even with the in-process event log.

Every worker has a row in ``workers`` with a heartbeat it refreshes every
``heartbeat_interval`` seconds, and every reply it generates carries its id while it is
``streaming``. At startup, and at every heartbeat after that, a worker looks for replies left
``streaming`` by a worker that is gone (no row, or a heartbeat older than ``worker_timeout``)
and marks them ``interrupted``, with the text of the events the event log kept (Redis keeps
them across processes; the in-process log dies with its worker, and then the stored text is
what remains). Their streams get a final retryable ``error`` and ``done``, so that a client
following one on another worker is told it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import timedelta

from streamforge.db.database import Database
from streamforge.db.ids import new_id
from streamforge.models import MessageStatus
from streamforge.models.base import utcnow
from streamforge.repositories import workers as repo
from streamforge.services.streams import StreamManager
from streamforge.streaming.events import EventType
from streamforge.streaming.log import EventLog, EventLogUnavailable

logger = logging.getLogger(__name__)

WORKER_LOST = {
    "code": "worker_lost",
    "message": "the server process generating this answer stopped; send the message again",
    "retryable": True,
}


class WorkerService:
    def __init__(
        self,
        database: Database,
        log: EventLog,
        streams: StreamManager | None = None,
        *,
        worker_id: str | None = None,
        heartbeat_interval: float = 5.0,
        timeout: float = 30.0,
        checkpoint_interval: float = 2.0,
    ) -> None:
        self.database = database
        self.log = log
        self.heartbeat_interval = heartbeat_interval
        self.timeout = timeout
        self.id = worker_id or new_id()
        self.checkpoint_interval = checkpoint_interval
        self._task: asyncio.Task[None] | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        self.reaped = 0
        # This worker's generations, whose replies are checkpointed (none: nothing to store).
        self.streams = streams

    async def start(self) -> None:
        async with self.database.write() as db:
            await repo.add_worker(db, self.id, socket.gethostname()[:255], os.getpid())
        await self.reap()
        self._task = asyncio.create_task(self._beat(), name="worker-heartbeat")
        if self.checkpoint_interval > 0:
            self._checkpoints = asyncio.create_task(
                self._checkpoint_loop(), name="reply-checkpoints"
            )

    async def stop(self) -> None:
        for task in (self._task, self._checkpoints):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with self.database.write() as db:
                await repo.remove_workers(db, [self.id])

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                async with self.database.write() as db:
                    await repo.beat(db, self.id)
                await self.reap()
            except Exception:
                logger.exception("worker heartbeat failed")

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            try:
                await self.checkpoint()
            except Exception:
                logger.exception("storing the text of streaming replies failed")

    async def checkpoint(self) -> int:
        """Store the text so far of this worker's streaming replies; returns how many."""
        if self.streams is None:
            return 0
        pending = self.streams.unsaved()
        if not pending:
            return 0
        texts = [
            (run.message_id, "".join(run.parts[:count]))
            for run, count in pending
            if run.message_id is not None
        ]
        async with self.database.write() as db:
            await repo.store_texts(db, texts)
        for run, count in pending:
            run.saved = count
        return len(texts)

    async def reap(self) -> int:
        """Mark the replies of dead workers interrupted; returns how many."""
        cutoff = utcnow() - timedelta(seconds=self.timeout)
        host = socket.gethostname()[:255]
        async with self.database.read() as db:
            workers = await repo.workers(db)
            # Silent for too long, or (on this host) a process that no longer exists.
            dead = [
                worker_id
                for worker_id, worker_host, pid, heartbeat_at in workers
                if worker_id != self.id
                and (heartbeat_at < cutoff or (worker_host == host and not _running(pid)))
            ]
            live = [w[0] for w in workers if w[0] not in dead]
            rows = await repo.orphaned_replies(db, live)
        for message_id, stream_id, content in rows:
            await self._interrupt(message_id, stream_id, content)
        if dead:
            async with self.database.write() as db:
                await repo.remove_workers(db, dead)
        self.reaped += len(rows)
        return len(rows)

    async def _interrupt(self, message_id: str, stream_id: str | None, stored: str) -> None:
        text = stored
        events = None
        if stream_id is not None:
            try:
                events = await self.log.recover(stream_id)
            except EventLogUnavailable as exc:
                logger.warning("cannot read stream %s from the event log: %s", stream_id, exc)
        if events:
            logged = "".join(e.data for e in events if e.type is EventType.MESSAGE)
            if len(logged) >= len(text):
                text = logged
        async with self.database.write() as db:
            interrupted = await repo.interrupt_reply(db, message_id, text, dict(WORKER_LOST))
        if not interrupted or stream_id is None or events is None:
            return
        logger.info("reply %s of a stopped worker marked interrupted", message_id)
        with contextlib.suppress(EventLogUnavailable, Exception):
            await self.log.seal(
                stream_id,
                [
                    (EventType.ERROR, dict(WORKER_LOST)),
                    (
                        EventType.DONE,
                        {
                            "finish_reason": "interrupted",
                            "status": MessageStatus.INTERRUPTED.value,
                            "reason": "worker_lost",
                            "message_id": message_id,
                        },
                    ),
                ],
            )


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a row of an earlier process whose pid this one reuses
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
