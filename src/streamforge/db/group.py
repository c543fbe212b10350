"""Group commit: many small writes that arrive together go to the database as one.

Callers ``submit`` an item and wait; one task takes everything submitted so far (up to
``max_items``), hands the list to ``write`` (one transaction), and answers each caller with
its own result once the transaction has committed, so a caller that returns knows its item
is durable. Items submitted while a batch is being written wait for the next one: under
load batches grow by themselves, and alone an item is written at once.

When a batch fails, its items are written again one at a time, so one bad item fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(
        self, write: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_items: int = 256
    ) -> None:
        self._write = write
        self.max_items = max_items
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="group-commit")
        # A caller cancelled after its batch started writing does not stop the batch.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._queue:
            batch = [entry for entry in self._queue[: self.max_items] if not entry[1].done()]
            del self._queue[: self.max_items]
            if not batch:
                continue
            try:
                results = await self._write([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                for item, future in batch:
                    try:
                        (result,) = await self._write([item])
                    except asyncio.CancelledError:
                        future.cancel()
                        raise
                    except Exception as single:
                        _settle(future, single)
                    else:
                        _settle(future, result)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                _settle(future, result)

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()


def _settle(future: asyncio.Future[R], outcome: R | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
