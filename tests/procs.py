"""Integration-test harness: real server processes, a private Redis and a raw SSE client.

- ``server_process`` runs ``python -m streamforge serve`` in its own process group, waits for
  ``GET /health`` and never leaves a process behind.
- ``redis_server`` runs a throwaway ``redis-server`` (no persistence) that a test can crash and
  bring back on the same port.
- ``read_sse`` speaks HTTP/1.1 over a plain socket and parses Server-Sent Events by the WHATWG
  rules, so that a test can cut a connection (a TCP reset) right after a given event.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import inspect
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson

STARTUP_TIMEOUT = 60.0
LOG_TAIL_CHARS = 6000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return text if len(text) <= chars else "…" + text[-chars:]


# Process groups started here and not yet known to be gone: killed when the interpreter exits,
# should a test run be interrupted before the context managers could clean up.
_STARTED: set[int] = set()


@atexit.register
def _kill_leftovers() -> None:
    for pgid in list(_STARTED):
        _kill_group(pgid)


def _spawn(
    command: list[str],
    cwd: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    *,
    open_files: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` as the leader of a new process group (and session), its stdout and
    stderr appended to ``log_path``; ``open_files`` caps its descriptors (soft and hard)."""

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if open_files is None else limit,
        )
    _STARTED.add(proc.pid)
    return proc


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    _STARTED.discard(pgid)


def group_pids(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group, from /proc (Linux)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return sorted(found)


async def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:  # noqa: ASYNC109
    """Poll (without blocking the event loop) until the process has exited."""
    deadline = time.monotonic() + timeout
    while (code := proc.poll()) is None:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"process {proc.pid} still running after {timeout} s")
        await asyncio.sleep(0.02)
    return code


# --------------------------------------------------------------------------------------------
# StreamForge server processes


