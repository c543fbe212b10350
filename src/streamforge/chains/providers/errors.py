"""Turning whatever a client library raises into a ``ProviderError``.

The SDKs each have their own exception tree (openai, anthropic, ollama, httpx); what matters
to StreamForge is the same for all of them: did the upstream answer with a status, and is it
worth trying again. Duck typing keeps this free of imports of optional packages.
"""

from __future__ import annotations

import asyncio

from streamforge.chains.providers.base import ProviderError

_RETRYABLE_STATUS = {408, 409, 425, 429}
_CONNECTION_WORDS = (
    "connect",
    "timeout",
    "timed out",
    "protocol",
    "readerror",
    "network",
    "closed",
    "reset",
    "incomplete",
    "remotedisconnected",
)


def _status_of(exc: BaseException) -> int | None:
    for candidate in (exc, getattr(exc, "response", None)):
        status = getattr(candidate, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def classify(exc: BaseException, provider: str) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return ProviderError(
            f"{provider}: no answer in time", code="provider_timeout", retryable=True
        )
    status = _status_of(exc)
    detail = str(exc) or type(exc).__name__
    if status is not None:
        retryable = status in _RETRYABLE_STATUS or status >= 500
        code = "provider_rate_limited" if status == 429 else "provider_http_error"
        return ProviderError(
            f"{provider} answered {status}: {detail}", code=code, retryable=retryable, status=status
        )
    chain: list[BaseException] = [exc]
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(chain) < 5:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    names = " ".join(f"{type(e).__name__} {e}".lower() for e in chain)
    if isinstance(exc, ConnectionError | OSError) or any(w in names for w in _CONNECTION_WORDS):
        return ProviderError(
            f"{provider}: connection failed: {detail}", code="provider_unavailable", retryable=True
        )
    return ProviderError(f"{provider}: {detail}", code="provider_error", retryable=False)
