"""Users and API keys: create, list, revoke, and the lookup every request makes.

A key is ``sf_`` and 43 characters of URL-safe base64 (256 random bits). It is shown once,
when created; the database keeps its SHA-256 hash and its first characters. A lookup hashes
the presented key and finds the user; results are cached for a few seconds per worker, so a
revoked key stops working within ``cache_seconds`` everywhere (at once on the worker that
revoked it).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from streamforge.db.database import Database
from streamforge.db.ids import is_valid_id
from streamforge.errors import Conflict, NotFound
from streamforge.models import ApiKey, Role, User
from streamforge.models.base import utcnow
from streamforge.schemas.auth import KeyPublic

KEY_PREFIX = "sf_"
_SHOWN = 11  # characters of a key kept for listings: "sf_" and 8 more


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request comes from."""

    user_id: str
    role: Role
    key_id: str | None = None


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class AuthService:
    def __init__(self, database: Database, *, cache_seconds: float = 5.0) -> None:
        self.database = database
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Caller | None]] = {}

    async def create_user(self, name: str, role: Role = Role.USER) -> User:
        try:
            async with self.database.write() as db:
                user = User(name=name, role=role.value)
                db.add(user)
                await db.flush()
                return user
        except IntegrityError:
            raise Conflict(f"user {name!r} already exists") from None

    async def user(self, name_or_id: str) -> User:
        if "\x00" in name_or_id or len(name_or_id) > 100:
            raise NotFound(f"user {name_or_id[:100]!r} not found")
        async with self.database.read() as db:
            found = (
                await db.execute(
                    select(User).where((User.name == name_or_id) | (User.id == name_or_id))
                )
            ).scalar_one_or_none()
        if found is None:
            raise NotFound(f"user {name_or_id!r} not found")
        return found

    async def users(self) -> list[User]:
        async with self.database.read() as db:
            return list((await db.execute(select(User).order_by(User.created_at))).scalars())

    async def create_key(
        self, user_name_or_id: str, name: str | None = None
    ) -> tuple[str, KeyPublic]:
        """A new key for the user: the key itself (shown once) and what is stored of it."""
        user = await self.user(user_name_or_id)
        key = new_key()
        async with self.database.write() as db:
            row = ApiKey(user_id=user.id, name=name, prefix=key[:_SHOWN], hash=key_hash(key))
            db.add(row)
            await db.flush()
            info = _info(row, user.name)
        return key, info

    async def keys(self, user_id: str | None = None) -> list[KeyPublic]:
        async with self.database.read() as db:
            query = select(ApiKey, User.name).join(User, User.id == ApiKey.user_id)
            if user_id is not None:
                query = query.where(ApiKey.user_id == user_id)
            rows = (await db.execute(query.order_by(ApiKey.created_at))).all()
        return [_info(key, user) for key, user in rows]

    async def revoke(self, key_id: str) -> KeyPublic:
        if not is_valid_id(key_id):
            raise NotFound(f"key {key_id[:100]!r} not found")
        async with self.database.write() as db:
            row = await db.get(ApiKey, key_id)
            if row is None:
                raise NotFound(f"key {key_id!r} not found")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            owner = await db.get(User, row.user_id)
            info = _info(row, owner.name if owner is not None else "")
        self._cache = {
            h: v for h, v in self._cache.items() if v[1] is None or v[1].key_id != key_id
        }
        return info

    async def authenticate(self, key: str) -> Caller | None:
        """The caller a key belongs to; None for an unknown or revoked key."""
        digest = key_hash(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.database.read() as db:
            row = (
                await db.execute(
                    select(ApiKey.id, ApiKey.revoked_at, User.id, User.role)
                    .join(User, User.id == ApiKey.user_id)
                    .where(ApiKey.hash == digest)
                )
            ).first()
        caller = None
        if row is not None and row[1] is None:
            caller = Caller(user_id=row[2], role=Role(row[3]), key_id=row[0])
            async with self.database.write() as db:
                await db.execute(
                    update(ApiKey).where(ApiKey.id == row[0]).values(last_used_at=utcnow())
                )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self.cache_seconds, caller)
        return caller


def _info(row: ApiKey, user: str) -> KeyPublic:
    return KeyPublic(
        id=row.id,
        user_id=row.user_id,
        user=user,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
