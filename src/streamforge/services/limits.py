"""Limits per API key: requests per minute, streams at once, tokens per day.

``InProcessLimiter`` keeps the counts in this process. ``RedisLimiter`` keeps them in Redis,
each check one atomic step (a Lua script), so that several workers share one limit: ten
requests a minute means ten, whichever workers they reach. Requests are counted over an exact
sliding minute; streams are members of a set while they generate; tokens add up per UTC day.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamforge.errors import TooManyRequests

# KEYS[1]: the key's set; ARGV: now (ms), window (ms), limit, a unique member.
# Returns 0 when the request is admitted, else the milliseconds until one would be.
_SLIDING_WINDOW = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('PEXPIRE', key, window)
  return 0
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


# KEYS[1]: the set of running streams; ARGV: now (ms), stale after (ms), limit, member.
_ACQUIRE = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - tonumber(ARGV[2]))
if redis.call('ZCARD', key) < tonumber(ARGV[3]) then
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('PEXPIRE', key, ARGV[2])
  return 1
end
return 0
"""

# A stream slot not released after this long (its worker died) no longer counts.
STALE_SLOT = 6 * 3600.0
DAY = 86_400


class Limiter(Protocol):
    async def hit(self, bucket: str, limit: int, window: float) -> float | None:
        """Count a request; None when it is within ``limit`` per ``window`` seconds, else
        the seconds until it would be."""
        ...

    async def acquire(self, bucket: str, member: str, limit: int) -> bool:
        """Add ``member`` to the bucket's set if it has fewer than ``limit``."""
        ...

    async def release(self, bucket: str, member: str) -> None: ...

    async def add(self, bucket: str, amount: int, ttl: float) -> int:
        """Add to a counter that lives ``ttl`` seconds; its new value."""
        ...

    async def count(self, bucket: str) -> int: ...

    async def aclose(self) -> None: ...


class InProcessLimiter:
    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._sets: dict[str, set[str]] = {}
        self._counters: dict[str, tuple[float, int]] = {}

    async def acquire(self, bucket: str, member: str, limit: int) -> bool:
        members = self._sets.setdefault(bucket, set())
        if len(members) >= limit:
            return False
        members.add(member)
        return True

    async def release(self, bucket: str, member: str) -> None:
        members = self._sets.get(bucket)
        if members is not None:
            members.discard(member)
            if not members:
                del self._sets[bucket]

    async def add(self, bucket: str, amount: int, ttl: float) -> int:
        now = time.monotonic()
        expires, value = self._counters.get(bucket, (now + ttl, 0))
        if expires <= now:
            expires, value = now + ttl, 0
        self._counters[bucket] = (expires, value + amount)
        return value + amount

    async def count(self, bucket: str) -> int:
        expires, value = self._counters.get(bucket, (0.0, 0))
        return value if expires > time.monotonic() else 0

    async def hit(self, bucket: str, limit: int, window: float) -> float | None:
        now = time.monotonic()
        hits = self._hits.setdefault(bucket, deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) < limit:
            hits.append(now)
            return None
        return max(0.001, hits[0] + window - now)

    async def aclose(self) -> None:
        self._hits.clear()


