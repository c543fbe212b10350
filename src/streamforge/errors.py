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
    │   └── ExtractionFailed (422, "validation_error"): an upload refused or unreadable
    ├── TooManyRequests (429, "rate_limited")
    ├── ServiceUnavailable (503, "unavailable")
    │   ├── ProviderUnavailable (503, "provider_unavailable")
    │   └── EventLogUnavailable (503, "event_log_unavailable" | "shutdown")
    ├── ProviderError (502, "provider_error" | the failure's own code)
    │   └── ProviderBusy (429, "provider_busy")
    └── ConfigurationError (500, "configuration_error")

Services and the layers below raise these; they never raise ``HTTPException``. A stream
reports ``code`` in its ``error`` event; an HTTP error response reports the same code, except
where ``http_errors`` says otherwise (a busy provider answers ``rate_limited``, like every
other 429).
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    # Class defaults; an instance may carry its own (a provider's failure names its kind).
    status_code: int = 500
    code: str = "internal_error"

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


class EventLogUnavailable(ServiceUnavailable):
    """The shared event log cannot be reached, or this reader was stopped (shutdown)."""

    def __init__(self, message: str, code: str = "event_log_unavailable") -> None:
        super().__init__(message)
        self.code = code


class ExtractionFailed(ValidationFailed):
    """A file refused or unreadable; ``reason`` is one sentence for the person who uploaded it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProviderError(AppError):
    """A provider failed. ``retryable`` tells the client whether trying again may help;
    ``status`` is the upstream's HTTP status, when it answered one."""

    status_code = 502
    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        code: str = "provider_error",
        retryable: bool = False,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, headers=headers)
        self.code = code
        self.retryable = retryable
        self.status = status


class ProviderBusy(ProviderError):
    """The provider's queue is full: the request is refused before anything is stored."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(
            message,
            code="provider_busy",
            retryable=True,
            status=429,
            headers={"Retry-After": str(max(1, round(retry_after)))},
        )
        self.retry_after = retry_after
