"""One way for tests to wait for something that happens in the background: ask again, a
little later, until it is so or the time is up (then fail, showing the last answer)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _failure(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"{what} did not happen within {timeout:g} s; last answer: {last!r}")


async def eventually(
    probe: Callable[[], Awaitable[T] | T],
    *,
    until: Callable[[T], object] = bool,
    timeout: float = 10.0,  # noqa: ASYNC109 - a deadline for many probes, not one call
    interval: float = 0.05,
    retry_on: tuple[type[BaseException], ...] = (),
    what: str = "the awaited condition",
) -> T:
    """Call ``probe`` (sync or async) every ``interval`` seconds until ``until(answer)`` is
    true, and return that answer. Exceptions in ``retry_on`` count as "not yet"."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            answer = probe()
            if inspect.isawaitable(answer):
                answer = await answer
        except retry_on as exc:
            last = exc
        else:
            if until(answer):  # type: ignore[arg-type]
                return answer  # type: ignore[return-value]
            last = answer
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, last)
        await asyncio.sleep(interval)


def eventually_sync(
    probe: Callable[[], T],
    *,
    until: Callable[[T], object] = bool,
    timeout: float = 10.0,
    interval: float = 0.05,
    retry_on: tuple[type[BaseException], ...] = (),
    what: str = "the awaited condition",
) -> T:
    """``eventually`` for code without an event loop: it blocks between probes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            answer = probe()
        except retry_on as exc:
            last = exc
        else:
            if until(answer):
                return answer
            last = answer
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, last)
        time.sleep(interval)
