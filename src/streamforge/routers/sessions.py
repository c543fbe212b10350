from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from streamforge.deps import OwnerDep, SessionServiceDep
from streamforge.schemas.common import ErrorResponse, LimitQuery, OffsetQuery, Page, page_of
from streamforge.schemas.sessions import MessagePublic, SessionCreate, SessionPublic, SessionUpdate

router = APIRouter(prefix="/sessions", tags=["sessions"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 422)
}


@router.post("", status_code=201, responses=_ERRORS, summary="Create a session")
async def create_session(
    owner: OwnerDep, service: SessionServiceDep, body: SessionCreate | None = None
) -> SessionPublic:
    return SessionPublic.model_validate(await service.create(owner, body.title if body else None))


@router.get("", responses=_ERRORS, summary="List sessions, newest first")
async def list_sessions(
    owner: OwnerDep, service: SessionServiceDep, limit: LimitQuery = 20, offset: OffsetQuery = 0
) -> Page[SessionPublic]:
    return page_of(
        await service.list(owner, limit=limit, offset=offset), SessionPublic.model_validate
    )


@router.get("/{session_id}", responses=_ERRORS, summary="Get a session")
async def get_session(
    session_id: str, owner: OwnerDep, service: SessionServiceDep
) -> SessionPublic:
    return SessionPublic.model_validate(await service.get(owner, session_id))


@router.patch("/{session_id}", responses=_ERRORS, summary="Rename a session")
async def rename_session(
    session_id: str, body: SessionUpdate, owner: OwnerDep, service: SessionServiceDep
) -> SessionPublic:
    return SessionPublic.model_validate(await service.rename(owner, session_id, body.title))


@router.delete(
    "/{session_id}", status_code=204, responses=_ERRORS, summary="Delete a session and its messages"
)
async def delete_session(session_id: str, owner: OwnerDep, service: SessionServiceDep) -> Response:
    await service.delete(owner, session_id)
    return Response(status_code=204)


@router.get(
    "/{session_id}/messages", responses=_ERRORS, summary="Messages of a session, oldest first"
)
async def list_messages(
    session_id: str,
    owner: OwnerDep,
    service: SessionServiceDep,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> Page[MessagePublic]:
    page = await service.messages(owner, session_id, limit=limit, offset=offset)
    return page_of(page, MessagePublic.model_validate)
