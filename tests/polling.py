"""The one way tests wait for something that happens in the background."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(
    check: Callable[[], bool | Awaitable[bool]],
    *,
    within: float = 2.0,
    every: float = 0.02,
) -> bool:
    """Call ``check`` until it is true or ``within`` seconds have passed; whether it was.

    The caller asserts what it waited for afterwards, so a failure names the state itself."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every)


async def poll(
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    within: float = 5.0,
    every: float = 0.05,
) -> T:
    """Fetch until ``done`` says the value is final or ``within`` seconds have passed; the
    last value fetched."""
    deadline = time.monotonic() + within
    while True:
        value = await fetch()
        if done(value) or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(every)
