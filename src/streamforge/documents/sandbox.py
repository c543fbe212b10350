"""Extraction in a child process, so a hostile file costs a failure reason, not the server.

The cheap checks (name, leading bytes) run here; the parser runs in
``python -m streamforge.documents.worker`` under a wall-clock timeout enforced here and, where
the ``resource`` module exists, address-space and CPU limits the worker sets on itself. However
the await ends (result, timeout, crash, cancellation) the child is killed and reaped before it
returns, so no process, pipe or transport outlives the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamforge.documents.extract import (
    Extracted,
    ExtractionFailed,
    check_filename,
    claimed_format,
    sniff,
)

logger = logging.getLogger(__name__)

WORKER_MODULE = "streamforge.documents.worker"
# The directory holding the ``streamforge`` package, for the child's import path.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_INHERITED = frozenset(
    (
        "PATH",
        "PYTHONPATH",
        "PYTHONHOME",
        "LD_LIBRARY_PATH",
        "DYLD_LIBRARY_PATH",
        "SYSTEMROOT",
        "TEMP",
        "TMP",
        "TMPDIR",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
    )
)
# Above this, decoding and JSON parsing leave the event loop for a thread.
_INLINE_BYTES = 1 << 20


@dataclass(frozen=True)
class Limits:
    timeout: float = 30.0
    memory_mb: int = 512
    max_chars: int = 5_000_000
    max_pages: int = 2000


def worker_command() -> list[str]:
    # -P: the working directory must not shadow a parser module with a file of the same name.
    return [sys.executable, "-P", "-m", WORKER_MODULE]


async def extract_isolated(data: bytes, filename: str, limits: Limits) -> Extracted:
    """The text of an uploaded file, parsed in a child process; ExtractionFailed otherwise."""
    fmt = claimed_format(check_filename(filename))
    if len(data) > _INLINE_BYTES:
        await asyncio.to_thread(sniff, data, fmt)
    else:
        sniff(data, fmt)
    header = {
        "format": fmt,
        "max_chars": limits.max_chars,
        "max_pages": limits.max_pages,
        "memory_mb": limits.memory_mb,
        "timeout": limits.timeout,
    }
    request = json.dumps(header).encode() + b"\n" + data
    process = await asyncio.create_subprocess_exec(
        *worker_command(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_child_environment(),
    )
    try:
        async with asyncio.timeout(limits.timeout):
            stdout, stderr = await process.communicate(request)
    except TimeoutError:
        raise ExtractionFailed(_timeout_reason(limits)) from None
    finally:
        await _kill_and_reap(process)
    assert process.returncode is not None
    return await _outcome(process.returncode, stdout, stderr, limits)


async def _kill_and_reap(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # exited since the check
            process.kill()
    # Returns once the child has exited and its pipes are closed, which closes the transport.
    await process.wait()


async def _outcome(returncode: int, stdout: bytes, stderr: bytes, limits: Limits) -> Extracted:
    result: Any = None
    if returncode == 0 and stdout:
        try:
            if len(stdout) > _INLINE_BYTES:
                result = await asyncio.to_thread(json.loads, stdout)
            else:
                result = json.loads(stdout)
        except ValueError:
            result = None
    if isinstance(result, dict):
        text, media_type, pages = result.get("text"), result.get("media_type"), result.get("pages")
        if result.get("ok") is True and isinstance(text, str) and isinstance(media_type, str):
            return Extracted(
                text,
                media_type,
                pages if isinstance(pages, int) else None,
                _page_starts(result.get("page_starts"), len(text)),
            )
        reason = result.get("reason")
        if result.get("ok") is False and isinstance(reason, str):
            raise ExtractionFailed(reason)
    raise ExtractionFailed(_death_reason(returncode, stderr, limits))


def _page_starts(value: Any, length: int) -> tuple[int, ...] | None:
    """The worker's page starts, if they are what they claim: ascending offsets from 0."""
    if not isinstance(value, list) or not value:
        return None
    if not all(type(start) is int for start in value) or value[0] != 0:
        return None
    if any(a > b for a, b in itertools.pairwise(value)) or value[-1] > length + 2:
        return None
    return tuple(value)


