"""Embedding on the request path: batched, off the event loop, one CPU job at a time.

Local embedders (sentence-transformers, simulated) run in a worker thread, a batch at a time,
behind a lock: two batches at once on a small machine only make both slower, and between
batches other work (a query embedding, another upload) gets its turn. Remote embedders use
their own async clients.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from streamforge.chains.embeddings import (
    EmbeddingModel,
    SentenceTransformerEmbeddings,
    aclose_embeddings,
)
from streamforge.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], Awaitable[None]]


class EmbeddingService:
    def __init__(self, model: EmbeddingModel, *, batch_size: int = 32) -> None:
        self.model = model
        self.batch_size = batch_size
        self._lock = asyncio.Lock()
        self._warmup: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def dimensions(self) -> int:
        return self.model.dimensions

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
        vectors: list[list[float]] = []
        prepared = self._prepare(texts)
        for start in range(0, len(prepared), self.batch_size):
            batch = prepared[start : start + self.batch_size]
            vectors.extend(await self._run(batch))
            if progress is not None:
                await progress(len(vectors), len(prepared))
        return vectors

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
