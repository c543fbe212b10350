"""Data access for users and API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from streamforge.models import ApiKey, Role, User


async def add_user(db: AsyncSession, name: str, role: Role) -> User:
    user = User(name=name, role=role.value)
    db.add(user)
    await db.flush()
    return user


async def find_user(db: AsyncSession, name_or_id: str) -> User | None:
    result = await db.execute(
        select(User).where((User.name == name_or_id) | (User.id == name_or_id))
    )
    return result.scalar_one_or_none()


async def list_users(db: AsyncSession) -> Sequence[User]:
    return (await db.execute(select(User).order_by(User.created_at))).scalars().all()


async def add_key(
    db: AsyncSession, user_id: str, name: str | None, prefix: str, digest: str
) -> ApiKey:
    row = ApiKey(user_id=user_id, name=name, prefix=prefix, hash=digest)
    db.add(row)
    await db.flush()
    return row


async def list_keys(db: AsyncSession, user_id: str | None = None) -> list[tuple[ApiKey, str]]:
    """Keys, oldest first, each with its user's name."""
    query = select(ApiKey, User.name).join(User, User.id == ApiKey.user_id)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    rows = (await db.execute(query.order_by(ApiKey.created_at))).all()
    return [(key, name) for key, name in rows]


async def get_key(db: AsyncSession, key_id: str) -> ApiKey | None:
    return await db.get(ApiKey, key_id)


async def get_user(db: AsyncSession, user_id: str) -> User | None:
    return await db.get(User, user_id)


async def key_owner(db: AsyncSession, digest: str) -> tuple[str, datetime | None, str, str] | None:
    """(key id, revoked at, user id, role) of the key with this hash."""
    row = (
        await db.execute(
            select(ApiKey.id, ApiKey.revoked_at, User.id, User.role)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.hash == digest)
        )
    ).first()
    return None if row is None else (row[0], row[1], row[2], row[3])


async def mark_used(db: AsyncSession, key_id: str, when: datetime) -> None:
    await db.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))
