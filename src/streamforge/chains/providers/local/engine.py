"""The engine: a GGUF file (SmolLM2-135M-Instruct by default) run by llama.cpp in this process.

``LocalLlamaEngine`` owns the one ``llama_cpp.Llama`` of the process. llama.cpp's model object
is not thread-safe, so a single worker thread runs one generation at a time; tokens travel back
to the waiting event loop through ``call_soon_threadsafe``. The engine works with any event loop
(and with none, for the sync API): nothing in it is bound to a loop.

The server never runs it in its own process: the model process (``worker.py``) does, supervised
by ``ModelProcess`` (``process.py``), so a crash in native code ends one generation, not the
server. Tests and the benchmarks use it directly.

Stopping: a ``Cancellation`` is checked by the worker after every token, so once it is set at
most one more token is decoded. Admission: one generation runs and ``queue_depth`` more may
wait; ``admit()`` refuses the next one at once with ``ProviderBusy``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import llama_cpp
from llama_cpp import llama_chat_format
from llama_cpp.llama_types import ChatCompletionRequestMessage

from streamforge.chains.providers.base import ProviderBusy, ProviderError
from streamforge.chains.providers.local.stops import StopMatcher as _StopMatcher
from streamforge.chains.providers.local.template import chat_formatter
from streamforge.chains.providers.local.types import (
    Cancellation,
    GenerationResult,
    GenerationStats,
    Message,
    default_model_path,
    model_error,
)

logger = logging.getLogger(__name__)

# llama-cpp-python's create_chat_completion defaults; at temperature 0 sampling is greedy.
_TOP_K = 40
_TOP_P = 0.95
_MIN_P = 0.05
_REPEAT_PENALTY = 1.0


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException

    def as_provider_error(self) -> ProviderError:
        if isinstance(self.error, ProviderError):
            return self.error
        converted = model_error(self.error)
        converted.__cause__ = self.error
        return converted


_Event = str | GenerationResult | _Failed


@dataclass(eq=False)
class _Job:
    messages: list[Message]
    max_tokens: int
    temperature: float
    stop: tuple[str, ...]
    deliver: Callable[[_Event], None]
    cancellation: Cancellation


class LocalLlamaEngine:
    """The process's llama.cpp model, its worker thread and its admission queue."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        queue_depth: int = 8,
    ) -> None:
        self.model_path = model_path or self.default_model_path()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.queue_depth = queue_depth
        self.load_error: str | None = None
        # The last generation the worker started (its numbers move while it runs).
        self.last_generation: GenerationStats | None = None
        self._llm: llama_cpp.Llama | None = None
        self._formatter: llama_chat_format.ChatFormatter | None = None
        self._vocab: Any = None
        self._load_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._jobs: set[_Job] = set()
        self._jobs_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._admitted = 0
        self._admission_lock = threading.Lock()
        self._average_seconds = 1.0
        self._closing = False

    @staticmethod
    def default_model_path() -> str:
        return default_model_path()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    @property
    def llm(self) -> llama_cpp.Llama:
        if self._llm is None:
            raise ProviderError(
                "the local model is not loaded", code="model_unavailable", status=503
            )
        return self._llm

    def load(self) -> None:
        """Load the model (blocking: call it from a thread when a loop is running)."""
        with self._load_lock:
            if self._llm is not None:
                return
            try:
                llm = llama_cpp.Llama(
                    model_path=self.model_path,
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    verbose=False,
                )
            except Exception as exc:
                self.load_error = str(exc) or type(exc).__name__
                raise ProviderError(
                    f"could not load the local model {self.model_path}: {self.load_error}",
                    code="model_unavailable",
                    status=503,
                ) from exc
            self._formatter = chat_formatter(llm)
            self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
            self._closing = False
            self.load_error = None
            self._llm = llm

    async def start(self) -> None:
        await asyncio.to_thread(self.load)

    def close(self) -> None:
        """Stop every generation, wait for the worker, free the model (blocking)."""
        with self._load_lock:
            self._closing = True
            with self._jobs_lock:
                jobs = list(self._jobs)
            for job in jobs:
                job.cancellation.cancel()
            if self._executor is not None:
                # Queued jobs still run, see their cancellation and tell their consumers.
                self._executor.shutdown(wait=True)
                self._executor = None
            if self._llm is not None:
                self._llm.close()
                self._llm = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # --- admission ------------------------------------------------------------------------

    @property
    def admitted(self) -> int:
        """Generations holding a place: the running one and those waiting."""
        return self._admitted

    @property
    def running(self) -> bool:
        return not self._idle.is_set()

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        with self._admission_lock:
            if self._admitted >= 1 + self.queue_depth:
                waiting = self._admitted - 1
                raise ProviderBusy(
                    f"the local model is busy: 1 generation running, {waiting} waiting",
                    retry_after=self.retry_after(),
                )
            self._admitted += 1
        try:
            yield
        finally:
            with self._admission_lock:
                self._admitted -= 1

    def retry_after(self) -> float:
        # A place frees when the running generation ends: about one generation's time.
        return float(max(1, math.ceil(self._average_seconds)))

    def health_report(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "status": "ok" if self.loaded else "error",
            "loaded": self.loaded,
            "model_path": self.model_path,
            "context_window": self.n_ctx,
            "admitted": self.admitted,
            "queue_depth": self.queue_depth,
        }
        if self.load_error is not None:
            report["error"] = self.load_error
        return report

    async def wait_idle(self) -> None:
        """Wait until no generation is running."""
        # Short waits in a thread: a cancelled caller leaves none blocked for long.
        while not await asyncio.to_thread(self._idle.wait, 0.05):
            pass

    # --- tokens ---------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        # Tokenizing reads only the vocabulary, never the context the worker decodes with.
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=True))

    def prompt_tokens(self, messages: Sequence[Message]) -> list[int]:
        """The chat template applied to ``messages``, tokenized as the model will see it."""
        llm = self.llm
        assert self._formatter is not None
        formatted = self._formatter(
            messages=cast("list[ChatCompletionRequestMessage]", list(messages))
        )
        return llm.tokenize(
            formatted.prompt.encode(), add_bos=not formatted.added_special, special=True
        )

    # --- generation -----------------------------------------------------------------------

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] = (),
        cancellation: Cancellation | None = None,
    ) -> AsyncGenerator[str | GenerationResult, None]:
        """Yield the answer's text as it is decoded, then one ``GenerationResult``.

        Waits (without blocking the loop) while another generation runs. Closing or
        cancelling this generator stops decoding between two tokens.
        """
        if not self.loaded:
            await self.start()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[_Event] = asyncio.Queue()
        cancellation = cancellation or Cancellation()

        def deliver(event: _Event) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancellation.cancel()

        job = _Job(list(messages), max_tokens, temperature, tuple(stop), deliver, cancellation)
        future = self._submit(job)
        try:
            while True:
                event = await events.get()
                if isinstance(event, _Failed):
                    raise event.as_provider_error()
                yield event
                if isinstance(event, GenerationResult):
                    return
        finally:
            cancellation.cancel()
            future.cancel()  # still queued: the worker skips it

    def generate_sync(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] = (),
        cancellation: Cancellation | None = None,
    ) -> Generator[str | GenerationResult, None, None]:
        """``generate`` for callers without an event loop (it blocks the calling thread)."""
        self.load()
        events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        cancellation = cancellation or Cancellation()
        job = _Job(list(messages), max_tokens, temperature, tuple(stop), events.put, cancellation)
        future = self._submit(job)
        try:
            while True:
                event = events.get()
                if isinstance(event, _Failed):
                    raise event.as_provider_error()
                yield event
                if isinstance(event, GenerationResult):
                    return
        finally:
            cancellation.cancel()
            future.cancel()

    def _submit(self, job: _Job) -> Future[None]:
        executor = self._executor
        if executor is None:
            raise ProviderError(
                "the local model is not loaded", code="model_unavailable", status=503
            )
        with self._jobs_lock:
            self._jobs.add(job)
        try:
            return executor.submit(self._run, job)
        except RuntimeError as exc:  # shut down between the check and the submit
            with self._jobs_lock:
                self._jobs.discard(job)
            raise ProviderError(
                "the local model is shutting down", code="model_unavailable", status=503
            ) from exc

    def _run(self, job: _Job) -> None:
        """The worker thread: one whole generation. Never raises."""
        try:
            if self._closing:
                job.cancellation.cancel()
            if job.cancellation.cancelled:
                job.deliver(self._cancelled(GenerationResult(0, 0, "cancelled")))
                return
            stats = GenerationStats()
            job.cancellation._bind(stats)
            self.last_generation = stats
            self._idle.clear()
            started = time.perf_counter()
            event: _Event
            try:
                result = self._decode(job, stats, started)
                event = self._cancelled(dataclasses.replace(result, stats=stats))
            except Exception as exc:
                stats.finish_reason = "error"
                event = _Failed(exc)
            # Finished before the consumer hears of it: after the last event it may cancel
            # harmlessly, and the engine is already idle.
            job.cancellation._bind(None)
            stats.seconds = time.perf_counter() - started
            if stats.finish_reason != "cancelled":
                self._average_seconds = 0.8 * self._average_seconds + 0.2 * stats.seconds
            self._idle.set()
            job.deliver(event)
        except BaseException as exc:
            logger.exception("the local model's worker failed")
            job.deliver(_Failed(exc))
        finally:
            self._idle.set()
            with self._jobs_lock:
                self._jobs.discard(job)

    def _cancelled(self, result: GenerationResult) -> _Event:
        if result.finish_reason == "cancelled" and self._closing:
            return _Failed(
                ProviderError(
                    "the local model was shut down",
                    code="model_unavailable",
                    retryable=True,
                    status=503,
                )
            )
        return result

    def _decode(self, job: _Job, stats: GenerationStats, started: float) -> GenerationResult:
        llm = self.llm
        prompt = self.prompt_tokens(job.messages)
        stats.prompt_tokens = len(prompt)
        room = self.n_ctx - len(prompt)
        if room <= 0:
            raise ProviderError(
                f"the prompt has {len(prompt)} tokens; the local model's context holds "
                f"{self.n_ctx}",
                code="context_length_exceeded",
                status=400,
            )
        limit = min(job.max_tokens, room)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        matcher = _StopMatcher(job.stop)
        finish = "length"
        stopped = False  # by a stop string: the text after it is dropped
        tokens = llm.generate(
            prompt,
            top_k=_TOP_K,
            top_p=_TOP_P,
            min_p=_MIN_P,
            temp=job.temperature,
            repeat_penalty=_REPEAT_PENALTY,
        )
        try:
            if job.cancellation.cancelled:  # cancelled before the prompt was evaluated
                finish = "cancelled"
            else:
                # Each step of ``tokens`` evaluates the previous token and samples the next.
                for token in tokens:
                    if stats.first_token_seconds is None:
                        stats.first_token_seconds = time.perf_counter() - started
                    if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                        finish = "stop"
                        break
                    stats.tokens += 1
                    text, stopped = matcher.feed(decoder.decode(llm.detokenize([token])))
                    if text:
                        job.deliver(text)
                    if stopped:
                        finish = "stop"
                        break
                    if job.cancellation.cancelled:
                        finish = "cancelled"
                        break
                    if stats.tokens >= limit:
                        break
        finally:
            tokens.close()
        if not stopped:
            # Bytes of an unfinished character, and text held back for a stop string.
            text, stopped = matcher.feed(decoder.decode(b"", final=True))
            tail = text if stopped else text + matcher.flush()
            if tail:
                job.deliver(tail)
            if stopped:
                finish = "stop"
        stats.finish_reason = finish
        return GenerationResult(len(prompt), stats.tokens, finish)
