"""Dependencies shared by the routers, as ``Annotated`` aliases.

All ``async``: FastAPI runs a plain ``def`` dependency in a worker thread, which costs a
thread hop per dependency on every request for what is an attribute lookup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from streamforge.components import Components
from streamforge.config.settings import Settings
from streamforge.models.base import LOCAL_OWNER
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


async def get_settings(request: Request) -> Settings:
    return (await get_components(request)).settings


async def get_owner() -> str:
    # The single local owner until API keys arrive; repositories already filter by it.
    return LOCAL_OWNER


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
SettingsDep = Annotated[Settings, Depends(get_settings)]
OwnerDep = Annotated[str, Depends(get_owner)]
ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]
CompletionServiceDep = Annotated[CompletionService, Depends(get_completion_service)]
SessionServiceDep = Annotated[SessionService, Depends(get_session_service)]
TemplateServiceDep = Annotated[TemplateService, Depends(get_template_service)]
DocumentServiceDep = Annotated[DocumentService, Depends(get_document_service)]
RetrievalServiceDep = Annotated[RetrievalService, Depends(get_retrieval_service)]
EmbeddingServiceDep = Annotated[EmbeddingService, Depends(get_embedding_service)]
