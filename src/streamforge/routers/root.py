from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from streamforge import SERVICE_NAME, __version__
from streamforge.deps import ComponentsDep
from streamforge.services.health import overall_health

router = APIRouter(tags=["service"])


@router.get("/", summary="Service name, version and endpoints")
async def index(request: Request) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    endpoints = [
        f"{method.upper()} {path}" for path, operations in paths.items() for method in operations
    ]
    return {
        "name": SERVICE_NAME,
        "version": __version__,
        "docs": "/docs",
        "openapi": "/openapi.json",
        "endpoints": endpoints,
    }


@router.get("/health", summary="Health of the service and each component")
async def health(components: ComponentsDep) -> JSONResponse:
    report = await overall_health(components)
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)
