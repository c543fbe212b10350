"""The RAG layer: retrieved chunks as a LangChain retriever, and as numbered prompt context.

The chat chain itself does not change: grounding extends the system prompt with the passages,
each behind a marker ``[n]`` that matches the ``index`` of the ``sources`` event, and asks the
model to cite by those markers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict


class Passage(Protocol):
    """A retrieved chunk, as ``services.retrieval.RetrievedChunk`` has it."""

    @property
    def chunk_id(self) -> int: ...
    @property
    def document_id(self) -> str: ...
    @property
    def document_name(self) -> str: ...
    @property
    def collection_id(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def page(self) -> int | None: ...


class Found(Protocol):
    @property
    def chunks(self) -> Sequence[Passage]: ...


@runtime_checkable
class Searcher(Protocol):
    """What the retriever searches with: ``services.retrieval.RetrievalService`` (this layer
    sits below the services, so it names only what it calls)."""

    async def search(
        self, owner_id: str, query: str, *, collections: Sequence[str] | None, top_k: int
    ) -> Found: ...


GROUNDING = (
    "Answer using the numbered passages below when they are relevant, and cite them by "
    "their markers, like [1]. If they do not contain the answer, say so."
)


def grounded_prompt(system: str, chunks: Sequence[Passage]) -> str:
    if not chunks:
        return system
    passages = "\n\n".join(
        f"[{index}] ({chunk.document_name})\n{chunk.text}"
        for index, chunk in enumerate(chunks, start=1)
    )
    return f"{system}\n\n{GROUNDING}\n\n{passages}".strip()


def to_document(chunk: Passage) -> Document:
    return Document(
        page_content=chunk.text,
        metadata={
            "document_id": chunk.document_id,
            "document_name": chunk.document_name,
            "collection_id": chunk.collection_id,
            "chunk_id": chunk.chunk_id,
            "score": chunk.score,
            "start": chunk.start,
            "end": chunk.end,
            "page": chunk.page,
        },
    )


class StreamForgeRetriever(BaseRetriever):
    """Hybrid retrieval over an owner's collections, usable in any LangChain chain."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    service: Searcher
    owner_id: str
    collections: list[str] | None = None
    top_k: int = 4

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        raise NotImplementedError("StreamForgeRetriever is async only: use ainvoke")

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **_: Any
    ) -> list[Document]:
        # Hybrid search, the service's default.
        result = await self.service.search(
            self.owner_id, query, collections=self.collections, top_k=self.top_k
        )
        return [to_document(chunk) for chunk in result.chunks]
