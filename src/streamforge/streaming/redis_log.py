"""The Redis event log: streams shared by every worker through Redis Streams and pub/sub.

The worker that generates a stream keeps it in memory as usual (its own readers never wait on
Redis) and copies its events into a Redis stream in the background: one flusher task sends
every new event of every stream in pipelined batches. Entry ids are ``0-<event id>``, so the
SSE id and the Redis id name the same event and a reader on any worker asks Redis for exactly
the entries after its ``Last-Event-ID``.

Copies are idempotent: Redis refuses an entry id that is not above the stream's last one, so
sending events again never duplicates them. After any Redis failure every retained stream is
sent again from its first event; a Redis that restarted empty gets the whole streams back, one
that kept them refuses what it has. Generation never waits for Redis.

Keys, under the configured prefix: ``s:<stream id>`` (the events, fields ``t`` type and ``d``
data), ``m:<stream id>`` (a hash: owner, worker, closed). Live streams expire after
``live_ttl``, finished ones ``retention`` seconds after their ``done`` event. Control signals
(cancel, attach, detach) go over the pub/sub channel ``control``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from streamforge.streaming.events import MAX_EVENT_ID, EventType, StreamEvent
from streamforge.streaming.log import (
    EventLogUnavailable,
    InProcessEventLog,
    Signal,
    StreamBuffer,
    StreamReader,
)

logger = logging.getLogger(__name__)

_BATCH = 256  # streams per pipeline
_TYPES = {t.value.encode(): t for t in EventType}
_UNAVAILABLE = "the shared event log is unavailable; try again shortly"


def _unavailable(exc: BaseException) -> EventLogUnavailable:
    """The error a client sees: no address, no client library message (the log keeps them)."""
    logger.warning("Redis event log unavailable: %s: %s", type(exc).__name__, exc)
    return EventLogUnavailable(_UNAVAILABLE)


def entry_id(event_id: int) -> str:
    return f"0-{event_id}"


def _event(entry: Any) -> StreamEvent:
    """A Redis stream entry, ``(b"0-<id>", {b"t": type, b"d": data})``, as an event."""
    raw_id, fields = entry
    type_ = _TYPES[fields[b"t"]]
    raw = fields[b"d"]
    data: Any = raw.decode("utf-8") if type_ is EventType.MESSAGE else orjson.loads(raw)
    return StreamEvent(int(raw_id.split(b"-", 1)[1]), type_, data)


def _fields(type_: EventType, data: Any) -> dict[Any, Any]:
    raw = data.encode("utf-8") if type_ is EventType.MESSAGE else orjson.dumps(data)
    return {"t": type_.value.encode(), "d": raw}


class RemoteStream:
    """A stream produced by another worker, read from Redis."""

    def __init__(
        self, log: RedisEventLog, stream_id: str, owner_id: str | None, last_id: int, closed: bool
    ) -> None:
        self.log = log
        self.stream_id = stream_id
        self.owner_id = owner_id
        self.last_id = last_id
        self.closed = closed
        self._reading: asyncio.Task[Any] | None = None
        self._interrupted: str | None = None

    def interrupt(self, message: str) -> None:
        self._interrupted = message
        if self._reading is not None:
            self._reading.cancel()

    async def read(self, after: int, timeout: float) -> list[StreamEvent]:  # noqa: ASYNC109
        if self._interrupted is None:
            self._interrupted = self.log.stopping
        if self._interrupted is not None:
            raise EventLogUnavailable(self._interrupted, code="shutdown")
        task = asyncio.current_task()
        self._reading = task
        self.log.readers.add(self)
        try:
            events = await self.log.read(self.stream_id, after, timeout)
        except asyncio.CancelledError:
            if self._interrupted is None or task is None:
                raise
            task.uncancel()
            raise EventLogUnavailable(self._interrupted, code="shutdown") from None
        finally:
            self._reading = None
            self.log.readers.discard(self)
        if not events and await self.log.finished(self.stream_id):
            # Ended (or expired) while nothing came after ``after``: whatever the producer
            # logged before marking it closed is in Redis now, so one last look without
            # waiting; a reader that was past the end then ends too, with no ping after done.
            events = await self.log.read(self.stream_id, after, 0)
            self.closed = True
        if events:
            self.last_id = max(self.last_id, events[-1].id)
            if events[-1].is_terminal:
                self.closed = True
        return events


class RedisEventLog:
    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "streamforge:",
        retention: float = 600.0,
        max_finished: int = 10_000,
        live_ttl: float = 6 * 3600.0,
        timeout: float = 5.0,
        worker_id: str = "",
    ) -> None:
        self.local = InProcessEventLog(retention, max_finished)
        self.client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=None)
        self.prefix = prefix
        self.retention = retention
        self.live_ttl = live_ttl
        self.timeout = timeout
        self.worker_id = worker_id
        self.channel = f"{prefix}control"
        self.on_signal: Callable[[Signal], None] | None = None
        self.readers: set[RemoteStream] = set()
        # Set at shutdown: every reader of another worker's stream ends, new ones at once.
        self.stopping: str | None = None
        self._pending: dict[str, StreamBuffer] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.error: str | None = None

    def _key(self, stream_id: str) -> str:
        return f"{self.prefix}s:{stream_id}"

    def _meta(self, stream_id: str) -> str:
        return f"{self.prefix}m:{stream_id}"

    # -- streams of this worker ------------------------------------------------------------

    def create(self, stream_id: str, owner_id: str | None = None) -> StreamBuffer:
        buffer = self.local.create(stream_id, owner_id)
        buffer.on_dirty = self._dirty
        return buffer

    def get(self, stream_id: str) -> StreamBuffer | None:
        return self.local.get(stream_id)

    def __len__(self) -> int:
        return len(self.local)

    def _dirty(self, buffer: StreamBuffer) -> None:
        self._pending[buffer.stream_id] = buffer
        self._wake.set()

    async def _flusher(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = []
                for stream_id in list(self._pending)[:_BATCH]:
                    buffer = self._pending.pop(stream_id)
                    buffer.dirty = False
                    batch.append(buffer)
                try:
                    async with asyncio.timeout(self.timeout):
                        await self._flush(batch)
                except (RedisError, OSError, TimeoutError) as exc:
                    if self.error is None:
                        logger.warning("Redis event log unavailable: %s", exc)
                    self.error = str(exc) or type(exc).__name__
                    for buffer in batch:
                        self._dirty(buffer)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    self._resend_all()
                    continue
                if self.error is not None:
                    logger.warning("Redis event log available again")
                    self.error = None
                backoff = 0.1

    def _resend_all(self) -> None:
        """Redis may have lost what it had: send every retained stream again from the start
        (entries it still has are refused, so nothing is duplicated)."""
        for buffer in self.local.streams():
            buffer.flushed = 0
            buffer.dirty = True
            self._dirty(buffer)

    async def _flush(self, batch: list[StreamBuffer]) -> None:
        pipe = self.client.pipeline(transaction=False)
        marks: list[tuple[StreamBuffer, int]] = []
        for buffer in batch:
            upto = buffer.last_id
            key, meta = self._key(buffer.stream_id), self._meta(buffer.stream_id)
            if buffer.flushed == 0:
                pipe.hset(meta, mapping={"owner": buffer.owner_id or "", "worker": self.worker_id})
            for event in buffer.events[buffer.flushed : upto]:
                pipe.xadd(key, _fields(event.type, event.data), id=entry_id(event.id))
            if buffer.closed and upto == buffer.last_id:
                pipe.hset(meta, "closed", "1")
                ttl = max(1, int(self.retention))
            else:
                ttl = int(self.live_ttl)
            pipe.expire(key, ttl)
            pipe.expire(meta, ttl)
            marks.append((buffer, upto))
        results = await pipe.execute(raise_on_error=False)
        for result in results:
            # An id at or below the stream's last entry: already there, as intended.
            if isinstance(result, ResponseError) and "equal or smaller" not in str(result):
                raise result
            if isinstance(result, Exception) and not isinstance(result, ResponseError):
                raise result
        for buffer, upto in marks:
            buffer.flushed = max(buffer.flushed, upto)
            if buffer.last_id > buffer.flushed and not buffer.dirty:
                buffer.dirty = True
                self._dirty(buffer)

    @contextlib.asynccontextmanager
    async def _call(self, timeout: float | None = None) -> AsyncIterator[None]:  # noqa: ASYNC109
        """One bounded exchange with Redis: past the timeout, or on any Redis error, the caller
        gets ``EventLogUnavailable`` with no address or library message (the log keeps them)."""
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                yield
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable(exc) from exc

    # -- streams of any worker -------------------------------------------------------------

    async def open(self, stream_id: str) -> StreamReader | None:
        buffer = self.local.get(stream_id)
        if buffer is not None:
            return buffer
        async with self._call():
            meta: dict[bytes, bytes] = await self.client.hgetall(  # type: ignore[assignment]
                self._meta(stream_id)
            )
            if not meta:
                return None
            last: Any = await self.client.xrevrange(self._key(stream_id), "+", "-", count=1)
        last_id = _event(last[0]).id if last else 0
        owner = meta.get(b"owner", b"").decode() or None
        return RemoteStream(self, stream_id, owner, last_id, meta.get(b"closed") == b"1")

    async def read(self, stream_id: str, after: int, timeout: float) -> list[StreamEvent]:  # noqa: ASYNC109
        """The entries after ``after``, waiting up to ``timeout`` for one (0: no wait)."""
        # Ids the router accepts fit a Redis entry id; larger ones would be a Redis error.
        after = min(max(after, 0), MAX_EVENT_ID)
        block = max(1, int(timeout * 1000)) if timeout > 0 else None
        async with self._call(timeout + self.timeout):
            reply: Any = await self.client.xread(
                {self._key(stream_id): entry_id(after)}, count=1000, block=block
            )
        if not reply:
            return []
        entries: Any = reply[0][1]
        return [_event(entry) for entry in entries]

    async def finished(self, stream_id: str) -> bool:
        """The stream has its ``done`` in Redis (its producer marks it closed in the same
        pipeline), or is gone (expired)."""
        async with self._call():
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(self._key(stream_id))
            pipe.hget(self._meta(stream_id), "closed")
            exists, closed = await pipe.execute()
        return not exists or closed == b"1"

    async def recover(self, stream_id: str) -> list[StreamEvent] | None:
        buffer = self.local.get(stream_id)
        if buffer is not None:
            return list(buffer.events)
        async with self._call():
            entries: Any = await self.client.xrange(self._key(stream_id), "-", "+")
        if not entries:
            return None
        return [_event(entry) for entry in entries]

    async def seal(self, stream_id: str, events: list[tuple[EventType, Any]]) -> None:
        if self.local.get(stream_id) is not None:
            await self.local.seal(stream_id, events)
            return
        key, meta = self._key(stream_id), self._meta(stream_id)
        async with asyncio.timeout(self.timeout):
            last: Any = await self.client.xrevrange(key, "+", "-", count=1)
            if last and _event(last[0]).is_terminal:
                return
            next_id = (_event(last[0]).id if last else 0) + 1
            pipe = self.client.pipeline(transaction=False)
            for offset, (type_, data) in enumerate(events):
                pipe.xadd(key, _fields(type_, data), id=entry_id(next_id + offset))
            pipe.hset(meta, "closed", "1")
            pipe.expire(key, max(1, int(self.retention)))
            pipe.expire(meta, max(1, int(self.retention)))
            await pipe.execute(raise_on_error=False)

    # -- control signals -------------------------------------------------------------------

    async def signal(self, signal: Signal) -> None:
        async with self._call():
            await self.client.publish(self.channel, orjson.dumps(signal))

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") != "message" or self.on_signal is None:
                        continue
                    try:
                        self.on_signal(orjson.loads(message["data"]))
                    except Exception:
                        logger.exception("bad control signal %r", message.get("data"))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                logger.debug("control channel lost: %s", exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def interrupt_readers(self, message: str) -> None:
        self.stopping = message
        for reader in list(self.readers):
            reader.interrupt(message)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, on_signal: Callable[[Signal], None] | None = None) -> None:
        self.on_signal = on_signal
        await self.local.start()
        self._tasks = [
            asyncio.create_task(self._flusher(), name="redis-event-log-flusher"),
            asyncio.create_task(self._listen(), name="redis-event-log-control"),
        ]

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until every event logged so far is in Redis (or ``timeout`` passes)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._pending or any(b.flushed < b.last_id for b in self.local.streams()):
                    if self.error is not None:
                        return
                    await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        await self.drain(self.timeout)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.local.aclose()
        await self.client.aclose()

    async def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {"backend": self.backend, "streams": len(self.local)}
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("Redis event log health check failed: %s: %s", type(exc).__name__, exc)
            return {**report, "status": "error", "error": "Redis is unreachable"}
        return {**report, "status": "ok"}
