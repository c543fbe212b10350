"""Stream load: many concurrent streams, memory per idle stream, and abrupt disconnects.

Three measurements, each against a fresh uvicorn worker (simulated provider, a fresh SQLite
data directory, the embedder simulated so no model is loaded), with the clients in this
process on raw asyncio sockets:

1. Concurrent streams. ``--streams`` ``POST /chat`` streams are opened (at most
   ``--open-concurrency`` waiting for their first event at a time) and held to the end. The
   provider sends a word every ``--delay`` seconds and the server a ``: ping`` after
   ``--heartbeat`` seconds of silence, so heartbeats flow between the words. Every stream must
   end with ``event: done`` and ``"status": "completed"``, its text must be the expected answer
   (``{message}`` in the answer makes it different per stream), and it must have received at
   least one ping. All streams must have been open at the same time.
2. Memory per idle stream. The provider waits a day before its first word, so no tokens flow.
   After a warm-up (streams opened and reset, then the server is idle again) the worker's
   resident memory is read from /proc; ``--idle`` streams are opened and held until each has
   received a ping; the memory is read again. ``(after - before) / streams`` is the cost of an
   idle stream. The same is measured on ``bare_sse.py`` (a plain Starlette
   ``StreamingResponse`` under the same uvicorn), the least an idle SSE stream costs.
3. Abrupt disconnects. Rounds of ``--disconnects`` streams: all are opened, and once each has
   its first event every socket is closed with SO_LINGER 0 (the kernel sends a reset). After
   each round, once ``streamforge_active_streams`` is 0 and the task count has settled, the
   tasks alive on the server's loop and its resident memory are compared with a baseline
   taken the same way after one warm-up round.

Run from the repository root (the defaults are the targets)::

    python benchmarks/stream_load.py --streams 2000 --idle 10000 --rounds 10 --disconnects 500

It prints a table per measurement, the targets, and one JSON line; it exits with 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _client import (
    HOST,
    StreamError,
    free_port,
    load_average,
    percentile,
    post_request,
    process_cpu_seconds,
    read_chunk,
    read_head,
    run_async,
    start_process,
    stop_server,
    uvicorn_command,
    wait_until_healthy,
)

BENCHMARKS = Path(__file__).resolve().parent

TARGET_KB_PER_IDLE_STREAM = 50.0
TARGET_RECOVERY = 1.05  # tasks and memory after each round, over the baseline
# {message} is replaced by the request's message, so every stream has an answer of its own.
ANSWER = (
    "Stream {message} reporting: the quick brown fox jumps over the lazy dog, and every "
    "word of this answer arrives as its own server-sent event."
)
IDLE_DELAY = 86_400.0  # the simulated provider's first word comes after a day
OPEN_TIMEOUT = 120.0  # from queuing to open a stream until its first event
SETTLE_TIMEOUT = 120.0  # for the server to report no active streams
WARMUP_STREAMS = 50  # opened and reset before the idle "before" reading
HTTP_TIMEOUT = 30.0  # for GET /metrics


# --- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    data_dir: str
    has_metrics: bool

    @property
    def pid(self) -> int:
        return self.process.pid


async def start_streamforge(
    *,
    delay: float,
    heartbeat: float,
    words: int,
    first_token_timeout: float | None = None,
    retention: float | None = None,
) -> Server:
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="streamforge-load-")
    env = {
        "STREAMFORGE_DATA_DIR": data_dir,
        "STREAMFORGE_LLM__PROVIDER": "simulated",
        "STREAMFORGE_EMBEDDINGS__PROVIDER": "simulated",
        "STREAMFORGE_STREAMING__SIMULATED_DELAY": repr(delay),
        "STREAMFORGE_STREAMING__HEARTBEAT_INTERVAL": repr(heartbeat),
        "STREAMFORGE_LLM__SIMULATED__MIN_WORDS": str(words),
        "STREAMFORGE_LLM__SIMULATED__ANSWER": ANSWER,
    }
    if first_token_timeout is not None:
        env["STREAMFORGE_LLM__FIRST_TOKEN_TIMEOUT"] = repr(first_token_timeout)
    if retention is not None:
        env["STREAMFORGE_STREAMING__RETENTION"] = repr(retention)
    process = start_process(uvicorn_command("streamforge.main:app", port), env=env, cwd=data_dir)
    server = Server("streamforge", process, port, data_dir, has_metrics=True)
    await _wait_healthy(server)
    return server


async def start_bare(*, heartbeat: float) -> Server:
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="bare-sse-load-")
    command = [*uvicorn_command("bare_sse:app", port), "--app-dir", str(BENCHMARKS)]
    env = {"BARE_SSE_HEARTBEAT_INTERVAL": repr(heartbeat)}
    process = start_process(command, env=env, cwd=data_dir)
    server = Server("bare Starlette", process, port, data_dir, has_metrics=False)
    await _wait_healthy(server)
    return server


async def _wait_healthy(server: Server) -> None:
    try:
        await wait_until_healthy(server.process, server.port)
    except BaseException:
        stop(server, kill=True)
        raise


def stop(server: Server, *, kill: bool = False) -> None:
    """Stop the server (``kill``: at once, without a graceful shutdown) and remove its data
    directory."""
    if kill and server.process.poll() is None:
        server.process.kill()
        server.process.wait()
    stop_server(server.process)
    shutil.rmtree(server.data_dir, ignore_errors=True)


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and its parts (RssAnon, RssFile, RssShmem) in KiB, from /proc/PID/status."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                values[name] = int(rest.split()[0])
    return values


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    async with asyncio.timeout(HTTP_TIMEOUT):
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(
                b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                % (path.encode(), HOST.encode())
            )
            status, headers = await read_head(reader)
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                parts = []
                while chunk := await read_chunk(reader):
                    parts.append(chunk)
                body = b"".join(parts)
            elif b"content-length" in headers:
                body = await reader.readexactly(int(headers[b"content-length"]))
            else:
                body = await reader.read()
            return status, body
        finally:
            writer.close()


async def scrape(port: int) -> dict[str, float]:
    """``GET /metrics``: every sample by its name (with labels, as written)."""
    status, body = await http_get(port, "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    samples: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


ACTIVE = "streamforge_active_streams"
TASKS = "streamforge_event_loop_tasks"
DISCONNECTS = "streamforge_disconnects_total"


# --- the client ------------------------------------------------------------------------------


def expected_answer(message: str, min_words: int) -> tuple[str, int]:
    """The text and word count the simulated provider streams for ``message``."""
    answer = ANSWER.replace("{message}", message)
    words = len(answer.split())
    repeats = max(1, -(-min_words // words))
    return " ".join([answer] * repeats), words * repeats


@dataclass
class Counters:
    """Shared by the streams of one measurement."""

    opened: int = 0  # received their first event
    open_now: int = 0  # received their first event and not yet their last
    peak_open: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    first_event_s: list[float] = field(default_factory=list)
    last_first_event: float = 0.0  # perf_counter() when the last stream opened

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


class Stream:
    """One ``POST /chat`` connection and what its SSE body has said so far."""

    __slots__ = (
        "done",
        "kinds",
        "last_id",
        "parts",
        "pending",
        "pings",
        "reader",
        "usage",
        "writer",
    )

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pending = b""
        self.last_id = 0
        self.pings = 0
        self.parts: list[bytes] = []
        self.kinds: list[bytes] = []  # event types other than text deltas, in order
        self.usage: dict[str, Any] | None = None
        self.done: dict[str, Any] | None = None

    def feed(self, data: bytes) -> None:
        self.pending += data
        if b"\n\n" not in self.pending:
            return
        *blocks, self.pending = self.pending.split(b"\n\n")
        for block in blocks:
            self._block(block)

    def _block(self, block: bytes) -> None:
        event_id: int | None = None
        kind = b"message"
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b":"):
                if line == b": ping":
                    self.pings += 1
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"id":
                event_id = int(value)
            elif name == b"event":
                kind = value
            elif name == b"data":
                data.append(value)
            elif name != b"retry":
                raise StreamError(f"unexpected field {name!r}")
        if event_id is None:
            if data:
                raise StreamError("event without an id")
            return
        if event_id <= self.last_id:
            raise StreamError("event ids not increasing")
        if self.done is not None:
            raise StreamError("event after done")
        self.last_id = event_id
        if kind == b"message":
            self.parts.append(b"\n".join(data))
            return
        if not self.kinds and kind != b"session":
            raise StreamError(f"first event is {kind.decode()!r}, not session")
        self.kinds.append(kind)
        if kind == b"usage":
            self.usage = json.loads(b"\n".join(data))
        elif kind == b"done":
            self.done = json.loads(b"\n".join(data))

    async def read_more(self) -> bool:
        """Read one body chunk; False at the end of the body."""
        data = await read_chunk(self.reader)
        if not data:
            return False
        self.feed(data)
        return True

    @property
    def text(self) -> str:
        return b"".join(self.parts).decode("utf-8")

    def reset(self) -> None:
        """Close abruptly: SO_LINGER 0 makes the kernel send a reset instead of a FIN."""
        transport = self.writer.transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def close(self) -> None:
        self.writer.close()


async def open_stream(
    port: int, message: str, gate: asyncio.Semaphore, counters: Counters
) -> Stream | None:
    """Connect, send ``POST /chat`` and read up to the first event; None on an error (counted).

    At most ``gate``'s value of streams are between connecting and their first event."""
    body = json.dumps({"message": message}).encode()
    request = post_request(port, "/chat", body, keep_alive=True)
    async with gate:
        stream: Stream | None = None
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                started = time.perf_counter()
                reader, writer = await asyncio.open_connection(HOST, port)
                stream = Stream(reader, writer)
                writer.write(request)
                status, headers = await read_head(reader)
                if status != 200:
                    raise StreamError(f"status {status}")
                if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
                    raise StreamError("response is not chunked")
                while stream.last_id == 0:
                    if not await stream.read_more():
                        raise StreamError("body ended before the first event")
                counters.last_first_event = time.perf_counter()
                counters.first_event_s.append(counters.last_first_event - started)
        except (StreamError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            counters.error(str(exc) if isinstance(exc, StreamError) else type(exc).__name__)
        except TimeoutError:
            counters.error("no first event in time")
        else:
            counters.opened += 1
            counters.open_now += 1
            counters.peak_open = max(counters.peak_open, counters.open_now)
            return stream
        if stream is not None:
            stream.reset()
        return None


async def sample_while(
    port: int,
    pid: int,
    running: Callable[[], bool],
    on_sample: Callable[[dict[str, float], dict[str, int]], None],
    interval: float = 1.0,
) -> None:
    """Scrape /metrics and /proc every ``interval`` until ``running()`` is false."""
    while running():
        try:
            metrics = await scrape(port)
        except (OSError, RuntimeError, TimeoutError, ValueError):
            pass
        else:
            on_sample(metrics, memory_kb(pid))
        await asyncio.sleep(interval)


def _seconds(values: Sequence[float], fraction: float) -> float | None:
    value = percentile(values, fraction)
    return None if value is None else round(value, 3)


# --- 1. concurrent streams -------------------------------------------------------------------


async def concurrent_streams(args: argparse.Namespace) -> dict[str, Any]:
    n = args.streams
    server = await start_streamforge(delay=args.delay, heartbeat=args.heartbeat, words=args.words)
    counters = Counters()
    gate = asyncio.Semaphore(args.open_concurrency)
    completed = 0
    pings: list[int] = []
    peak: dict[str, float] = {"active": 0, "tasks": 0, "rss_kb": 0}
    running = True

    def on_sample(metrics: dict[str, float], memory: dict[str, int]) -> None:
        if metrics.get(ACTIVE, 0) >= peak["active"]:
            peak["active"] = metrics.get(ACTIVE, 0)
            peak["tasks"] = metrics.get(TASKS, 0)
        peak["rss_kb"] = max(peak["rss_kb"], memory["VmRSS"])

    async def one(index: int) -> None:
        nonlocal completed
        message = f"s{index}"
        stream = await open_stream(server.port, message, gate, counters)
        if stream is None:
            return
        expected, words = expected_answer(message, args.words)
        try:
            while await stream.read_more():
                pass
            if stream.done is None:
                raise StreamError("no done event")
            if stream.done.get("status") != "completed":
                raise StreamError(f"done status {stream.done.get('status')!r}")
            if stream.text != expected:
                raise StreamError("text is not the expected answer")
            if stream.usage is None or stream.usage.get("completion_tokens") != words:
                raise StreamError("usage does not count the answer's words")
            if stream.pings < 1:
                raise StreamError("no heartbeat received")
            completed += 1
            pings.append(stream.pings)
        except StreamError as exc:
            counters.error(str(exc))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            counters.error(type(exc).__name__)
        finally:
            counters.open_now -= 1
            stream.close()

    try:
        cpu_server = process_cpu_seconds(server.pid)
        cpu_client = time.process_time()
        started = time.perf_counter()
        sampler = asyncio.create_task(
            sample_while(server.port, server.pid, lambda: running, on_sample)
        )
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - started
        running = False
        await sampler
        cpu_server_end = process_cpu_seconds(server.pid)
        cpu_client = time.process_time() - cpu_client
        after = await scrape(server.port)
    finally:
        stop(server)
    open_s = counters.last_first_event - started if counters.opened else None
    server_cpu = (
        cpu_server_end - cpu_server
        if cpu_server is not None and cpu_server_end is not None
        else None
    )
    stream_s = expected_answer("s0", args.words)[1] * args.delay
    met = (
        counters.errors == 0
        and completed == n
        and counters.peak_open == n
        and min(pings, default=0) >= 1
    )
    return {
        "streams": n,
        "delay_s": args.delay,
        "heartbeat_s": args.heartbeat,
        "words": expected_answer("s0", args.words)[1],
        "stream_s": round(stream_s, 1),
        "open_concurrency": args.open_concurrency,
        "opening_s": None if open_s is None else round(open_s, 2),
        "opening_per_s": None if not open_s else round(n / open_s, 1),
        "first_event_p50_s": _seconds(counters.first_event_s, 0.5),
        "first_event_p99_s": _seconds(counters.first_event_s, 0.99),
        "elapsed_s": round(elapsed, 1),
        "completed": completed,
        "peak_open_client": counters.peak_open,
        "peak_active_server": int(peak["active"]),
        "tasks_at_peak": int(peak["tasks"]),
        "peak_rss_mb": round(peak["rss_kb"] / 1024, 1),
        "pings_min": min(pings, default=0),
        "pings_total": sum(pings),
        "streams_completed_metric": after.get('streamforge_streams_total{status="completed"}'),
        "errors": counters.errors,
        "error_kinds": counters.error_kinds,
        "server_cpu_pct": None if server_cpu is None else round(100 * server_cpu / elapsed, 1),
        "client_cpu_pct": round(100 * cpu_client / elapsed, 1),
        "target_met": met,
    }


# --- 2. memory per idle stream ---------------------------------------------------------------


async def settle(server: Server) -> dict[str, float]:
    """Wait until the server has no active stream and its task count holds still."""
    if not server.has_metrics:
        await asyncio.sleep(2.0)
        return {}
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        metrics = await scrape(server.port)
        if metrics[ACTIVE] == 0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{metrics[ACTIVE]:.0f} streams still active")
        await asyncio.sleep(0.1)
    # The request tasks end just after their producers; wait for two equal readings.
    previous = metrics[TASKS]
    for _ in range(25):
        await asyncio.sleep(0.2)
        metrics = await scrape(server.port)
        if metrics[TASKS] == previous and metrics[ACTIVE] == 0:
            break
        previous = metrics[TASKS]
    return metrics


async def open_many(
    server: Server, n: int, concurrency: int, counters: Counters, prefix: str
) -> tuple[list[Stream], float]:
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    opened = await asyncio.gather(
        *(open_stream(server.port, f"{prefix}{i}", gate, counters) for i in range(n))
    )
    return [s for s in opened if s is not None], time.perf_counter() - started


async def follow(stream: Stream, counters: Counters, pinged: Callable[[], None]) -> None:
    """Keep reading an idle stream until the body ends or the task is cancelled; ``pinged()``
    is called on its first ping."""
    first = True
    try:
        while await stream.read_more():
            if first and stream.pings:
                first = False
                pinged()
        counters.error("idle stream ended")
    except (StreamError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        counters.error(type(exc).__name__)


async def idle_memory(server: Server, n: int, concurrency: int, heartbeat: float) -> dict[str, Any]:
    """Memory of ``n`` idle streams on ``server`` (stopped at the end)."""
    streams: list[Stream] = []
    followers: list[asyncio.Task[None]] = []
    try:
        warm = Counters()
        warmup, _ = await open_many(server, WARMUP_STREAMS, concurrency, warm, "w")
        for stream in warmup:
            stream.reset()
        await settle(server)
        await asyncio.sleep(1.0)
        before = memory_kb(server.pid)
        before_metrics = await scrape(server.port) if server.has_metrics else {}

        counters = Counters()
        streams, open_s = await open_many(server, n, concurrency, counters, "i")
        # Held until every stream has had a heartbeat: the server still serves all of them.
        all_pinged = asyncio.Event()
        waiting = len(streams)

        def pinged() -> None:
            nonlocal waiting
            waiting -= 1
            if waiting == 0:
                all_pinged.set()

        followers = [asyncio.create_task(follow(s, counters, pinged)) for s in streams]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3 * heartbeat + 30):
                await all_pinged.wait()
        held = sum(1 for s in streams if s.pings > 0)
        after = memory_kb(server.pid)
        after_metrics = await scrape(server.port) if server.has_metrics else {}
        # Taken before the server stops: its end would count as an error of every stream.
        errors, error_kinds = counters.errors, dict(counters.error_kinds)
    finally:
        stop(server, kill=True)  # nothing to finish
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        for stream in streams:
            stream.reset()
    per_stream = (after["VmRSS"] - before["VmRSS"]) / n
    return {
        "server": server.name,
        "streams": n,
        "opened": counters.opened,
        "held_with_ping": held,
        "opening_s": round(open_s, 2),
        "opening_per_s": round(n / open_s, 1),
        "first_event_p50_s": _seconds(counters.first_event_s, 0.5),
        "first_event_p99_s": _seconds(counters.first_event_s, 0.99),
        "rss_before_mb": round(before["VmRSS"] / 1024, 1),
        "rss_after_mb": round(after["VmRSS"] / 1024, 1),
        "kb_per_stream": round(per_stream, 2),
        "anon_kb_per_stream": round((after["RssAnon"] - before["RssAnon"]) / n, 2),
        "file_kb_per_stream": round((after["RssFile"] - before["RssFile"]) / n, 2),
        "active_streams": after_metrics.get(ACTIVE),
        "tasks_before": before_metrics.get(TASKS),
        "tasks_after": after_metrics.get(TASKS),
        "errors": errors,
        "error_kinds": error_kinds,
    }


async def idle_streams(args: argparse.Namespace) -> dict[str, Any]:
    streamforge = await start_streamforge(
        delay=IDLE_DELAY,
        heartbeat=args.idle_heartbeat,
        words=0,
        # The provider stays silent on purpose; it must not count as failed meanwhile.
        first_token_timeout=2 * IDLE_DELAY,
    )
    ours = await idle_memory(streamforge, args.idle, args.open_concurrency, args.idle_heartbeat)
    bare = await start_bare(heartbeat=args.idle_heartbeat)
    reference = await idle_memory(bare, args.idle, args.open_concurrency, args.idle_heartbeat)
    ratio = (
        ours["kb_per_stream"] / reference["kb_per_stream"] if reference["kb_per_stream"] else None
    )
    met = (
        ours["errors"] == 0
        and ours["held_with_ping"] == args.idle
        and ours["kb_per_stream"] <= TARGET_KB_PER_IDLE_STREAM
    )
    return {
        "heartbeat_s": args.idle_heartbeat,
        "streamforge": ours,
        "bare": reference,
        "ratio": None if ratio is None else round(ratio, 2),
        "target_kb": TARGET_KB_PER_IDLE_STREAM,
        "target_met": met,
    }


# --- 3. abrupt disconnects -------------------------------------------------------------------


async def disconnect_round(
    server: Server, n: int, concurrency: int, prefix: str, expiry: float
) -> dict[str, Any]:
    counters = Counters()
    streams, open_s = await open_many(server, n, concurrency, counters, prefix)
    for stream in streams:
        stream.reset()
    reset_at = time.perf_counter()
    metrics = await settle(server)
    drained = time.perf_counter() - reset_at
    # The interrupted streams stay resumable for the retention time; measure after it.
    await asyncio.sleep(expiry)
    metrics = await settle(server)
    memory = memory_kb(server.pid)
    return {
        "opened": counters.opened,
        "opening_s": round(open_s, 2),
        "drain_s": round(drained, 2),
        "tasks": int(metrics[TASKS]),
        "rss_kb": memory["VmRSS"],
        "anon_kb": memory["RssAnon"],
        "file_kb": memory["RssFile"],
        "disconnects": int(metrics.get(DISCONNECTS, 0)),
        "errors": counters.errors,
        "error_kinds": counters.error_kinds,
    }


async def disconnects(args: argparse.Namespace) -> dict[str, Any]:
    server = await start_streamforge(
        delay=args.disconnect_delay,
        heartbeat=args.heartbeat,
        words=args.disconnect_words,
        retention=args.retention,
    )
    # The event log's sweeper runs every retention/4 seconds (at least 1 s).
    expiry = 0.0 if args.retention is None else args.retention + max(args.retention / 4, 1) + 1
    rounds: list[dict[str, Any]] = []
    try:
        start = await settle(server)
        fresh = memory_kb(server.pid)
        warmup = await disconnect_round(
            server, args.disconnects, args.open_concurrency, "w", expiry
        )
        await asyncio.sleep(1.0)
        metrics = await settle(server)
        memory = memory_kb(server.pid)
        baseline = {
            "tasks": int(metrics[TASKS]),
            "rss_kb": memory["VmRSS"],
            "anon_kb": memory["RssAnon"],
            "file_kb": memory["RssFile"],
            "disconnects": int(metrics.get(DISCONNECTS, 0)),
        }
        previous = baseline["disconnects"]
        for index in range(args.rounds):
            result = await disconnect_round(
                server, args.disconnects, args.open_concurrency, f"r{index}-", expiry
            )
            result["round"] = index + 1
            result["tasks_ratio"] = round(result["tasks"] / baseline["tasks"], 4)
            result["rss_ratio"] = round(result["rss_kb"] / baseline["rss_kb"], 4)
            result["new_disconnects"] = result["disconnects"] - previous
            previous = result["disconnects"]
            rounds.append(result)
            print(
                f"round {index + 1:2}: {result['opened']} opened in {result['opening_s']:.1f} s, "
                f"{result['new_disconnects']} disconnects seen, drained in "
                f"{result['drain_s']:.1f} s; tasks {result['tasks']} "
                f"({result['tasks_ratio']:.3f}), RSS {result['rss_kb'] / 1024:.1f} MB "
                f"({result['rss_ratio']:.3f})",
                flush=True,
            )
    finally:
        stop(server)
    errors = warmup["errors"] + sum(r["errors"] for r in rounds)
    met = (
        errors == 0
        and all(r["opened"] == args.disconnects for r in rounds)
        and all(r["new_disconnects"] == args.disconnects for r in rounds)
        and all(r["tasks_ratio"] <= TARGET_RECOVERY for r in rounds)
        and all(r["rss_ratio"] <= TARGET_RECOVERY for r in rounds)
    )
    return {
        "rounds": args.rounds,
        "streams_per_round": args.disconnects,
        "delay_s": args.disconnect_delay,
        # Finished streams stay in the event log this long (600 s unless set), for resuming.
        "retention_s": args.retention,
        "fresh": {"tasks": int(start[TASKS]), "rss_kb": fresh["VmRSS"]},
        "warmup": warmup,
        "baseline": baseline,
        "per_round": rounds,
        "max_tasks_ratio": max((r["tasks_ratio"] for r in rounds), default=None),
        "max_rss_ratio": max((r["rss_ratio"] for r in rounds), default=None),
        "errors": errors,
        "target_ratio": TARGET_RECOVERY,
        "target_met": met,
    }


# --- output ----------------------------------------------------------------------------------


def _rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def _errors(kinds: dict[str, int]) -> str:
    return ", ".join(f"{count} x {kind}" for kind, count in kinds.items())


def print_concurrent(r: dict[str, Any]) -> None:
    print("\n1. concurrent streams (one worker)")
    _rows(
        [
            ("streams", f"{r['streams']:,}"),
            (
                "each stream",
                f"{r['words']} words, one every {r['delay_s']} s "
                f"(about {r['stream_s']:.0f} s); heartbeat after {r['heartbeat_s']} s silent",
            ),
            (
                "opening",
                f"{r['opening_s']} s ({r['opening_per_s']} streams/s, "
                f"at most {r['open_concurrency']} waiting for their first event)",
            ),
            ("first event p50 / p99", f"{r['first_event_p50_s']} s / {r['first_event_p99_s']} s"),
            ("open at once (client)", f"{r['peak_open_client']:,}"),
            ("active at peak (server)", f"{r['peak_active_server']:,}"),
            ("loop tasks at peak", f"{r['tasks_at_peak']:,}"),
            ("peak server RSS", f"{r['peak_rss_mb']} MB"),
            ("completed + right text", f"{r['completed']:,}"),
            ("pings per stream (min)", f"{r['pings_min']} (total {r['pings_total']:,})"),
            ("errors", f"{r['errors']} {_errors(r['error_kinds'])}"),
            ("elapsed", f"{r['elapsed_s']} s"),
            (
                "server / client CPU",
                f"{r['server_cpu_pct']} % / {r['client_cpu_pct']} % of one core",
            ),
            ("target", "met" if r["target_met"] else "NOT met"),
        ]
    )


def print_idle(r: dict[str, Any]) -> None:
    ours, bare = r["streamforge"], r["bare"]
    print(
        f"\n2. memory per idle stream ({ours['streams']:,} streams, heartbeat {r['heartbeat_s']} s)"
    )
    header = f"  {'':<24}{'StreamForge':>16}{'bare Starlette':>16}"
    print(header)
    print("  " + "-" * (len(header) - 2))

    def row(name: str, key: str, fmt: str = "{}") -> None:
        print(f"  {name:<24}{fmt.format(ours[key]):>16}{fmt.format(bare[key]):>16}")

    row("opening (s)", "opening_s")
    row("opened per s", "opening_per_s")
    row("first event p99 (s)", "first_event_p99_s")
    row("held, pinged", "held_with_ping", "{:,}")
    row("RSS before (MB)", "rss_before_mb")
    row("RSS after (MB)", "rss_after_mb")
    row("KB per idle stream", "kb_per_stream")
    row("  of which anon", "anon_kb_per_stream")
    row("  of which file", "file_kb_per_stream")
    row("loop tasks after", "tasks_after")
    row("errors", "errors")
    print(
        f"\n  StreamForge / bare: {r['ratio']}; target <= {r['target_kb']:.0f} KB per idle "
        f"stream and all held: {'met' if r['target_met'] else 'NOT met'}"
    )


def print_disconnects(r: dict[str, Any]) -> None:
    base = r["baseline"]
    retention = (
        f"{r['retention_s']} s" if r["retention_s"] is not None else "the server's default time"
    )
    print(
        f"\n3. abrupt disconnects ({r['rounds']} rounds of {r['streams_per_round']} resets, "
        f"a word every {r['delay_s']} s; finished streams kept {retention})"
    )
    print(
        f"  fresh server: {r['fresh']['tasks']} tasks, {r['fresh']['rss_kb'] / 1024:.1f} MB; "
        f"baseline after the warm-up round: {base['tasks']} tasks, "
        f"{base['rss_kb'] / 1024:.1f} MB (anon {base['anon_kb'] / 1024:.1f}, "
        f"file {base['file_kb'] / 1024:.1f})"
    )
    header = (
        f"  {'round':>5} {'opened':>7} {'resets':>7} {'drain s':>8} {'tasks':>6} "
        f"{'x base':>7} {'RSS MB':>8} {'x base':>7} {'anon MB':>8} {'file MB':>8}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for x in r["per_round"]:
        print(
            f"  {x['round']:>5} {x['opened']:>7} {x['new_disconnects']:>7} {x['drain_s']:>8.2f} "
            f"{x['tasks']:>6} {x['tasks_ratio']:>7.3f} {x['rss_kb'] / 1024:>8.1f} "
            f"{x['rss_ratio']:>7.3f} {x['anon_kb'] / 1024:>8.1f} {x['file_kb'] / 1024:>8.1f}"
        )
    print(
        f"\n  worst: tasks x{r['max_tasks_ratio']}, RSS x{r['max_rss_ratio']}; errors "
        f"{r['errors']}; target <= x{r['target_ratio']} after every round: "
        f"{'met' if r['target_met'] else 'NOT met'}"
    )


# --- main ------------------------------------------------------------------------------------

PHASES = ("concurrent", "idle", "disconnects")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--streams", type=int, default=2000, help="concurrent streams to hold (2000)")
    add("--idle", type=int, default=10_000, help="idle streams to hold and measure (10000)")
    add("--rounds", type=int, default=10, help="disconnect rounds after the warm-up (10)")
    add("--disconnects", type=int, default=500, help="streams reset per round (500)")
    add(
        "--open-concurrency",
        type=int,
        default=64,
        help="streams at most between connecting and their first event (64)",
    )
    add("--delay", type=float, default=1.0, help="seconds between words, concurrent (1.0)")
    add("--heartbeat", type=float, default=0.6, help="heartbeat interval, concurrent (0.6)")
    add("--words", type=int, default=60, help="at least this many words per answer (60)")
    add("--idle-heartbeat", type=float, default=5.0, help="heartbeat interval, idle (5)")
    add(
        "--disconnect-delay",
        type=float,
        default=0.1,
        help="seconds between words in the disconnect rounds (0.1)",
    )
    add(
        "--disconnect-words",
        type=int,
        default=600,
        help="words per answer in the disconnect rounds, so none completes (600)",
    )
    add(
        "--retention",
        type=float,
        default=5.0,
        help="seconds the disconnect rounds' interrupted streams stay resumable; each round "
        "is measured after they expire (5; the server's default is 600, bounded by "
        "max_retained_streams)",
    )
    add("--only", choices=PHASES, action="append", help="run only this measurement (repeatable)")
    args = parser.parse_args(argv)
    if min(args.streams, args.idle, args.disconnects, args.open_concurrency) < 1:
        parser.error("--streams, --idle, --disconnects and --open-concurrency must be >= 1")
    if args.rounds < 1 or args.delay <= 0 or args.heartbeat <= 0 or args.idle_heartbeat <= 0:
        parser.error("--rounds must be >= 1 and the delays and heartbeats > 0")
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    phases = args.only or list(PHASES)
    steps: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {
        "concurrent": concurrent_streams,
        "idle": idle_streams,
        "disconnects": disconnects,
    }
    printers: dict[str, Callable[[dict[str, Any]], None]] = {
        "concurrent": print_concurrent,
        "idle": print_idle,
        "disconnects": print_disconnects,
    }
    results: dict[str, Any] = {}
    for phase in PHASES:
        if phase in phases:
            started = time.perf_counter()
            results[phase] = await steps[phase](args)
            results[phase]["phase_s"] = round(time.perf_counter() - started, 1)
            printers[phase](results[phase])
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"stream_load: {os.cpu_count()} CPUs, load average {load_average()}, "
        f"open files limit {_nofile()}",
        flush=True,
    )
    try:
        results = run_async(run(args))
    except RuntimeError as exc:
        print(f"stream_load: {exc}", file=sys.stderr)
        return 1
    met = all(r["target_met"] for r in results.values())
    print()
    for phase, r in results.items():
        print(f"  target {phase:<12} {'met' if r['target_met'] else 'NOT met'}")
    print()
    options = {
        k: getattr(args, k)
        for k in ("streams", "idle", "rounds", "disconnects", "open_concurrency")
    }
    summary = {"benchmark": "stream_load", "options": options, **results, "target_met": met}
    print(json.dumps(summary))
    return 0 if met else 1


def _nofile() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


if __name__ == "__main__":
    sys.exit(main())
