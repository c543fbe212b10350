"""The chat page at ``/ui``: plain files served as they are (no build step, nothing fetched
from elsewhere): ``index.html``, ``style.css``, and the script as ES modules, ``app.js`` and
the modules it imports (``dom``, ``http``, ``sse``, ``markdown``, ``view``, ``turn``,
``composer``, ``sessions``, ``documents``, ``collections``, ``passage``, ``key``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from streamforge.errors import NotFound

router = APIRouter(tags=["ui"])

STATIC = Path(__file__).resolve().parent.parent / "ui"

# The page runs no inline script or style and talks to this server only, so the policy can
# forbid everything else: model output that slipped into the DOM could still not run.
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": _POLICY,
    "Referrer-Policy": "no-referrer",
}
_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The modules app.js imports, each at /ui/<name>.js; no other name is served.
MODULES = (
    "dom",
    "http",
    "sse",
    "markdown",
    "view",
    "turn",
    "composer",
    "sessions",
    "documents",
    "collections",
    "passage",
    "key",
)


@router.get(
    "/ui",
    summary="The chat page",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}}},
)
async def page() -> FileResponse:
    return FileResponse(
        STATIC / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS
    )


@router.get("/ui/app.js", include_in_schema=False)
async def script() -> FileResponse:
    return _asset("app.js")


@router.get("/ui/style.css", include_in_schema=False)
async def style() -> FileResponse:
    return _asset("style.css")


def _asset(name: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type=_ASSETS[name], headers=_HEADERS)


async def module(request: Request) -> Response:
    """One of the page's ES modules (a static file, outside the API's schema)."""
    name = request.path_params["name"]
    if name not in MODULES:
        raise NotFound(f"the page has no module {name!r}")
    return FileResponse(
        STATIC / f"{name}.js", media_type="text/javascript; charset=utf-8", headers=_HEADERS
    )


router.add_route("/ui/{name}.js", module, methods=["GET", "HEAD"], include_in_schema=False)
