from __future__ import annotations

from streamforge.models.auth import ApiKey, Role, User
from streamforge.models.base import Base
from streamforge.models.chat import ChatSession, Message, MessageRole, MessageStatus, Worker
from streamforge.models.documents import Chunk, Collection, Document, DocumentStatus
from streamforge.models.templates import PromptTemplate

__all__ = [
    "ApiKey",
    "Base",
    "ChatSession",
    "Chunk",
    "Collection",
    "Document",
    "DocumentStatus",
    "Message",
    "MessageRole",
    "MessageStatus",
    "PromptTemplate",
    "Role",
    "User",
    "Worker",
]
