"""``ModelProcess``: the local model in a supervised child process, reached over a Unix socket.

llama.cpp is native code: a fault in it (a CPU feature that the build uses and the machine
faults on, an abort, the kernel's out-of-memory killer) would take down whichever process runs
it. So the server never decodes in its own process. ``ModelProcess`` starts
``python -m streamforge.chains.providers.local.worker``, waits for it to load the model and
decode a few tokens, and then streams each generation over its own connection. When the
process dies, the generation it was running ends with a retryable ``model_process_stopped``
error, every other request carries on, and the process is started again after a backoff
(0.5 s doubling to ``max_backoff``). While it is not running, ``health_report()`` says
``degraded`` with the reason in words and ``admit()`` refuses at once with a 503, so the chat
service can fall back to another provider.

With ``endpoint`` set, it starts nothing: it attaches to a model process that someone else
supervises (``streamforge serve --workers N`` runs one for all its workers) and watches it.

Admission (one generation running, ``queue_depth`` waiting) is counted here, per server
process. Token counts for memory budgets come from the model's vocabulary (``vocabulary.py``),
loaded in this process (no decoding, no compute kernels) once the model process has proven the
build. How the child is started and its exit described is ``child.py``.

One concept, over 450 lines: the model process as this server sees it. Supervision, admission
and the generations read and move the same state (``state``, ``reason``, the generations in
flight): a generation whose connection breaks marks the process restarting before the
supervisor has reaped it, and admission refuses while it restarts. Split, each part would
reach into the others' fields.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncGenerator, Generator, Iterator, Sequence
from typing import Any

from streamforge.chains.providers.base import ProviderBusy, ProviderError
from streamforge.chains.providers.local import protocol
from streamforge.chains.providers.local.child import (
    child_environment,
    describe_exit,
    worker_command,
)
from streamforge.chains.providers.local.types import (
    Cancellation,
    GenerationResult,
    GenerationStats,
    Message,
    default_model_path,
)
from streamforge.chains.providers.local.vocabulary import Vocabulary

logger = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
# A process that ran this long before dying is restarted at the first backoff again.
STABLE_SECONDS = 10.0


class ModelProcess:
    """The local engine's interface (``types.LocalEngine``), answered by a child process."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        queue_depth: int = 8,
        endpoint: str | None = None,
        startup_timeout: float = 120.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.model_path = model_path or default_model_path()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.queue_depth = queue_depth
        self.endpoint = endpoint
        self.startup_timeout = startup_timeout
        self.max_backoff = max_backoff
        # stopped -> starting -> ready; a death: restarting (or failed while it never starts)
        self.state = "stopped"
        self.reason: str | None = None
        self.info: dict[str, Any] = {}
        self.restarts = 0
        self.last_generation: GenerationStats | None = None
        self._socket_dir: str | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._settled: asyncio.Event | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=30)
        self._admitted = 0
        self._in_flight = 0
        self._average_seconds = 1.0
        self._vocabulary: Vocabulary | None = None
        self._closing = False
        self._background: set[asyncio.Task[Any]] = set()

    # --- what the provider reads ------------------------------------------------------------

    @property
    def spawns(self) -> bool:
        return self.endpoint is None

    @property
    def socket_path(self) -> str | None:
        if self.endpoint is not None:
            return self.endpoint
        return os.path.join(self._socket_dir, "model.sock") if self._socket_dir else None

    @property
    def loaded(self) -> bool:
        return self.state == "ready"

    @property
    def pid(self) -> int | None:
        pid = self.info.get("pid")
        return int(pid) if isinstance(pid, int) else None

    @property
    def admitted(self) -> int:
        return self._admitted

    @property
    def load_error(self) -> str | None:
        return None if self.state == "ready" else self.reason

    def health_report(self) -> dict[str, Any]:
        status = {"ready": "ok", "stopped": "ok", "starting": "starting"}.get(self.state)
        report: dict[str, Any] = {
            "status": status or "degraded",
            "loaded": self.loaded,
            "model_process": self.state,
            "model_path": self.model_path,
            "context_window": self.n_ctx,
            "admitted": self._admitted,
            "queue_depth": self.queue_depth,
            "restarts": self.restarts,
        }
        if self.pid is not None:
            report["pid"] = self.pid
        if self.info.get("build"):
            report["build"] = self.info["build"]
        if self.reason is not None and self.state != "ready":
            report["error"] = self.reason
        return report

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start (or attach to) the model process and wait for its first answer; never raises:
        a process that cannot start leaves the provider degraded, and it keeps trying."""
        if self._supervisor is not None and not self._supervisor.done():
            await self._wait_settled()
            return
        self._closing = False
        self._settled = asyncio.Event()
        if self.spawns:
            self._socket_dir = tempfile.mkdtemp(prefix="streamforge-model-")
            self.state = "starting"
            self._supervisor = asyncio.create_task(self._supervise(), name="model-process")
        else:
            self.state = "starting"
            self._supervisor = asyncio.create_task(self._watch(), name="model-endpoint")
        await self._wait_settled()

    async def _wait_settled(self) -> None:
        assert self._settled is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.startup_timeout + 5):
                await self._settled.wait()

    async def aclose(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._stop_process()
        for task in list(self._background):
            task.cancel()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        if self._vocabulary is not None:
            self._vocabulary.close()
            self._vocabulary = None
        self.state = "stopped"

    async def _stop_process(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(5):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def _supervise(self) -> None:
        backoff = FIRST_BACKOFF
        while not self._closing:
            began = time.monotonic()
            ready = await self._spawn()
            assert self._process is not None
            if ready:
                await self._on_ready()
            self._settle()
            returncode = await self._process.wait()
            if self._closing:
                return
            lived = time.monotonic() - began
            if ready and lived >= STABLE_SECONDS:
                backoff = FIRST_BACKOFF
            if ready or self.state != "failed":
                self.reason = f"the local model process stopped: {describe_exit(returncode)}"
            self.state = "restarting" if ready else "failed"
            self.info = {}
            logger.error("%s; starting it again in %.1f s", self.reason, backoff)
            if self._stderr:
                logger.error("its last output: %s", " | ".join(self._stderr))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
            self.restarts += 1

    async def _spawn(self) -> bool:
        """Start the process and read its first line: True once it is ready."""
        socket_path = self.socket_path
        assert socket_path is not None
        self.state = "starting" if self.state in ("stopped", "starting") else self.state
        self._stderr.clear()
        self._process = await asyncio.create_subprocess_exec(
            *worker_command(socket_path, self.model_path, self.n_ctx, self.n_threads),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_environment(),
            limit=protocol.LINE_LIMIT,
        )
        process = self._process
        assert process.stdout is not None and process.stderr is not None
        self._spawned(self._drain_stderr(process.stderr))
        try:
            async with asyncio.timeout(self.startup_timeout):
                line = await process.stdout.readline()
        except TimeoutError:
            self.reason = (
                f"the local model process did not load {self.model_path} within "
                f"{self.startup_timeout:.0f} s"
            )
            self.state = "failed"
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            return False
        try:
            message = protocol.decode(line) if line else {}
        except ValueError:
            message = {}
        if isinstance(message.get("ready"), dict):
            self.info = message["ready"]
            return True
        if isinstance(message.get("failed"), str):
            self.reason = message["failed"]
        else:
            await process.wait()
            self.reason = (
                "the local model process crashed while loading the model and decoding its "
                f"first tokens: {describe_exit(process.returncode)}"
            )
        self.state = "failed"
        logger.error("%s", self.reason)
        return False

    async def _on_ready(self) -> None:
        self.state = "ready"
        self.reason = None
        logger.info(
            "local model process %s ready: %s (llama.cpp: %s)",
            self.info.get("pid"),
            self.model_path,
            self.info.get("build"),
        )
        if self._vocabulary is None:
            try:
                self._vocabulary = await asyncio.to_thread(Vocabulary, self.model_path)
            except Exception:
                logger.warning("token counts are estimated: the vocabulary did not load")

    def _settle(self) -> None:
        if self._settled is not None:
            self._settled.set()

    async def _drain_stderr(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            if text:
                self._stderr.append(text)
                logger.debug("model process: %s", text)

    def _spawned(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch(self) -> None:
        """Attached to someone else's model process: ask it how it is, often while it is not."""
        while not self._closing:
            try:
                info = await self._request_info()
            except (OSError, ValueError, TimeoutError) as exc:
                if self.state == "ready":
                    self.restarts += 1
                self.state = "failed" if self.state != "ready" else "restarting"
                self.reason = f"no local model process answers at {self.endpoint}: {exc}"
                self.info = {}
                self._settle()
                await asyncio.sleep(1.0)
                continue
            if self.state != "ready" or info.get("pid") != self.pid:
                self.info = info
                await self._on_ready()
            self._settle()
            await asyncio.sleep(2.0)

    async def _request_info(self) -> dict[str, Any]:
        assert self.socket_path is not None
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_unix_connection(self.socket_path)
            try:
                writer.write(protocol.encode({"op": "info"}))
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
        info = protocol.decode(line).get("info") if line else None
        if not isinstance(info, dict):
            raise ValueError("the model process gave no info")
        return info

    # --- admission --------------------------------------------------------------------------

    def _unavailable(self) -> ProviderError:
        return ProviderError(
            self.reason or "the local model process is not running",
            code="model_unavailable",
            retryable=True,
            status=503,
        )

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        if self.state in ("failed", "restarting"):
            raise self._unavailable()
        if self._admitted >= 1 + self.queue_depth:
            raise ProviderBusy(
                f"the local model is busy: 1 generation running, {self._admitted - 1} waiting",
                retry_after=float(max(1, math.ceil(self._average_seconds))),
            )
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def wait_idle(self) -> None:
        """Wait until no generation of this server is running in the model process."""
        while self._in_flight:  # noqa: ASYNC110 - set from tasks and finally blocks alike
            await asyncio.sleep(0.02)

    # --- tokens -----------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        vocabulary = self._vocabulary
        if vocabulary is None:
            return (len(text) + 3) // 4
        return vocabulary.count(text)

    # --- generation -------------------------------------------------------------------------

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] = (),
        cancellation: Cancellation | None = None,
    ) -> AsyncGenerator[str | GenerationResult, None]:
        """Yield the answer's text as the model process decodes it, then a ``GenerationResult``.

        Closing this generator, or setting ``cancellation``, stops decoding within one token.
        """
        if self.state in ("stopped", "starting"):
            # Started on first use, or still starting: wait for its first answer either way
            # (``start`` waits on the running supervisor instead of starting a second one).
            await self.start()
        if self.state != "ready":
            raise self._unavailable()
        assert self.socket_path is not None
        try:
            reader, writer = await asyncio.open_unix_connection(
                self.socket_path, limit=protocol.LINE_LIMIT
            )
        except OSError as exc:
            raise await self._stopped() from exc
        self._in_flight += 1
        finished = False
        cancellation = cancellation or Cancellation()
        loop = asyncio.get_running_loop()

        def send_cancel() -> None:
            if not writer.is_closing():
                writer.write(protocol.encode({"op": "cancel"}))

        def cancel_soon() -> None:
            loop.call_soon_threadsafe(send_cancel)

        cancellation.on_cancel(cancel_soon)
        started = time.monotonic()
        try:
            request = protocol.generate_request(messages, max_tokens, temperature, stop)
            writer.write(protocol.encode(request))
            await writer.drain()
            while True:
                message = await self._read(reader)
                if "text" in message:
                    yield str(message["text"])
                elif "result" in message:
                    result = protocol.parse_result(message["result"])
                    finished = True
                    self._finished(result, time.monotonic() - started)
                    yield result
                    return
                else:
                    finished = True
                    raise protocol.parse_error(message.get("error") or {})
        finally:
            if finished:
                self._in_flight -= 1
                writer.close()
            else:
                # Closed early (a disconnect, a cancelled task): the process stops decoding
                # when the connection closes; its last line still tells what it did.
                send_cancel()
                self._spawned(self._collect(reader, writer, started))

    async def _read(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            line = await reader.readline()
        except (OSError, ValueError) as exc:
            raise await self._stopped() from exc
        if not line:
            raise await self._stopped()
        return protocol.decode(line)

    async def _collect(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, started: float
    ) -> None:
        try:
            async with asyncio.timeout(30):
                while line := await reader.readline():
                    message = protocol.decode(line)
                    if "result" in message:
                        self._finished(
                            protocol.parse_result(message["result"]), time.monotonic() - started
                        )
                        break
        except (OSError, ValueError, TimeoutError):
            pass
        finally:
            self._in_flight -= 1
            writer.close()

    def _finished(self, result: GenerationResult, seconds: float) -> None:
        if result.stats is not None:
            self.last_generation = result.stats
        if result.finish_reason != "cancelled":
            self._average_seconds = 0.8 * self._average_seconds + 0.2 * seconds

    async def _stopped(self) -> ProviderError:
        """The connection broke: the process died (its supervisor restarts it)."""
        process = self._process
        if process is not None and process.returncode is None:
            # The socket closes a moment before the process can be reaped.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await process.wait()
        return self._stop_error()

    def _stop_error(self) -> ProviderError:
        process = self._process
        detail = (
            describe_exit(process.returncode)
            if process is not None and process.returncode is not None
            else "it stopped answering"
        )
        if self.state == "ready":
            self.state = "restarting"
            self.reason = f"the local model process stopped: {detail}"
        return ProviderError(
            f"the local model process stopped in the middle of the answer ({detail}); "
            "it is being started again",
            code="model_process_stopped",
            retryable=True,
            status=503,
        )

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
        if self.state != "ready" or self.socket_path is None:
            raise self._unavailable()
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(self.socket_path)
        except OSError as exc:
            connection.close()
            raise self._stop_error() from exc
        if cancellation is not None:
            cancellation.on_cancel(lambda: _quietly_shutdown(connection))
        request = protocol.generate_request(messages, max_tokens, temperature, stop)
        with connection, connection.makefile("rb") as lines:
            connection.sendall(protocol.encode(request))
            for line in lines:
                message = protocol.decode(line)
                if "text" in message:
                    yield str(message["text"])
                elif "result" in message:
                    yield protocol.parse_result(message["result"])
                    return
                else:
                    raise protocol.parse_error(message.get("error") or {})
            raise self._stop_error()


def _quietly_shutdown(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_WR)
