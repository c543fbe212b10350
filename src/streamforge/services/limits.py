"""Request rate limits per API key, exact over a sliding window.

``InProcessLimiter`` keeps each key's recent request times in this process. ``RedisLimiter``
keeps them in a Redis sorted set updated by one Lua script (trim, count, add, in one atomic
step), so that several workers share one limit: ten requests a minute means ten, whichever
workers they reach.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

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


class Limiter(Protocol):
    async def hit(self, bucket: str, limit: int, window: float) -> float | None:
        """Count a request; None when it is within ``limit`` per ``window`` seconds, else
        the seconds until it would be."""
        ...

    async def aclose(self) -> None: ...


class InProcessLimiter:
    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}

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

    async def aclose(self) -> None:
        await self.client.aclose()
