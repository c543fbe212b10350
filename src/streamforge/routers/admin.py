"""Users and API keys, for administrators (any caller when authentication is off)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from streamforge.deps import AdminDep, ComponentsDep
from streamforge.schemas.auth import KeyCreate, KeyCreated, KeyPublic, UserCreate, UserPublic
from streamforge.schemas.common import ErrorResponse

router = APIRouter(prefix="/admin", tags=["admin"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422)
}


@router.post("/users", status_code=201, responses=_ERRORS, summary="Create a user")
async def create_user(body: UserCreate, _: AdminDep, components: ComponentsDep) -> UserPublic:
    user = await components.auth.create_user(body.name, body.role)
    return UserPublic.model_validate(user)


@router.get("/users", responses=_ERRORS, summary="List users")
async def list_users(_: AdminDep, components: ComponentsDep) -> list[UserPublic]:
    return [UserPublic.model_validate(u) for u in await components.auth.users()]


@router.post("/keys", status_code=201, responses=_ERRORS, summary="Create an API key")
async def create_key(body: KeyCreate, _: AdminDep, components: ComponentsDep) -> KeyCreated:
    """The answer holds the key itself: store it now, it is never shown again."""
    key, info = await components.auth.create_key(body.user, body.name)
    return KeyCreated(key=key, **KeyPublic.model_validate(info).model_dump())


@router.get("/keys", responses=_ERRORS, summary="List API keys (never the keys themselves)")
async def list_keys(_: AdminDep, components: ComponentsDep) -> list[KeyPublic]:
    return [KeyPublic.model_validate(info) for info in await components.auth.keys()]


@router.delete("/keys/{key_id}", responses=_ERRORS, summary="Revoke an API key")
async def revoke_key(key_id: str, _: AdminDep, components: ComponentsDep) -> KeyPublic:
    return KeyPublic.model_validate(await components.auth.revoke(key_id))
