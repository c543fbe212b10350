"""Generation: drive providers into a stream's event log, with retries and fallback.

Before the first token a failure is retried with exponential backoff when the provider says
it may help, then the next provider of the fallback list is tried. After the first token
nothing is retried (the client already shows text): the stream ends with an ``error`` event
and the reply is recorded ``failed`` with its partial text.
However generation ends — completed, failed, cancelled, interrupted — ``finish`` is awaited
with exactly the text that was logged, then ``usage`` and ``done`` close the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamforge.chains.providers.base import (
    Chunk,
    GenerationRequest,
    Provider,
    ProviderError,
    Usage,
)
from streamforge.chains.providers.errors import classify
from streamforge.models import MessageStatus
from streamforge.services.streams import StreamRun, to_the_end
from streamforge.streaming.events import EventType, LineBreakNormaliser

logger = logging.getLogger(__name__)

FINISH_REASON = {
    MessageStatus.COMPLETED: "stop",
    MessageStatus.CANCELLED: "cancelled",
    MessageStatus.INTERRUPTED: "interrupted",
    MessageStatus.FAILED: "error",
}

SHUTDOWN_ERROR = {
    "code": "shutdown",
    "message": "the server is shutting down; send the message again",
    "retryable": True,
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3
    backoff: float = 0.5
    first_token_timeout: float = 120.0


@dataclass(slots=True)
class Outcome:
    status: MessageStatus
    text: str
    usage: Usage
    provider: str
    error: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # The model of the provider that answered (or failed last).
    model: str | None = None


Finish = Callable[[Outcome], Awaitable[None]]


Prepare = Callable[[], Awaitable[GenerationRequest]]


async def generate(
    run: StreamRun,
    providers: Sequence[Provider],
    prepare: Prepare,
    policy: RetryPolicy,
    finish: Finish,
    *,
    admission: contextlib.ExitStack | None = None,
    extra_done: dict[str, Any] | None = None,
) -> None:
    """Run as the stream's producer task.

    ``prepare`` builds the request (assembling memory may itself call the model); it runs
    inside the same lifecycle, so a disconnect during it is recorded like any other.
    ``admission`` holds the first provider's reservation, taken before the request was
    acknowledged; it is given back as soon as that provider is done with, so a fallback does
    not keep its place in the queue. Each fallback is admitted for its own attempts."""
    buffer = run.buffer
    request = GenerationRequest(messages=[])
    started = time.perf_counter()
    first_token_at: float | None = None
    parts = run.parts  # the run's own list, so checkpoints see the text so far
    usage: Usage | None = None
    stop_sequence: str | None = None
    status = MessageStatus.FAILED
    error: ProviderError | None = None
    provider = providers[0]
    tried: list[dict[str, Any]] = []
    normaliser = LineBreakNormaliser()

    def emit(chunk: Chunk) -> None:
        nonlocal usage, first_token_at, stop_sequence
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.stop_sequence is not None:
            stop_sequence = chunk.stop_sequence
        text = normaliser.feed(chunk.text) if chunk.text else ""
        if text:
            if first_token_at is None:
                first_token_at = time.perf_counter()
            parts.append(text)
            buffer.append(EventType.MESSAGE, text)

    try:
        request = await prepare()
        for index, candidate in enumerate(providers):
            provider = candidate
            reservation: contextlib.AbstractContextManager[Any] = (
                (admission or contextlib.nullcontext()) if index == 0 else candidate.admit()
            )
            try:
                with reservation:
                    error = await _attempts(
                        candidate, request, policy, emit, tried, lambda: bool(parts)
                    )
            except ProviderError as exc:  # a fallback that is busy counts as a failed attempt
                error = exc
                tried.append({"provider": candidate.name, "code": exc.code})
            if error is None:
                status = MessageStatus.COMPLETED
                break
            if parts:
                break  # text already streamed: no fallback can continue it seamlessly
    except asyncio.CancelledError:
        status = run.stop_reason or MessageStatus.INTERRUPTED
        error = None
        raise
    except Exception as exc:  # preparing the request failed
        logger.exception("generation failed before it started")
        error = classify(exc, provider.name)
    finally:
        if admission is not None:
            admission.close()  # a no-op once the first provider was done with
        text = "".join(parts)
        if usage is None:
            usage = Usage(
                prompt_tokens=sum(provider.count_tokens(t.content) for t in request.messages),
                completion_tokens=sum(provider.count_tokens(p) for p in parts),
            )
        error_body = (
            {"code": error.code, "message": error.message, "retryable": error.retryable}
            if error is not None and status is MessageStatus.FAILED
            else None
        )
        if run.stop_detail == "shutdown" and status is MessageStatus.INTERRUPTED:
            error_body = dict(SHUTDOWN_ERROR)
        model = provider.model_for(request.model)
        outcome = Outcome(status, text, usage, provider.name, error_body, tried, model)
        done = {
            "finish_reason": FINISH_REASON[status],
            "status": status.value,
            "provider": provider.name,
            "model": model,
            **({"reason": run.stop_detail} if run.stop_detail else {}),
            # The stop sequence the answer ended on, when the provider says which.
            **(
                {"stop_sequence": stop_sequence}
                if stop_sequence is not None and status is MessageStatus.COMPLETED
                else {}
            ),
            **(extra_done or {}),
            "usage": usage.as_dict(),
            "timings": {
                "total_ms": round((time.perf_counter() - started) * 1000, 3),
                "ttft_ms": (
                    round((first_token_at - started) * 1000, 3)
                    if first_token_at is not None
                    else None
                ),
            },
        }
        # To the end even when this task is cancelled again meanwhile: the reply must be
        # recorded and the stream closed, exactly once.
        await to_the_end(_close(run, finish, outcome, done))


async def _close(run: StreamRun, finish: Finish, outcome: Outcome, done: dict[str, Any]) -> None:
    """Record the reply, then log the stream's last events: ``error`` (if any), ``usage``,
    ``done``."""
    await _safe_finish(finish, outcome)
    buffer = run.buffer
    if outcome.error is not None:
        buffer.append(EventType.ERROR, outcome.error)
    buffer.append(EventType.USAGE, outcome.usage.as_dict())
    buffer.append(EventType.DONE, done)


async def _attempts(
    provider: Provider,
    request: GenerationRequest,
    policy: RetryPolicy,
    emit: Callable[[Chunk], None],
    tried: list[dict[str, Any]],
    streamed: Callable[[], bool],
) -> ProviderError | None:
    """Stream from one provider, retrying failures before the first token."""
    error: ProviderError | None = None
    for attempt in range(policy.attempts):
        if attempt:
            await asyncio.sleep(policy.backoff * 2 ** (attempt - 1))
        try:
            await _stream_once(provider, request, policy, emit)
            return None
        except ProviderError as exc:
            error = exc
        except Exception as exc:
            logger.warning("provider %s raised %r", provider.name, exc)
            error = classify(exc, provider.name)
        tried.append({"provider": provider.name, "attempt": attempt + 1, "code": error.code})
        if streamed() or not error.retryable:
            return error
    return error


async def _stream_once(
    provider: Provider,
    request: GenerationRequest,
    policy: RetryPolicy,
    emit: Callable[[Chunk], None],
) -> None:
    async with contextlib.aclosing(provider.stream(request)) as chunks:
        iterator = aiter(chunks)
        # A provider that stays silent is a failure like any other, retried or fallen back.
        try:
            async with asyncio.timeout(policy.first_token_timeout):
                first = await anext(iterator)
        except StopAsyncIteration:
            return
        emit(first)
        async for chunk in iterator:
            emit(chunk)


async def _safe_finish(finish: Finish, outcome: Outcome) -> None:
    try:
        await finish(outcome)
    except Exception:
        # The row stays "streaming", with the text of its last checkpoint, until this worker
        # is gone and another worker's pass over dead workers' replies marks it interrupted.
        logger.exception("could not record the end of a generation")
