from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from streamforge.deps import OwnerDep, TemplateServiceDep
from streamforge.schemas.common import ErrorResponse, LimitQuery, OffsetQuery, Page, page_of
from streamforge.schemas.templates import TemplateCreate, TemplatePublic, TemplateUpdate

router = APIRouter(prefix="/templates", tags=["templates"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 409, 413, 422)
}

VersionQuery = Annotated[
    int | None,
    Query(ge=1, le=2**31 - 1, description="A version number; the latest when omitted."),
]


@router.post("", status_code=201, responses=_ERRORS, summary="Create a template (version 1)")
async def create_template(
    body: TemplateCreate, owner: OwnerDep, service: TemplateServiceDep
) -> TemplatePublic:
    created = await service.create(owner, body.name, body.system_prompt, body.description)
    return TemplatePublic.model_validate(created)


@router.get(
    "",
    responses=_ERRORS,
    summary="List templates: the built-in default, then the latest version of each by name",
)
async def list_templates(
    owner: OwnerDep, service: TemplateServiceDep, limit: LimitQuery = 20, offset: OffsetQuery = 0
) -> Page[TemplatePublic]:
    page = await service.list(owner, limit=limit, offset=offset)
    return page_of(page, TemplatePublic.model_validate)


@router.get("/{name}", responses=_ERRORS, summary="Get a template's latest or a given version")
async def get_template(
    name: str, owner: OwnerDep, service: TemplateServiceDep, version: VersionQuery = None
) -> TemplatePublic:
    return TemplatePublic.model_validate(await service.get(owner, name, version))


@router.get("/{name}/versions", responses=_ERRORS, summary="A template's versions, oldest first")
async def list_versions(
    name: str,
    owner: OwnerDep,
    service: TemplateServiceDep,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> Page[TemplatePublic]:
    page = await service.versions(owner, name, limit=limit, offset=offset)
    return page_of(page, TemplatePublic.model_validate)


@router.put("/{name}", responses=_ERRORS, summary="Store a new version of a template")
async def update_template(
    name: str, body: TemplateUpdate, owner: OwnerDep, service: TemplateServiceDep
) -> TemplatePublic:
    updated = await service.update(owner, name, body.system_prompt, body.description)
    return TemplatePublic.model_validate(updated)


@router.delete(
    "/{name}", status_code=204, responses=_ERRORS, summary="Delete a template and all its versions"
)
async def delete_template(name: str, owner: OwnerDep, service: TemplateServiceDep) -> Response:
    await service.delete(owner, name)
    return Response(status_code=204)
