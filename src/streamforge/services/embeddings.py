"""Embedding on the request path: batched, off the event loop, one CPU job at a time.

Local embedders (sentence-transformers, simulated) run in a worker thread, a batch at a time,
behind a lock: two batches at once on a small machine only make both slower, and between
batches other work (a query embedding) gets its turn. Remote embedders use their own async
clients.

Documents are embedded across documents, not one by one: every ``embed_documents`` call
puts its texts in one queue, and a single task takes what is queued (up to ``window``
texts, oldest callers first), sorts it by length and embeds it in batches of
``batch_size``. A batch is padded to its longest text, so batches of texts of like length
waste little; and many small documents fill a batch that one of them alone would not.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from streamforge.chains.embeddings import (
    EmbeddingModel,
    SentenceTransformerEmbeddings,
    aclose_embeddings,
)
from streamforge.chains.providers.base import approximate_tokens
from streamforge.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], Awaitable[None]]


@dataclass(eq=False, slots=True)
class _Job:
    """One caller's texts in the queue."""

    texts: list[str]
    vectors: list[list[float] | None]
    future: asyncio.Future[list[list[float]]]
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    taken: int = 0  # texts handed to a batch so far
    done: int = 0  # texts embedded so far


class EmbeddingService:
    def __init__(self, model: EmbeddingModel, *, batch_size: int = 32, window: int = 512) -> None:
        self.model = model
        self.batch_size = batch_size
        self.window = max(window, batch_size)
        self._lock = asyncio.Lock()
        self._warmup: asyncio.Task[None] | None = None
        self._jobs: deque[_Job] = deque()
        self._runner: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def dimensions(self) -> int:
        return self.model.dimensions

    def count_tokens(self, texts: Sequence[str]) -> int:
        """The usage reported for embedding ``texts`` (approximate; never enforced)."""
        return sum(max(1, approximate_tokens(text)) for text in texts)

    def warm_up(self) -> None:
        """Load a local model in the background, so the first search does not wait for it."""
        embeddings = self.model.embeddings
        if isinstance(embeddings, SentenceTransformerEmbeddings) and self._warmup is None:
            self._warmup = asyncio.create_task(self._load(embeddings))

    async def _load(self, embeddings: SentenceTransformerEmbeddings) -> None:
        try:
            async with self._lock:
                await asyncio.to_thread(embeddings.load)
        except Exception:
            logger.exception("loading the embedding model failed")

    async def aclose(self) -> None:
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._warmup is not None and not self._warmup.done():
            self._warmup.cancel()
            await asyncio.gather(self._warmup, return_exceptions=True)
        await aclose_embeddings(self.model.embeddings)

    def _prepare(self, texts: Sequence[str]) -> list[str]:
        limit = self.model.max_chars
        return [text[:limit] if len(text) > limit else text for text in texts]

    async def embed_documents(
        self, texts: Sequence[str], progress: Progress | None = None
    ) -> list[list[float]]:
        prepared = self._prepare(texts)
        if not prepared:
            return []
        if not self.model.in_process:
            vectors: list[list[float]] = []
            for start in range(0, len(prepared), self.batch_size):
                vectors.extend(await self._run(prepared[start : start + self.batch_size]))
                if progress is not None:
                    await progress(len(vectors), len(prepared))
            return vectors
        job = _Job(prepared, [None] * len(prepared), asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain(), name="embedding-queue")
        try:
            while not job.future.done():
                await job.changed.wait()
                job.changed.clear()
                if progress is not None and not job.future.done():
                    await progress(job.done, len(prepared))
            return job.future.result()
        finally:
            if not job.future.done():  # the caller was cancelled: its texts need no vectors
                job.future.cancel()

    async def _drain(self) -> None:
        """Embed what is queued, a window at a time, until the queue is empty."""
        while self._jobs:
            items: list[tuple[_Job, int]] = []
            for job in list(self._jobs):
                if job.future.done():
                    self._jobs.remove(job)
                    continue
                count = min(len(job.texts) - job.taken, self.window - len(items))
                items.extend((job, index) for index in range(job.taken, job.taken + count))
                job.taken += count
                if job.taken == len(job.texts):
                    self._jobs.remove(job)
                if len(items) >= self.window:
                    break
            items.sort(key=lambda item: len(item[0].texts[item[1]]))
            for start in range(0, len(items), self.batch_size):
                batch = [
                    item
                    for item in items[start : start + self.batch_size]
                    if not item[0].future.done()
                ]
                if not batch:
                    continue
                try:
                    vectors = await self._run([job.texts[index] for job, index in batch])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    for job in {job for job, _ in batch}:
                        if not job.future.done():
                            job.future.set_exception(exc)
                        job.changed.set()
                    continue
                for (job, index), vector in zip(batch, vectors, strict=True):
                    job.vectors[index] = vector
                    job.done += 1
                for job in {job for job, _ in batch}:
                    if job.done == len(job.texts) and not job.future.done():
                        job.future.set_result([v for v in job.vectors if v is not None])
                    job.changed.set()

    async def embed_query(self, text: str) -> list[float]:
        return (await self._run(self._prepare([text])))[0]

    async def _run(self, batch: list[str]) -> list[list[float]]:
        embeddings = self.model.embeddings
        try:
            if self.model.in_process:
                async with self._lock:
                    return await asyncio.to_thread(embeddings.embed_documents, batch)
            return await embeddings.aembed_documents(batch)
        except (asyncio.CancelledError, ServiceUnavailable):
            raise
        except Exception as exc:
            logger.exception("embedding failed")
            raise ServiceUnavailable(f"the embedding model failed: {exc}") from exc
