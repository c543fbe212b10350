"""Data access for prompt template versions. Every query is filtered by owner.

A template is live while its rows have no ``deleted_at``; deleting one marks every version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from streamforge.models import PromptTemplate
from streamforge.models.base import utcnow


def _live(owner_id: str, name: str | None = None) -> list[ColumnElement[bool]]:
    condition = [PromptTemplate.owner_id == owner_id, PromptTemplate.deleted_at.is_(None)]
    if name is not None:
        condition.append(PromptTemplate.name == name)
    return condition


async def get_latest(db: AsyncSession, owner_id: str, name: str) -> PromptTemplate | None:
    result = await db.execute(
        select(PromptTemplate)
        .where(*_live(owner_id, name))
        .order_by(PromptTemplate.version.desc())
        .limit(1)
    )
    return result.scalar_one_or_none()


async def get_version(
    db: AsyncSession, owner_id: str, name: str, version: int
) -> PromptTemplate | None:
    result = await db.execute(
        select(PromptTemplate).where(*_live(owner_id, name), PromptTemplate.version == version)
    )
    return result.scalar_one_or_none()


async def get_by_id(db: AsyncSession, owner_id: str, template_id: str) -> PromptTemplate | None:
    """One version by id, deleted or not: sessions that used it keep rendering it."""
    result = await db.execute(
        select(PromptTemplate).where(
            PromptTemplate.id == template_id, PromptTemplate.owner_id == owner_id
        )
    )
    return result.scalar_one_or_none()


async def list_versions(
    db: AsyncSession, owner_id: str, name: str, *, limit: int, offset: int
) -> tuple[Sequence[PromptTemplate], int]:
    condition = _live(owner_id, name)
    total = await db.scalar(select(func.count()).select_from(PromptTemplate).where(*condition))
    result = await db.execute(
        select(PromptTemplate)
        .where(*condition)
        .order_by(PromptTemplate.version)
        .limit(limit)
        .offset(offset)
    )
    return result.scalars().all(), int(total or 0)


async def list_latest(
    db: AsyncSession, owner_id: str, *, limit: int, offset: int
) -> tuple[Sequence[PromptTemplate], int]:
    """The newest live version of each template, by name."""
    latest = (
        select(PromptTemplate.name, func.max(PromptTemplate.version).label("version"))
        .where(*_live(owner_id))
        .group_by(PromptTemplate.name)
        .subquery()
    )
    total = await db.scalar(select(func.count()).select_from(latest))
    name_order: ColumnElement[str] | InstrumentedAttribute[str] = PromptTemplate.name
    if db.get_bind().dialect.name == "postgresql":
        # The database's locale collation ignores punctuation and case; byte order is what
        # SQLite uses, so both backends list the same names in the same order.
        name_order = PromptTemplate.name.collate("C")
    result = await db.execute(
        select(PromptTemplate)
        .join(
            latest,
            and_(PromptTemplate.name == latest.c.name, PromptTemplate.version == latest.c.version),
        )
        .where(PromptTemplate.owner_id == owner_id)
        .order_by(name_order)
        .limit(limit)
        .offset(offset)
    )
    return result.scalars().all(), int(total or 0)


async def name_state(db: AsyncSession, owner_id: str, name: str) -> tuple[int, bool]:
    """The highest version ever stored under a name, deleted ones included (0 if none), and
    whether the name has a live template.

    One statement reads both, so a template created concurrently is either seen live or
    collides with the version this caller is about to insert.
    """
    is_live = case((PromptTemplate.deleted_at.is_(None), 1), else_=0)
    result = await db.execute(
        select(func.max(PromptTemplate.version), func.max(is_live)).where(
            PromptTemplate.owner_id == owner_id, PromptTemplate.name == name
        )
    )
    highest, live = result.one()
    return int(highest or 0), bool(live)


async def add_version(db: AsyncSession, **fields: Any) -> PromptTemplate:
    template = PromptTemplate(**fields)
    db.add(template)
    await db.flush()
    return template


async def soft_delete(db: AsyncSession, owner_id: str, name: str) -> int:
    """Mark every live version deleted; the number of versions marked."""
    now = utcnow()
    result = await db.execute(
        update(PromptTemplate).where(*_live(owner_id, name)).values(deleted_at=now, updated_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)
