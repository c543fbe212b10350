from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from streamforge import SERVICE_NAME, __version__
from streamforge.deps import ComponentsDep, MetricsReaderDep
from streamforge.metrics import CONTENT_TYPE
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


@router.get(
    "/metrics",
    summary="Metrics in Prometheus format",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(components: ComponentsDep, _: MetricsReaderDep) -> Response:
    """Time to first token, tokens per second, active streams, disconnects, resumes, cancels,
    queue depth and retrieval latency. With authentication on, an administrator's key is
    needed (unless `STREAMFORGE_AUTH__PUBLIC_METRICS` is set)."""
    return Response(components.metrics.render(), media_type=CONTENT_TYPE)
