"""Dependencies shared by the routers, as ``Annotated`` aliases.

All ``async``: FastAPI runs a plain ``def`` dependency in a worker thread, which costs a
thread hop per dependency on every request for what is an attribute lookup.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Annotated

from fastapi import Depends, Request

# The routers reach what the app was built from through here only.
from streamforge.components import Components as Components
from streamforge.errors import Forbidden, TooManyRequests, Unauthorized
from streamforge.models import Role
from streamforge.models.base import LOCAL_OWNER
from streamforge.services.auth import Caller
from streamforge.services.chat import ChatService
from streamforge.services.completions import CompletionService
from streamforge.services.documents import DocumentService
from streamforge.services.embeddings import EmbeddingService
from streamforge.services.retrieval import RetrievalService
from streamforge.services.sessions import SessionService
from streamforge.services.templates import TemplateService


async def get_components(request: Request) -> Components:
    components: Components = request.app.state.components
    return components


# With authentication off, everything belongs to the one local user, who administers it.
LOCAL_CALLER = Caller(user_id=LOCAL_OWNER, role=Role.ADMIN)
# Reachable without a key: the index, health, the documentation and the page's own files
# (the page sends the key with every API call it makes).
PUBLIC_PATHS = frozenset(
    {"/", "/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)


async def authenticate(request: Request) -> None:
    """Run for every route (an app-wide dependency): who is calling, from the API key."""
    components = await get_components(request)
    path = request.url.path
    auth = components.settings.auth
    public = (
        path in PUBLIC_PATHS
        or path == "/ui"
        or path.startswith("/ui/")
        or (path == "/metrics" and auth.public_metrics)
    )
    if not auth.enabled:
        if not public and not auth.allow_unauthenticated_remote and _reached_from_outside(request):
            raise Forbidden(
                "authentication is off, so this server answers requests from this machine only "
                "(on a loopback address, not through a proxy): "
                "turn authentication on (STREAMFORGE_AUTH__ENABLED) or allow it "
                "(STREAMFORGE_AUTH__ALLOW_UNAUTHENTICATED_REMOTE)"
            )
        request.state.caller = LOCAL_CALLER
        if not public:
            await _limit(components, LOCAL_CALLER)
        return
    if public:
        return
    headers = request.headers
    if "authorization" not in headers and "x-api-key" in headers:
        # Anthropic's clients send the key in its own header.
        scheme, key = "bearer", headers["x-api-key"]
    else:
        scheme, _, key = headers.get("authorization", "").partition(" ")
    key = key.strip()
    challenge = {"WWW-Authenticate": "Bearer"}
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("send an API key: Authorization: Bearer <key>", headers=challenge)
    caller = await components.auth.authenticate(key) if len(key) <= 200 else None
    if caller is None:
        raise Unauthorized("the API key is unknown or revoked", headers=challenge)
    request.state.caller = caller
    await _limit(components, caller)


async def _limit(components: Components, caller: Caller) -> None:
    per_minute = components.settings.limits.requests_per_minute
    if not per_minute:
        return
    wait = await components.limiter.hit(f"rpm:{caller.key_id or caller.user_id}", per_minute, 60)
    if wait is not None:
        raise TooManyRequests(
            f"more than {per_minute} requests a minute with this key",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


# Headers a reverse proxy adds: a request that carries one came from somewhere else, even when
# the proxy runs on this host and the connection arrives on loopback.
FORWARDING_HEADERS = frozenset(
    {b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-real-ip", b"x-client-ip"}
)


def _reached_from_outside(request: Request) -> bool:
    """The request may come from another machine: it reached a non-loopback address of this
    server (however it was started: `streamforge serve` refuses to listen there, a plain
    `uvicorn --host 0.0.0.0` does not), came from a non-loopback peer, or passed through a
    proxy (which connects from loopback whoever its client is)."""
    if any(name in FORWARDING_HEADERS for name, _ in request.scope.get("headers", ())):
        return True
    ends = (request.scope.get("server"), request.scope.get("client"))
    return not all(is_loopback(end[0]) for end in ends if end)


def is_loopback(host: object) -> bool:
    """127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.0.0.1, as a dual-stack socket
    reports an IPv4 peer). A name (a test client, a unix socket) is not an address to judge."""
    try:
        address = ipaddress.ip_address(str(host).strip("[]"))
    except ValueError:
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


async def get_caller(request: Request) -> Caller:
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is None:
        raise Unauthorized(
            "send an API key: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return caller


async def get_owner(request: Request) -> str:
    # Owners come from the key only, never from a request body.
    return (await get_caller(request)).user_id


async def get_admin(request: Request) -> Caller:
    caller = await get_caller(request)
    if caller.role is not Role.ADMIN:
        raise Forbidden("this needs an administrator's key")
    return caller


async def get_metrics_reader(request: Request) -> None:
    """Metrics describe every user's traffic: an administrator's, unless made public."""
    if not (await get_components(request)).settings.auth.public_metrics:
        await get_admin(request)


async def get_chat_service(request: Request) -> ChatService:
    return (await get_components(request)).chat


async def get_completion_service(request: Request) -> CompletionService:
    return (await get_components(request)).completions


async def get_session_service(request: Request) -> SessionService:
    return (await get_components(request)).sessions


async def get_template_service(request: Request) -> TemplateService:
    return (await get_components(request)).templates


async def get_document_service(request: Request) -> DocumentService:
    return (await get_components(request)).documents


async def get_retrieval_service(request: Request) -> RetrievalService:
    return (await get_components(request)).retrieval


async def get_embedding_service(request: Request) -> EmbeddingService:
    return (await get_components(request)).embeddings


ComponentsDep = Annotated[Components, Depends(get_components)]
OwnerDep = Annotated[str, Depends(get_owner)]
AdminDep = Annotated[Caller, Depends(get_admin)]
MetricsReaderDep = Annotated[None, Depends(get_metrics_reader)]
CallerDep = Annotated[Caller, Depends(get_caller)]
ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]
CompletionServiceDep = Annotated[CompletionService, Depends(get_completion_service)]
SessionServiceDep = Annotated[SessionService, Depends(get_session_service)]
TemplateServiceDep = Annotated[TemplateService, Depends(get_template_service)]
DocumentServiceDep = Annotated[DocumentService, Depends(get_document_service)]
RetrievalServiceDep = Annotated[RetrievalService, Depends(get_retrieval_service)]
EmbeddingServiceDep = Annotated[EmbeddingService, Depends(get_embedding_service)]