class RedisLimiter:
    def __init__(self, url: str, *, prefix: str = "streamforge:", timeout: float = 5.0) -> None:
        self.client = Redis.from_url(url, socket_connect_timeout=timeout)
        self.prefix = prefix
        self.timeout = timeout
        self._script = self.client.register_script(_SLIDING_WINDOW)
        self._acquire = self.client.register_script(_ACQUIRE)
        # Used while Redis cannot be reached: limits still hold per worker.
        self.fallback = InProcessLimiter()

    async def hit(self, bucket: str, limit: int, window: float) -> float | None:
        now_ms = int(time.time() * 1000)
        try:
            async with asyncio.timeout(self.timeout):
                wait_ms = await self._script(
                    keys=[f"{self.prefix}rl:{bucket}"],
                    args=[now_ms, int(window * 1000), limit, f"{now_ms}-{uuid.uuid4().hex}"],
                )
        except (RedisError, OSError, TimeoutError):
            return await self.fallback.hit(bucket, limit, window)
        return None if int(wait_ms) == 0 else int(wait_ms) / 1000

    async def acquire(self, bucket: str, member: str, limit: int) -> bool:
        now_ms = int(time.time() * 1000)
        try:
            async with asyncio.timeout(self.timeout):
                admitted = await self._acquire(
                    keys=[f"{self.prefix}rl:{bucket}"],
                    args=[now_ms, int(STALE_SLOT * 1000), limit, member],
                )
        except (RedisError, OSError, TimeoutError):
            return await self.fallback.acquire(bucket, member, limit)
        return int(admitted) == 1

    async def release(self, bucket: str, member: str) -> None:
        await self.fallback.release(bucket, member)
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.zrem(f"{self.prefix}rl:{bucket}", member)
        except (RedisError, OSError, TimeoutError):
            pass  # the slot goes stale and stops counting

    async def add(self, bucket: str, amount: int, ttl: float) -> int:
        key = f"{self.prefix}rl:{bucket}"
        try:
            async with asyncio.timeout(self.timeout):
                pipe = self.client.pipeline(transaction=True)
                pipe.incrby(key, amount)
                pipe.expire(key, int(ttl), nx=True)
                value, _ = await pipe.execute()
        except (RedisError, OSError, TimeoutError):
            return await self.fallback.add(bucket, amount, ttl)
        return int(value)

    async def count(self, bucket: str) -> int:
        try:
            async with asyncio.timeout(self.timeout):
                value = await self.client.get(f"{self.prefix}rl:{bucket}")
        except (RedisError, OSError, TimeoutError):
            return await self.fallback.count(bucket)
        return int(value or 0)

    async def aclose(self) -> None:
        await self.client.aclose()


class Slot:
    """A stream admitted under its key's limits; ``finish`` gives the slot back and counts
    the tokens the stream used (``tokens``, set when its stream has ended)."""

    def __init__(self, quotas: Quotas, who: str, member: str | None) -> None:
        self.quotas = quotas
        self.who = who
        self.member = member
        self.tokens = 0
        self.done = False

    async def finish(self) -> None:
        if self.done:
            return
        self.done = True
        await self.quotas.finish(self, self.tokens)


class Quotas:
    def __init__(self, limiter: Limiter, *, concurrent_streams: int, tokens_per_day: int) -> None:
        self.limiter = limiter
        self.concurrent_streams = concurrent_streams
        self.tokens_per_day = tokens_per_day

    async def admit(self, who: str) -> Slot:
        """A slot for a new stream of ``who`` (a key), or 429 when a limit says no."""
        if self.tokens_per_day:
            day = int(time.time()) // DAY
            used = await self.limiter.count(f"tpd:{who}:{day}")
            if used >= self.tokens_per_day:
                wait = (day + 1) * DAY - int(time.time())
                raise TooManyRequests(
                    f"this key used its {self.tokens_per_day} tokens for today (UTC)",
                    headers={"Retry-After": str(max(1, wait))},
                )
        member = None
        if self.concurrent_streams:
            member = uuid.uuid4().hex
            if not await self.limiter.acquire(f"cs:{who}", member, self.concurrent_streams):
                raise TooManyRequests(
                    f"this key already has {self.concurrent_streams} streams running",
                    headers={"Retry-After": "1"},
                )
        return Slot(self, who, member)

    async def finish(self, slot: Slot, tokens: int) -> None:
        if slot.member is not None:
            await self.limiter.release(f"cs:{slot.who}", slot.member)
        if self.tokens_per_day and tokens > 0:
            day = int(time.time()) // DAY
            await self.limiter.add(f"tpd:{slot.who}:{day}", tokens, 2 * DAY)
