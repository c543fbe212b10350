from __future__ import annotations

from streamforge.models.base import Base
from streamforge.models.chat import ChatSession, Message, MessageRole, MessageStatus

__all__ = ["Base", "ChatSession", "Message", "MessageRole", "MessageStatus"]
