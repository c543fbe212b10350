"""The original Phase 0 behaviour: a fixed answer streamed word by word with a delay.

Deterministic, free and instant to start, so tests, demos and benchmarks use it. A ``script``
of exact deltas (line breaks, multi-byte text, leading spaces) and a stall after a given
delta let tests drive the stream encoder through its edge cases.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from streamforge.chains.providers.base import BaseProvider, Chunk, GenerationRequest, Usage

DEFAULT_ANSWER = (
    "Hello! This is StreamForge answering with its simulated provider. Each word of this "
    "reply is sent to you as a separate Server-Sent Event, just as a real language model "
    "streams its tokens, so you can watch the answer arrive piece by piece."
)


def split_words(text: str) -> list[str]:
    """Split into deltas that keep their leading space, so joining them gives ``text`` back."""
    deltas: list[str] = []
    start = 0
    length = len(text)
    while start < length:
        end = start
        while end < length and text[end].isspace():
            end += 1
        while end < length and not text[end].isspace():
            end += 1
        deltas.append(text[start:end])
        start = end
    return deltas


def cut_at_stop(deltas: list[str], stop: Sequence[str]) -> tuple[list[str], str | None]:
    """The deltas up to the first stop sequence in their text (which is not sent, as a model
    leaves it out), and that sequence; the deltas unchanged and None when none occurs."""
    text = "".join(deltas)
    found = [(at, sequence) for sequence in stop if sequence and (at := text.find(sequence)) >= 0]
    if not found:
        return deltas, None
    at, sequence = min(found, key=lambda item: item[0])
    kept: list[str] = []
    length = 0
    for delta in deltas:
        if length + len(delta) >= at:
            if at > length:
                kept.append(delta[: at - length])
            break
        kept.append(delta)
        length += len(delta)
    return kept, sequence


class SimulatedProvider(BaseProvider):
    name = "simulated"
    # No model behind it: the answer is as long as it is configured to be.
    context_window = 10_000_000
    default_max_tokens = 1_000_000

    def __init__(
        self,
        *,
        delay: float = 0.1,
        answer: str | None = None,
        min_words: int = 0,
        script: Sequence[str] | None = None,
        stall_after: int | None = None,
        stall_seconds: float = 0.0,
    ) -> None:
        self.delay = delay
        self.answer = answer or DEFAULT_ANSWER
        self.min_words = min_words
        self.script = list(script) if script is not None else None
        self.stall_after = stall_after
        self.stall_seconds = stall_seconds

    def deltas_for(self, request: GenerationRequest) -> list[str]:
        return self._plan(request)[0]

    def _plan(self, request: GenerationRequest) -> tuple[list[str], str | None]:
        """The deltas to send, and the stop sequence they end on (None when they end on their
        own or at ``max_tokens``)."""
        if self.script is not None:
            deltas = list(self.script)
        else:
            last_user = next(
                (t.content for t in reversed(request.messages) if t.role == "user"), ""
            )
            words = split_words(self.answer.replace("{message}", last_user))
            deltas = list(words)
            while words and len(deltas) < self.min_words:
                deltas.extend(words if deltas[-1].endswith(" ") else [" " + words[0], *words[1:]])
        deltas, stop_sequence = cut_at_stop(deltas, request.stop)
        if request.max_tokens is not None and len(deltas) > request.max_tokens:
            deltas, stop_sequence = deltas[: request.max_tokens], None
        return deltas, stop_sequence

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        deltas, stop_sequence = self._plan(request)
        prompt_tokens = sum(len(split_words(turn.content)) for turn in request.messages)
        for index, delta in enumerate(deltas):
            if index == self.stall_after:
                await asyncio.sleep(self.stall_seconds)
            # sleep(0) still yields to the loop, so a zero delay never starves other streams.
            await asyncio.sleep(self.delay)
            yield Chunk(text=delta)
        yield Chunk(
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(deltas)),
            stop_sequence=stop_sequence,
        )

    def count_tokens(self, text: str) -> int:
        return len(split_words(text))

    def models(self) -> list[str]:
        return ["simulated"]

    def model_for(self, requested: str | None) -> str:
        return "simulated"  # there is no other

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "delay": self.delay}
