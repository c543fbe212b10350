from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import AfterValidator, BaseModel

from streamforge.services import pages

T = TypeVar("T")


def _storable(value: str) -> str:
    # PostgreSQL rejects NUL in text and no database stores a lone surrogate: refuse both here
    # so such input is a 422, never a failed write halfway through a request.
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


StorableText = Annotated[str, AfterValidator(_storable)]


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored in UTC) and PostgreSQL ones in the session's
    # time zone: every response says UTC, written RFC 3339 style with "Z".
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


Timestamp = Annotated[datetime, AfterValidator(_utc)]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: object | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


def page_of(page: pages.Page[Any], public: Callable[[Any], T]) -> Page[T]:
    """A service's page, each item mapped by ``public``."""
    return Page(
        items=[public(item) for item in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )


LimitQuery = Annotated[int, Query(ge=1, le=100, description="Items per page.")]
OffsetQuery = Annotated[int, Query(ge=0, le=1_000_000_000, description="Items to skip.")]