class ServerProcess:
    """A ``streamforge serve`` process (the uvicorn master, leader of its process group)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def group_pids(self) -> list[int]:
        """The live processes of its group: the master and its workers."""
        return group_pids(self.proc.pid)

    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return _tail(self.log_path, chars)

    async def wait(self, timeout: float = 30.0) -> int:  # noqa: ASYNC109
        """The exit code, once the process has ended; TimeoutError after ``timeout``."""
        return await _wait_exit(self.proc, timeout)

    async def terminate(self, timeout: float = 30.0) -> int:  # noqa: ASYNC109
        """SIGTERM to the server (a graceful shutdown) and its exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        return await self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL to the whole process group (the master and any workers): a crash."""
        _kill_group(self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(timeout=10)

    async def close(self) -> None:
        """Stop whatever still runs: SIGTERM, SIGKILL after 10 s, then the whole group."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(TimeoutError):
                    await self.terminate(timeout=10)
        finally:
            # Also the worker processes, should any outlive their master.
            _kill_group(self.proc.pid)
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=10)

    async def wait_healthy(
        self,
        timeout: float = STARTUP_TIMEOUT,  # noqa: ASYNC109
        *,
        require_healthy: bool = True,
    ) -> None:
        """Until ``GET /health`` answers 200 (or anything, when not ``require_healthy``)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        async with httpx.AsyncClient(base_url=self.url, timeout=5, trust_env=False) as client:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"server exited with code {self.proc.returncode} before it was ready; "
                        f"log {self.log_path.name}:\n{self.log_tail()}"
                    )
                try:
                    response = await client.get("/health")
                except httpx.HTTPError as exc:
                    last = repr(exc)
                else:
                    if response.status_code == 200 or not require_healthy:
                        return
                    last = f"{response.status_code} {response.text[:500]}"
                if time.monotonic() >= deadline:
                    raise AssertionError(
                        f"server not ready after {timeout} s (last: {last}); "
                        f"log {self.log_path.name}:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)


def server_command(port: int, workers: int | None = None) -> list[str]:
    command = [sys.executable, "-m", "streamforge", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    if workers is not None:
        command += ["--workers", str(workers)]
    return command


def server_env(tmp_path: Path, name: str, env: Mapping[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "STREAMFORGE_DATA_DIR": str(tmp_path / name / "data"),
        "STREAMFORGE_LLM__PROVIDER": "simulated",
        "STREAMFORGE_EMBEDDINGS__PROVIDER": "simulated",
        "STREAMFORGE_SERVER__LOG_LEVEL": "warning",
        **env,
    }


@asynccontextmanager
async def server_process(
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    *,
    name: str = "server",
    workers: int | None = None,
    port: int | None = None,
    require_healthy: bool = True,
    startup_timeout: float = STARTUP_TIMEOUT,
    open_files: int | None = None,
) -> AsyncIterator[ServerProcess]:
    """A real StreamForge server on 127.0.0.1, stopped (never left behind) on exit.

    ``env`` overrides the defaults (simulated provider and embeddings, a data directory
    ``tmp_path/name/data``, log level warning). The output goes to ``tmp_path/f"{name}.log"``
    (appended, so a second server of the same name keeps the first one's log). ``port``
    reuses a port, e.g. to bring a killed server back where its clients expect it. With
    ``require_healthy=False`` any answer from ``/health`` (also a 503) counts as started.
    ``open_files`` runs it under that limit of open descriptors.
    """
    workdir = tmp_path / name
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / f"{name}.log"
    port = free_port() if port is None else port
    # Its own working directory: no stray .env file of the caller's is read.
    command = server_command(port, workers)
    proc = _spawn(
        command, workdir, log_path, server_env(tmp_path, name, env or {}), open_files=open_files
    )
    server = ServerProcess(proc, port, log_path)
    try:
        await server.wait_healthy(startup_timeout, require_healthy=require_healthy)
        yield server
    finally:
        await server.close()


# --------------------------------------------------------------------------------------------
# Redis


def _resp_command(*args: str | bytes | int | float) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class RedisError(Exception):
    """An error reply from Redis."""


async def _resp_reply(reader: asyncio.StreamReader) -> Any:
    line = await reader.readuntil(b"\r\n")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        return (await reader.readexactly(size + 2))[:-2]
    if kind == b"*":
        count = int(rest)
        if count < 0:
            return None
        return [await _resp_reply(reader) for _ in range(count)]
    raise RedisError(f"unexpected reply {line!r}")


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1 without persistence: a restart loses all data."""

    def __init__(self, workdir: Path, port: int, executable: str) -> None:
        self.workdir = workdir
        self.port = port
        self.executable = executable
        self.log_path = workdir.parent / f"{workdir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def command(
        self,
        *args: str | bytes | int | float,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> Any:
        """One command over a fresh connection (RESP2); bulk strings come back as bytes."""
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                writer.write(_resp_command(*args))
                await writer.drain()
                return await _resp_reply(reader)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def ping(self, timeout: float = 2.0) -> bool:  # noqa: ASYNC109
        try:
            return bool(await self.command("PING", timeout=timeout) == "PONG")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, RedisError):
            return False

    async def start(self, timeout: float = 15.0) -> None:  # noqa: ASYNC109
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--daemonize", "no",
        ]  # fmt: skip
        self.proc = _spawn(command, self.workdir, self.log_path)
        deadline = time.monotonic() + timeout
        while not await self.ping():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"redis-server exited with code {self.proc.returncode}; "
                    f"log:\n{_tail(self.log_path)}"
                )
            if time.monotonic() >= deadline:
                self.kill()
                raise AssertionError(
                    f"redis-server not answering after {timeout} s; log:\n{_tail(self.log_path)}"
                )
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            _kill_group(self.proc.pid)
        self.proc.wait(timeout=10)
        _STARTED.discard(self.proc.pid)

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """SIGTERM (SIGKILL after ``timeout``) and wait until it has exited."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                await _wait_exit(self.proc, timeout)
        self.kill()

    async def restart(self, down_for: float = 0.0) -> None:
        """Crash (kill -9), stay down ``down_for`` seconds, start again on the same port."""
        self.kill()
        if down_for > 0:
            await asyncio.sleep(down_for)
        await self.start()


@asynccontextmanager
async def redis_server(tmp_path: Path, *, name: str = "redis") -> AsyncIterator[RedisServer]:
    """A running private Redis; stopped on exit."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise AssertionError("redis-server is not installed")
    server = RedisServer(tmp_path / name, free_port(), executable)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()


# --------------------------------------------------------------------------------------------
# Server-Sent Events over a raw HTTP/1.1 connection


@dataclass
class Event:
    """One dispatched SSE event. ``id`` is the ``id:`` field of this event's own block."""

    id: str | None
    event: str = "message"
    data: str = ""
    at: float = field(default=0.0, compare=False, repr=False)  # time.perf_counter()

    def json(self) -> Any:
        return orjson.loads(self.data)


