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
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from streamforge.db.database import Database
from streamforge.db.ids import is_valid_id
from streamforge.errors import Conflict, NotFound
from streamforge.models import ApiKey, Role, User
from streamforge.models.base import utcnow
from streamforge.repositories import auth as repo

KEY_PREFIX = "sf_"
_SHOWN = 11  # characters of a key kept for listings: "sf_" and 8 more


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request comes from."""

    user_id: str
    role: Role
    key_id: str | None = None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as stored: never the key itself."""

    id: str
    user_id: str
    user: str
    name: str | None
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


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
                return await repo.add_user(db, name, role)
        except IntegrityError:
            raise Conflict(f"user {name!r} already exists") from None

    async def user(self, name_or_id: str) -> User:
        if "\x00" in name_or_id or len(name_or_id) > 100:
            raise NotFound(f"user {name_or_id[:100]!r} not found")
        async with self.database.read() as db:
            found = await repo.find_user(db, name_or_id)
        if found is None:
            raise NotFound(f"user {name_or_id!r} not found")
        return found

    async def users(self) -> list[User]:
        async with self.database.read() as db:
            return list(await repo.list_users(db))

    async def create_key(
        self, user_name_or_id: str, name: str | None = None
    ) -> tuple[str, KeyInfo]:
        """A new key for the user: the key itself (shown once) and what is stored of it."""
        user = await self.user(user_name_or_id)
        key = new_key()
        async with self.database.write() as db:
            row = await repo.add_key(db, user.id, name, key[:_SHOWN], key_hash(key))
            info = _info(row, user.name)
        return key, info

    async def keys(self, user_id: str | None = None) -> list[KeyInfo]:
        async with self.database.read() as db:
            rows = await repo.list_keys(db, user_id)
        return [_info(key, user) for key, user in rows]

    async def revoke(self, key_id: str) -> KeyInfo:
        if not is_valid_id(key_id):
            raise NotFound(f"key {key_id[:100]!r} not found")
        async with self.database.write() as db:
            row = await repo.get_key(db, key_id)
            if row is None:
                raise NotFound(f"key {key_id!r} not found")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            owner = await repo.get_user(db, row.user_id)
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
            found = await repo.key_owner(db, digest)
        caller = None
        if found is not None and found[1] is None:
            key_id, _, user_id, role = found
            caller = Caller(user_id=user_id, role=Role(role), key_id=key_id)
            async with self.database.write() as db:
                await repo.mark_used(db, key_id, utcnow())
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self.cache_seconds, caller)
        return caller


def _info(row: ApiKey, user: str) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        user_id=row.user_id,
        user=user,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
