"""Reranking: a second opinion on the fused candidates, from a model that reads query and
passage together.

Off unless configured (no reranking model ships in a package). Two kinds:

- ``cross_encoder``: a sentence-transformers ``CrossEncoder`` from a local model directory,
  run in a worker thread;
- ``http``: a rerank endpoint. Cohere's ``POST /v1/rerank`` (or ``/v2/rerank``) and the same
  shape that LiteLLM's proxy, llama.cpp's server (``/v1/rerank``), vLLM and Jina serve:
  ``{"model", "query", "documents": [text, ...], "top_n"}`` in, ``{"results": [{"index",
  "relevance_score"}, ...]}`` out (``data`` for ``results`` and ``score`` for
  ``relevance_score`` are read too).

A reranker answers one score per passage; ``RetrievalService`` reorders by it. When a
reranker fails (refused, unreachable, slow, an answer that does not fit), retrieval keeps
the fused order and logs a warning: reranking improves an answer, it never breaks one.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from streamforge.config.settings import RerankSettings
from streamforge.errors import ConfigurationError

logger = logging.getLogger(__name__)


class RerankFailed(Exception):
    """The reranker gave no usable answer; the reason is the message."""


class Reranker(abc.ABC):
    name: str

    @abc.abstractmethod
    async def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        """One relevance score per passage, in the passages' order (higher is better)."""

    async def aclose(self) -> None:  # noqa: B027 - most rerankers hold nothing
        """Release clients."""


class CrossEncoderReranker(Reranker):
    def __init__(self, path: Path, *, threads: int = 2) -> None:
        self.path = path
        self.name = path.name
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def _predict(self, query: str, passages: Sequence[str]) -> list[float]:
        with self._lock:
            if self._model is None:
                import torch
                from sentence_transformers import CrossEncoder

                torch.set_num_threads(self.threads)
                self._model = CrossEncoder(str(self.path), device="cpu", local_files_only=True)
            scores = self._model.predict([(query, passage) for passage in passages])
        return [float(score) for score in scores]

    async def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        return await asyncio.to_thread(self._predict, query, passages)


class HttpReranker(Reranker):
    def __init__(self, url: str, *, model: str | None, api_key: str | None, timeout: float):
        self.url = url
        self.name = model or url
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(timeout=timeout, headers=headers)

    async def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        body: dict[str, Any] = {
            "query": query,
            "documents": list(passages),
            "top_n": len(passages),
        }
        if self.model:
            body["model"] = self.model
        try:
            response = await self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise RerankFailed(f"{type(exc).__name__} from {self.url}") from exc
        if response.status_code != 200:
            raise RerankFailed(f"{self.url} answered {response.status_code}")
        try:
            return parse_scores(response.json(), len(passages))
        except ValueError as exc:
            raise RerankFailed(f"{self.url} answered something unexpected: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()


def parse_scores(payload: Any, count: int) -> list[float]:
    """Scores in passage order from a Cohere-shaped answer; passages the answer leaves out
    (a ``top_n`` the server applied) rank after every scored one."""
    results = payload.get("results", payload.get("data")) if isinstance(payload, dict) else None
    if not isinstance(results, list):
        raise ValueError("no results list")
    scores = [-math.inf] * count
    for item in results:
        if not isinstance(item, dict):
            raise ValueError("a result is not an object")
        index, score = item.get("index"), item.get("relevance_score", item.get("score"))
        if not isinstance(index, int) or not 0 <= index < count:
            raise ValueError(f"result index {index!r} out of range")
        if not isinstance(score, int | float) or isinstance(score, bool) or math.isnan(score):
            raise ValueError(f"result score {score!r} is not a number")
        scores[index] = float(score)
    return scores


def build_reranker(settings: RerankSettings) -> Reranker | None:
    if settings.provider == "none":
        return None
    if settings.provider == "cross_encoder":
        if not settings.model:
            raise ConfigurationError("the cross_encoder reranker needs a model directory")
        path = Path(settings.model).expanduser()
        if not (path / "config.json").exists():
            raise ConfigurationError(f"no cross-encoder model in {path}")
        return CrossEncoderReranker(path)
    if not settings.url:
        raise ConfigurationError("the http reranker needs a url (its rerank endpoint)")
    return HttpReranker(
        settings.url, model=settings.model, api_key=settings.api_key, timeout=settings.timeout
    )
