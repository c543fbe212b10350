"""Conversation memory: the history a provider sees, within a token budget.

The newest turns are replayed verbatim while they fit. Turns that no longer fit are condensed
by the model into a rolling summary, stored with the session (``summary`` and the id of the
newest message it covers, ``summary_until``) and sent as a system message after the
template's system prompt. Tokens are counted with the provider's tokenizer where it has one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from streamforge.chains.providers.base import ChatTurn, GenerationRequest, Provider
from streamforge.config.settings import MemorySettings
from streamforge.db.database import Database
from streamforge.repositories import sessions as repo

logger = logging.getLogger(__name__)

# Role markers and separators each message costs in a chat template.
MESSAGE_OVERHEAD = 4
SUMMARY_PREFIX = "Summary of the earlier conversation:\n"
_SUMMARISER = (
    "You condense conversations. Write a short summary that keeps names, facts, numbers, "
    "decisions and open questions. Answer with the summary only."
)


@dataclass(frozen=True, slots=True)
class StoredTurn:
    id: str
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class SessionMemory:
    summary: str | None
    summary_until: str | None


@dataclass(frozen=True, slots=True)
class Assembled:
    messages: list[ChatTurn]
    history_tokens: int
    replayed: int
    summary: str | None


class MemoryService:
    def __init__(self, settings: MemorySettings, database: Database) -> None:
        self.settings = settings
        self.database = database

    def budget(self, provider: Provider, system: str, message: str, max_tokens: int) -> int:
        """Tokens available to the summary and the replayed turns together."""
        fixed = (
            provider.count_tokens(system) + provider.count_tokens(message) + 3 * MESSAGE_OVERHEAD
        )
        available = provider.context_window - max_tokens - fixed
        if self.settings.history_budget is not None:
            available = min(available, self.settings.history_budget)
        return max(available, 0)

    async def assemble(
        self,
        *,
        owner_id: str,
        session_id: str,
        provider: Provider,
        system: str,
        history: Sequence[StoredTurn],
        memory: SessionMemory,
        message: str,
        max_tokens: int,
    ) -> Assembled:
        budget = self.budget(provider, system, message, max_tokens)
        summary_reserve = min(self.settings.summary_max_tokens + MESSAGE_OVERHEAD, budget)
        turns_budget = budget - summary_reserve
        if memory.summary is None:
            # Until something has been condensed, the whole budget may go to turns.
            everything = sum(provider.count_tokens(t.content) + MESSAGE_OVERHEAD for t in history)
            if everything <= budget:
                turns_budget = budget

        kept: list[StoredTurn] = []
        used = 0
        for turn in reversed(history):
            cost = provider.count_tokens(turn.content) + MESSAGE_OVERHEAD
            if used + cost > turns_budget:
                break
            kept.append(turn)
            used += cost
        kept.reverse()
        dropped = history[: len(history) - len(kept)]

        summary = memory.summary
        if dropped:
            pending = [
                t for t in dropped if memory.summary_until is None or t.id > memory.summary_until
            ]
            if pending:
                summary = await self._condense(provider, summary, pending, budget=summary_reserve)
                await self._store(owner_id, session_id, summary, pending[-1].id)

        messages = [ChatTurn("system", system)] if system else []
        summary_tokens = 0
        if summary and dropped:
            messages.append(ChatTurn("system", SUMMARY_PREFIX + summary))
            summary_tokens = provider.count_tokens(SUMMARY_PREFIX + summary) + MESSAGE_OVERHEAD
        messages.extend(ChatTurn(t.role, t.content) for t in kept)
        messages.append(ChatTurn("user", message))
        return Assembled(messages, used + summary_tokens, len(kept), summary if dropped else None)

    async def _condense(
        self,
        provider: Provider,
        summary: str | None,
        turns: Sequence[StoredTurn],
        *,
        budget: int,
    ) -> str | None:
        limit = max(budget - MESSAGE_OVERHEAD - provider.count_tokens(SUMMARY_PREFIX), 8)
        room = provider.context_window - limit - provider.count_tokens(_SUMMARISER) - 64
        # Fold in batches that fit the model's context, oldest first: a rolling summary.
        batch: list[str] = []
        batch_tokens = 0
        for turn in turns:
            line = f"{turn.role}: {turn.content}"
            cost = provider.count_tokens(line) + 1
            if batch and batch_tokens + cost > room:
                summary = await self._summarise(provider, summary, batch, limit)
                batch, batch_tokens = [], 0
            batch.append(line[: max(room * 4, 64)])
            batch_tokens += min(cost, room)
        if batch:
            summary = await self._summarise(provider, summary, batch, limit)
        return summary

    async def _summarise(
        self, provider: Provider, summary: str | None, lines: list[str], limit: int
    ) -> str | None:
        body = "\n".join(lines)
        prompt = (
            f"Earlier summary:\n{summary}\n\nConversation since then:\n{body}"
            if summary
            else f"Conversation:\n{body}"
        )
        request = GenerationRequest(
            messages=[ChatTurn("system", _SUMMARISER), ChatTurn("user", prompt)],
            max_tokens=limit,
            temperature=0.0,
        )
        parts: list[str] = []
        try:
            with provider.admit():
                async with contextlib.aclosing(provider.stream(request)) as chunks:
                    async for chunk in chunks:
                        parts.append(chunk.text)
        except Exception:
            # Memory must not fail the turn: keep the older summary and drop the turns.
            logger.warning("summarising with %s failed", provider.name, exc_info=True)
            return summary
        text = "".join(parts).strip()
        return _clip(provider, text, limit) if text else summary

    async def _store(self, owner_id: str, session_id: str, summary: str | None, until: str) -> None:
        async with self.database.write() as db:
            await repo.set_summary(db, owner_id, session_id, summary, until)


def _clip(provider: Provider, text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` tokens, at a word boundary."""
    if provider.count_tokens(text) <= limit:
        return text
    words = text.split()
    low, high = 0, len(words)
    while low < high:
        middle = (low + high + 1) // 2
        if provider.count_tokens(" ".join(words[:middle])) <= limit:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low])
