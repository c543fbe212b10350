"""The application's exceptions, mapped to HTTP in one place (``streamforge.http_errors``).

    AppError (500, "internal_error")
    ├── BadRequest (400, "bad_request")
    │   └── MalformedJSON (400, "malformed_json")
    ├── Unauthorized (401, "unauthorized")
    ├── Forbidden (403, "forbidden")
    ├── NotFound (404, "not_found")
    ├── Conflict (409, "conflict")
    ├── PayloadTooLarge (413, "payload_too_large")
    ├── UnsupportedMediaType (415, "unsupported_media_type")
    ├── ValidationFailed (422, "validation_error")
    ├── TooManyRequests (429, "rate_limited")
    ├── ServiceUnavailable (503, "unavailable")
    │   └── ProviderUnavailable (503, "provider_unavailable")
    └── ConfigurationError (500, "configuration_error")

Services raise these; they never raise ``HTTPException``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"


class MalformedJSON(BadRequest):
    code = "malformed_json"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"


class ValidationFailed(AppError):
    status_code = 422
    code = "validation_error"


class TooManyRequests(AppError):
    status_code = 429
    code = "rate_limited"


class ServiceUnavailable(AppError):
    status_code = 503
    code = "unavailable"


class ConfigurationError(AppError):
    code = "configuration_error"


class ProviderUnavailable(ServiceUnavailable):
    """The chosen provider cannot generate now (and no fallback can): its model process is
    down, for instance. Retrying later may help."""

    code = "provider_unavailable"
