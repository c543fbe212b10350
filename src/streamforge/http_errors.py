"""Every error response has one shape: ``{"error": {"code", "message", "details"?}}``.

Except on Anthropic's Messages API (``/v1/messages``), whose clients read Anthropic's shape:
``{"type": "error", "error": {"type", "message"}}``, with a 400 for every invalid request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from streamforge.errors import AppError, EventLogUnavailable, ProviderBusy
from streamforge.streaming.anthropic import error_body, error_type

logger = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


# Errors whose HTTP response names them differently from a stream's ``error`` event: a busy
# provider is refused like any other 429, and an unreachable event log like any other 503.
_HTTP_CODE_OF: tuple[tuple[type[AppError], str], ...] = (
    (ProviderBusy, "rate_limited"),
    (EventLogUnavailable, "unavailable"),
)


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


# Paths (and the paths under them) whose errors take Anthropic's shape.
ANTHROPIC_PATHS = frozenset({"/v1/messages"})


def _respond(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return error_for(request.url.path, status, code, message, details, headers)


def error_for(
    path: str,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The error response in the shape the clients of ``path`` read."""
    if any(path == p or path.startswith(p + "/") for p in ANTHROPIC_PATHS):
        # Anthropic answers every invalid request with a 400.
        shown = 400 if status == 422 else status
        return JSONResponse(
            error_body(error_type(shown), message), status_code=shown, headers=headers
        )
    return error_response(status, code, message, details, headers)


def _plain(value: Any) -> Any:
    # Validation errors can carry the offending input, which may hold bytes or lone surrogates
    # that JSON cannot encode; keep the details printable.
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if value is None or isinstance(value, bool | int | float):
        return value
    return repr(value)


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    code = next((code for kind, code in _HTTP_CODE_OF if isinstance(exc, kind)), exc.code)
    return _respond(request, exc.status_code, code, exc.message, _plain(exc.details), exc.headers)


def _where(loc: Sequence[Any], body: Any, missing: bool) -> list[str | int]:
    """The path to the offending value, as the client sent it.

    Pydantic puts the name of the union member it tried into ``loc`` (``str``,
    ``function-after[...]``, and for constrained types a repr with a memory address): a step is
    kept only where the body really has that key or index, or where it names the field that is
    missing.
    """
    if not loc:
        return []
    if loc[0] != "body":
        # Query, path and header parameters are plain names.
        return [str(loc[0]), *(part for part in loc[1:2] if isinstance(part, str | int))]
    path: list[str | int] = ["body"]
    node = body
    for position, part in enumerate(loc[1:], start=1):
        in_body = (isinstance(node, dict) and isinstance(part, str) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if in_body:
            node = node[part]
        elif not (missing and isinstance(node, dict) and position == len(loc) - 1):
            continue
        path.append(part)
    return path


def _message(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", ""))
    context = error.get("ctx") or {}
    kind = error.get("type")
    if kind in ("too_short", "too_long") and isinstance(error.get("input"), str):
        # A length checked after a validator reads "Value should have at least 1 item".
        limit = context.get("min_length" if kind == "too_short" else "max_length")
        bound = "least" if kind == "too_short" else "most"
        unit = "character" if limit == 1 else "characters"
        message = f"String should have at {bound} {limit} {unit}"
    return message


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return _respond(request, 400, "malformed_json", "the request body is not valid JSON")
    details = [
        {
            "loc": _where(error.get("loc", ()), exc.body, error.get("type") == "missing"),
            "msg": _message(error),
            "type": error.get("type"),
        }
        for error in errors
    ]
    # Of the attempts at a union (a string or a list of strings...), the one that went deepest
    # into the value says most.
    first = max(details, key=lambda d: len(d["loc"])) if details else {"loc": [], "msg": "?"}
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "request"
    return _respond(request, 422, "validation_error", f"{where}: {first['msg']}", _plain(details))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return _respond(request, exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return _respond(request, 500, "internal_error", "internal server error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
