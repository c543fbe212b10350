from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamforge.schemas.common import StorableText, Timestamp
from streamforge.schemas.templates import NAME_PATTERN

CollectionName = Annotated[StorableText, Field(min_length=1, max_length=100, pattern=NAME_PATTERN)]
# A collection named, or given by id, in a request body.
CollectionRef = Annotated[StorableText, Field(min_length=1, max_length=100)]


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "docs"}]})
    name: CollectionName
    description: Annotated[StorableText, Field(max_length=1000)] | None = None


class CollectionPublic(BaseModel):
    id: str
    name: str
    description: str | None
    embedding_model: str | None
    dimensions: int | None
    document_count: int
    created_at: Timestamp


class DocumentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    collection_id: str
    name: str
    media_type: str | None
    size: int
    content_hash: str
    status: Literal["queued", "processing", "ready", "failed"]
    error: str | None = Field(description="Why ingestion failed, in plain words.")
    progress: float = Field(description="0 to 1.")
    chunk_count: int
    pages: int | None
    created_at: Timestamp
    updated_at: Timestamp
    ingested_at: Timestamp | None


class ChunkPublic(BaseModel):
    ordinal: int
    start: int
    end: int
    page: int | None = Field(description="Page where the chunk begins; null without pages.")
    text: str


class DocumentText(BaseModel):
    id: str
    name: str
    media_type: str | None
    text: str
    page_starts: list[int] | None = Field(
        description="Where each page begins in `text` (PDF); null for formats without pages."
    )
    chunks: list[ChunkPublic]


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"query": "How do I reset the router?", "top_k": 5}]},
    )
    query: Annotated[StorableText, Field(min_length=1, max_length=4000)]
    collections: Annotated[list[CollectionRef], Field(max_length=50)] | None = Field(
        default=None, description="Names or ids; all of yours when omitted."
    )
    top_k: Annotated[int, Field(ge=1, le=100)] = 10
    mode: Literal["hybrid", "vector", "text"] = "hybrid"
    per_document: Annotated[int, Field(ge=1, le=100)] | None = Field(
        default=None,
        description="At most this many chunks of any one document; 1 ranks documents, "
        "each by its best chunk.",
    )


class SearchHit(BaseModel):
    rank: int
    score: float
    document_id: str
    document_name: str
    collection_id: str
    chunk_id: int
    start: int
    end: int
    page: int | None = Field(
        description="Page of the document where the chunk begins (PDF); null without pages."
    )
    text: str


class SearchResponse(BaseModel):
    query: str
    mode: str
    results: list[SearchHit]
    timings: dict[str, float]
    warnings: list[str] = Field(
        default_factory=list, description="What went wrong without failing the search."
    )


class RagOptions(BaseModel):
    """Retrieval for a chat turn: which collections and how many chunks."""

    model_config = ConfigDict(extra="forbid")
    collections: Annotated[list[CollectionRef], Field(max_length=50)] | None = Field(
        default=None, description="Names or ids; all of yours when omitted."
    )
    top_k: Annotated[int, Field(ge=1, le=50)] | None = None


# ``rag`` on a chat request: options, a list of collection names, true (all collections) or
# false (no retrieval).
RagField = RagOptions | list[CollectionRef] | bool | None


def rag_options(value: RagField) -> RagOptions | None:
    if value is None or value is False:
        return None
    if value is True:
        return RagOptions()
    if isinstance(value, list):
        return RagOptions(collections=value)
    return value
