"""The chat chain in LCEL: a prompt template piped into a LangChain chat model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable

from streamforge.chains.providers.base import ChatTurn

# The conversation arrives fully assembled (system prompt rendered from the session's
# template, summary, history within budget, the new message); the template places it.
CHAT_PROMPT = ChatPromptTemplate.from_messages([MessagesPlaceholder("messages")])


def to_langchain(turns: Sequence[ChatTurn]) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    for turn in turns:
        if turn.role == "system":
            messages.append(SystemMessage(turn.content))
        elif turn.role == "assistant":
            messages.append(AIMessage(turn.content))
        else:
            messages.append(HumanMessage(turn.content))
    return messages


def chat_chain(
    chat_model: BaseChatModel, /, **options: Any
) -> Runnable[dict[str, list[BaseMessage]], BaseMessage]:
    """``prompt | model``, with per-request options (model name, temperature, max tokens, stop)
    bound to the model call."""
    # Positional-only: the options themselves usually name a ``model``.
    return CHAT_PROMPT | (chat_model.bind(**options) if options else chat_model)