class SSEParser:
    """An incremental Server-Sent Events parser (WHATWG HTML, "Parsing an event stream").

    Lines end in CRLF, LF or CR (also split across ``feed`` calls); ``data`` lines are joined
    with ``\\n``; comments are counted; a block with no ``data`` dispatches nothing; whatever
    is pending at the end of the stream is discarded.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self._block_id: str | None = None
        self.last_id: str | None = None  # the "last event ID buffer": what Last-Event-ID sends
        self.retry: int | None = None
        self.comments: list[str] = []

    def feed(self, chunk: bytes) -> list[Event]:
        """Add bytes and return the events they complete."""
        self.push(chunk)
        return list(self.events())

    def push(self, chunk: bytes) -> None:
        """Add bytes without parsing them yet (see ``events``)."""
        self._buffer += chunk

    def events(self) -> Iterator[Event]:
        """Parse the buffered lines lazily: a consumer that stops after an event leaves the
        lines after it unparsed (``last_id`` and ``comments`` stay exact)."""
        while True:
            cr = self._buffer.find(b"\r")
            lf = self._buffer.find(b"\n")
            if cr < 0 and lf < 0:
                return
            if cr >= 0 and (lf < 0 or cr < lf):
                if cr + 1 == len(self._buffer):
                    return  # a CR at the end: wait to see whether an LF follows
                end, skip = cr, 2 if self._buffer[cr + 1 : cr + 2] == b"\n" else 1
            else:
                end, skip = lf, 1
            raw, self._buffer = self._buffer[:end], self._buffer[end + skip :]
            event = self._line(raw)
            if event is not None:
                yield event

    def end(self) -> list[Event]:
        """The end of the stream: a last line ending in a lone CR still counts as a line;
        an event not closed by a blank line is discarded."""
        events: list[Event] = []
        if self._buffer.endswith(b"\r"):
            self._buffer = self._buffer[:-1] + b"\n"
            events = list(self.events())
        self._buffer = b""
        return events

    def _line(self, raw: bytes) -> Event | None:
        if not self._started:
            self._started = True
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        line = raw.decode("utf-8", errors="replace")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:].removeprefix(" "))
            return None
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
                self._block_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        event: Event | None = None
        if self._has_data:
            event = Event(
                id=self._block_id,
                event=self._event or "message",
                data="\n".join(self._data),
                at=time.perf_counter(),
            )
        self._data, self._has_data, self._event, self._block_id = [], False, "", None
        return event


EventCallback = Callable[[Event], Awaitable[None] | None]


@dataclass
class SSEResult:
    status: int
    reason: str
    headers: httpx.Headers
    events: list[Event] = field(default_factory=list)
    pings: int = 0  # comment lines (": ping")
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    last_id: str | None = None  # the last id: field seen, as a browser would resume from
    body: Any = None  # not an event stream: the JSON answer, else its text
    # "complete": the server ended the body; "cut": stop_after reset the connection;
    # "broken": the connection failed mid-body (the server died, a reset, a truncated chunk).
    ended: Literal["complete", "cut", "broken"] = "complete"

    @property
    def text(self) -> str:
        return "".join(e.data for e in self.events if e.event == "message")

    @property
    def deltas(self) -> list[str]:
        return [e.data for e in self.events if e.event == "message"]

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.events if e.id is not None]

    def typed(self, name: str) -> list[dict[str, Any]]:
        return [orjson.loads(e.data) for e in self.events if e.event == name]

    @property
    def session(self) -> dict[str, Any]:
        return self.typed("session")[0]

    @property
    def done(self) -> dict[str, Any]:
        return self.typed("done")[0]


class _Broken(Exception):
    pass


async def _body_chunks(
    reader: asyncio.StreamReader, headers: httpx.Headers
) -> AsyncGenerator[bytes, None]:
    """The response body as it arrives: chunked, Content-Length or until the server closes.

    A truncated body raises ``_Broken``."""
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers
                    return
                data = await reader.readexactly(size)
                if await reader.readexactly(2) != b"\r\n":
                    raise _Broken("bad chunk terminator")
                yield data
        elif "content-length" in headers:
            remaining = int(headers["content-length"])
            while remaining > 0:
                data = await reader.read(min(remaining, 65536))
                if not data:
                    raise _Broken(f"{remaining} bytes missing")
                remaining -= len(data)
                yield data
        else:
            while data := await reader.read(65536):
                yield data
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
        raise _Broken(repr(exc)) from exc


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close at once with a TCP RST (SO_LINGER 0), dropping anything unread or unsent."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def read_sse(
    url: str,
    method: str = "GET",
    *,
    json: Any = None,
    content: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    stop_after: int | None = None,
    on_event: EventCallback | None = None,
    timeout: float = 60.0,  # noqa: ASYNC109
) -> SSEResult:
    """One HTTP/1.1 request on its own connection, its answer parsed as Server-Sent Events.

    ``stop_after=N``: once N events carrying an ``id`` have arrived, reset the connection
    (SO_LINGER 0) and return exactly what was read (0: right after the answer's head).
    ``on_event`` (sync or async) sees each event as it arrives, before the next one is read.
    An answer that is not ``text/event-stream`` is read whole into ``body`` (JSON when it
    parses, else text).
    Raises TimeoutError when the whole exchange takes longer than ``timeout``, and
    ConnectionError (refused, or closed before an answer's status line) when no answer came;
    a connection that breaks during the body ends the result instead (``ended="broken"``).
    """
    if stop_after is not None and stop_after < 0:
        raise ValueError(f"stop_after must be 0 or more, not {stop_after}")
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"read_sse speaks plain http only: {url}")
    host, port = parts.hostname, parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    payload: bytes | None = None
    request_headers = {
        "Host": parts.netloc,
        "Accept": "text/event-stream",
        "Cache-Control": "no-cache",
        "User-Agent": "streamforge-tests",
    }
    if json is not None:
        payload = orjson.dumps(json)
        request_headers["Content-Type"] = "application/json"
    elif content is not None:
        payload = content.encode() if isinstance(content, str) else content
    if payload is not None or method.upper() in ("POST", "PUT", "PATCH"):
        request_headers["Content-Length"] = str(len(payload or b""))
    lowered = {key.lower() for key in (headers or {})}
    request_headers = {k: v for k, v in request_headers.items() if k.lower() not in lowered}
    request_headers.update(headers or {})
    request_headers["Connection"] = "close"
    head = f"{method.upper()} {target} HTTP/1.1\r\n" + "".join(
        f"{key}: {value}\r\n" for key, value in request_headers.items()
    )

    writer: asyncio.StreamWriter | None = None
    clean = False
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(head.encode("latin-1") + b"\r\n" + (payload or b""))
            await writer.drain()
            result = await _read_response(reader, writer, method, stop_after, on_event)
            clean = result.ended == "complete"
            return result
    finally:
        if writer is not None:
            if clean:
                writer.close()
            elif not writer.transport.is_closing():
                _reset(writer)
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _read_response(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    method: str,
    stop_after: int | None,
    on_event: EventCallback | None,
) -> SSEResult:
    while True:
        try:
            status_line = (await reader.readuntil(b"\r\n")).decode("latin-1").rstrip("\r\n")
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError("the connection closed before an answer came") from exc
        _, status_text, reason = [*status_line.split(" ", 2), "", ""][:3]
        status = int(status_text)
        raw_headers: list[tuple[str, str]] = []
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            key, _, value = line.decode("latin-1").partition(":")
            raw_headers.append((key.strip(), value.strip()))
        if status >= 200 or status == 101:
            break  # 1xx interim answers (100 Continue) are skipped
    result = SSEResult(status, reason, httpx.Headers(raw_headers))
    if status in (204, 304) or 100 <= status < 200 or method.upper() == "HEAD":
        return result

    chunks = _body_chunks(reader, result.headers)
    content_type = result.headers.get("content-type", "")
    parser = SSEParser()
    try:
        if not content_type.startswith("text/event-stream"):
            body = b"".join([chunk async for chunk in chunks])
            try:
                result.body = orjson.loads(body)
            except orjson.JSONDecodeError:
                result.body = body.decode("utf-8", errors="replace")
            return result
        if stop_after == 0:
            result.ended = "cut"
            _reset(writer)
            return result
        with_id = 0
        async for chunk in chunks:
            parser.push(chunk)
            for event in parser.events():
                result.events.append(event)
                with_id += event.id is not None
                if on_event is not None:
                    outcome = on_event(event)
                    if inspect.isawaitable(outcome):
                        await outcome
                if stop_after is not None and with_id >= stop_after:
                    result.ended = "cut"
                    _reset(writer)
                    return result
        for event in parser.end():
            result.events.append(event)
            if on_event is not None:
                outcome = on_event(event)
                if inspect.isawaitable(outcome):
                    await outcome
        return result
    except _Broken:
        result.ended = "broken"
        return result
    finally:
        await chunks.aclose()
        result.last_id = parser.last_id
        result.retry = parser.retry
        result.comments = list(parser.comments)
        result.pings = len(parser.comments)