def _death_reason(returncode: int, stderr: bytes, limits: Limits) -> str:
    tail = stderr[-2000:].decode("utf-8", "replace")
    logger.warning("document worker ended with status %s: %s", returncode, tail.strip())
    memory = f"parsing needed more than {limits.memory_mb} MB of memory"
    if "MemoryError" in tail or "Cannot allocate memory" in tail or "bad_alloc" in tail:
        return memory
    if returncode < 0:
        number = -returncode
        if number == getattr(signal, "SIGXCPU", None):
            return _timeout_reason(limits)
        if number == getattr(signal, "SIGKILL", None):  # the kernel's out-of-memory killer
            return memory
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"the parser crashed on this file ({name})"
    if returncode == 0:
        return "the parser returned no result"
    return f"the parser stopped unexpectedly (exit status {returncode})"


def _timeout_reason(limits: Limits) -> str:
    return f"parsing took longer than {limits.timeout:g} s"


def _child_environment() -> dict[str, str]:
    """What the interpreter needs to start, and no more: the parent's secrets stay out of reach
    of a parser that a file might subvert."""
    env = {name: value for name, value in os.environ.items() if name in _INHERITED}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PACKAGE_ROOT if not path else _PACKAGE_ROOT + os.pathsep + path
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def serve_command(memory_mb: int) -> list[str]:
    return [*worker_command(), "--serve", str(int(memory_mb))]


# Files one warm process parses before it is replaced anyway.
_RECYCLE_AFTER = 500
_STDERR_TAIL = 4000


class WarmSandbox:
    """One parser process kept running while ingestion has work, instead of one per file.

    Starting an interpreter costs about 0.1 s of CPU, longer than parsing a typical text file
    and taking that time from the embedder on a small machine. The process is the same
    sandbox (``worker.py --serve``: its own limits, a scrubbed environment), and it is
    replaced whenever a file times out, crashes it or fails for memory, when a file of a
    different owner comes (no owner's file is ever parsed where another's was), after
    ``_RECYCLE_AFTER`` files, and when ingestion goes idle (``aclose``), so no parser
    process outlives the work.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._process: asyncio.subprocess.Process | None = None
        self._owner: str | None = None
        self._served = 0
        self._stderr: bytearray = bytearray()
        self._drain: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def extract(self, data: bytes, filename: str, owner: str) -> Extracted:
        fmt = claimed_format(check_filename(filename))
        if len(data) > _INLINE_BYTES:
            await asyncio.to_thread(sniff, data, fmt)
        else:
            sniff(data, fmt)
        header = {
            "format": fmt,
            "max_chars": self.limits.max_chars,
            "max_pages": self.limits.max_pages,
            "timeout": self.limits.timeout,
            "length": len(data),
        }
        async with self._lock:
            process = await self._ready(owner)
            assert process.stdin is not None and process.stdout is not None
            try:
                async with asyncio.timeout(self.limits.timeout):
                    process.stdin.write(json.dumps(header).encode() + b"\n" + data)
                    await process.stdin.drain()
                    line = await process.stdout.readline()
            except TimeoutError:
                await self._discard()
                raise ExtractionFailed(_timeout_reason(self.limits)) from None
            except (ConnectionError, ValueError):  # the process died or answered too much
                line = b""
            except BaseException:
                await self._discard()
                raise
            self._served += 1
            if not line.endswith(b"\n"):
                await self._discard()
                assert process.returncode is not None
                raise ExtractionFailed(
                    _death_reason(process.returncode, bytes(self._stderr), self.limits)
                )
            try:
                return await _outcome(0, line, b"", self.limits)
            except ExtractionFailed as exc:
                if "memory" in exc.reason:  # a process that ran out of memory is not trusted
                    await self._discard()
                raise

    async def _ready(self, owner: str) -> asyncio.subprocess.Process:
        process = self._process
        if (
            process is not None
            and process.returncode is None
            and self._owner == owner
            and self._served < _RECYCLE_AFTER
        ):
            return process
        await self._discard()
        process = await asyncio.create_subprocess_exec(
            *serve_command(self.limits.memory_mb),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_child_environment(),
            # One answer is one line holding the whole text, JSON-escaped.
            limit=max(1 << 20, self.limits.max_chars * 8),
        )
        self._process, self._owner, self._served = process, owner, 0
        self._stderr = bytearray()
        self._drain = asyncio.create_task(self._keep_stderr_tail(process))
        return process

    async def _keep_stderr_tail(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        while chunk := await process.stderr.read(4096):
            self._stderr += chunk
            del self._stderr[:-_STDERR_TAIL]

    async def _discard(self) -> None:
        process, drain = self._process, self._drain
        self._process = self._drain = None
        if process is None:
            return
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        await _kill_and_reap(process)
        if drain is not None:
            with contextlib.suppress(Exception):
                await drain

    async def aclose(self) -> None:
        """Stop the process (ingestion is idle, or the server stops)."""
        async with self._lock:
            await self._discard()
