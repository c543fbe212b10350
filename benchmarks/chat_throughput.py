"""Throughput of many concurrent ``POST /chat`` streams from the simulated provider.

Starts one uvicorn worker as a separate process (simulated provider, zero delay, a fresh
SQLite data directory), then runs ``--clients`` asyncio clients that each open streams back to
back for ``--warmup`` + ``--duration`` seconds. Only the ``--duration`` window is counted.

The client is deliberately cheap (raw asyncio sockets, no HTTP library) because it shares the
machine with the server: it parses the chunked transfer encoding and splits the SSE body into
blocks at blank lines. A block with an ``id:`` line is one event; the block with
``event: done`` ends the stream. Time to first event runs from sending the request to
receiving the first block with an ``id:`` line (the ``session`` event).

Run from the repository root::

    python benchmarks/chat_throughput.py --clients 32 --duration 10 --words 200

The server inherits the environment (so ``STREAMFORGE_DATABASE__URL`` can point it at
PostgreSQL) but runs in its own temporary directory, so no ``.env`` file is read. It prints a
table and then one JSON line with the same numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from _client import (
    HOST,
    StreamError,
    free_port,
    percentile,
    post_request,
    process_cpu_seconds,
    read_chunk,
    read_head,
    skip_body,
    stop_server,
    wait_until_healthy,
)

TARGET_EVENTS_PER_S = 5_000
DRAIN_TIMEOUT = 10.0


@dataclass
class Stats:
    """Shared by all clients; counters only move while ``measuring`` is set."""

    measuring: bool = False
    stopping: bool = False
    streams: int = 0
    events: int = 0
    errors: int = 0
    ttfe: list[float] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        if self.measuring:
            self.errors += 1
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


# --- the server ------------------------------------------------------------------------------


def start_server(port: int, data_dir: str, words: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "STREAMFORGE_DATA_DIR": data_dir,
            "STREAMFORGE_LLM__PROVIDER": "simulated",
            "STREAMFORGE_STREAMING__SIMULATED_DELAY": "0",
            "STREAMFORGE_LLM__SIMULATED__MIN_WORDS": str(words),
        }
    )
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "streamforge.main:app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    return subprocess.Popen(command, env=env, cwd=data_dir)


# --- the client ------------------------------------------------------------------------------


def build_request(port: int, keep_alive: bool) -> bytes:
    return post_request(port, "/chat", b'{"message":"Hello"}', keep_alive=keep_alive)


async def run_stream(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    stats: Stats,
) -> bool:
    """One ``POST /chat`` stream; True when the server keeps the connection open."""
    sent = time.perf_counter()
    writer.write(request)
    status, headers = await read_head(reader)
    keep_alive = headers.get(b"connection", b"").lower() != b"close"
    if status != 200:
        await skip_body(reader, headers)
        raise StreamError(f"status {status}")
    if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
        raise StreamError("response is not chunked")

    first = True
    done = False
    pending = b""
    while True:
        data = await read_chunk(reader)
        if not data:
            break
        if done:
            continue
        pending += data
        if b"\n\n" not in pending:
            continue
        *blocks, pending = pending.split(b"\n\n")
        events = 0
        for block in blocks:
            if block.startswith(b"id:") or b"\nid:" in block:
                events += 1
                if block.startswith(b"event: done") or b"\nevent: done" in block:
                    done = True
                    break
        if events and stats.measuring:
            stats.events += events
            if first:
                stats.ttfe.append(time.perf_counter() - sent)
        first = first and not events
    if not done:
        raise StreamError("stream ended without event: done")
    if stats.measuring:
        stats.streams += 1
    return keep_alive


async def client(port: int, stats: Stats, keep_alive: bool) -> None:
    request = build_request(port, keep_alive)
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        while not stats.stopping:
            try:
                if connection is None:
                    connection = await asyncio.open_connection(HOST, port)
                reader, writer = connection
                reuse = await run_stream(reader, writer, request, stats)
            except StreamError as exc:
                stats.error(str(exc))
                reuse = False
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                stats.error(type(exc).__name__)
                reuse = False
                await asyncio.sleep(0.01)  # do not spin on a refused connection
            if not (keep_alive and reuse) and connection is not None:
                connection[1].close()
                connection = None
    finally:
        if connection is not None:
            connection[1].close()


async def measure(
    port: int, server_pid: int, clients: int, warmup: float, duration: float, keep_alive: bool
) -> dict[str, Any]:
    stats = Stats()
    tasks = [asyncio.create_task(client(port, stats, keep_alive)) for _ in range(clients)]
    try:
        await asyncio.sleep(warmup)
        server_cpu_start = process_cpu_seconds(server_pid)
        client_cpu_start = time.process_time()
        started = time.perf_counter()
        stats.measuring = True
        await asyncio.sleep(duration)
        stats.measuring = False
        elapsed = time.perf_counter() - started
        server_cpu_end = process_cpu_seconds(server_pid)
        client_cpu = time.process_time() - client_cpu_start
        # Let the streams in flight finish (uncounted) rather than cut them off.
        stats.stopping = True
        await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    p50 = percentile(stats.ttfe, 0.50)
    p99 = percentile(stats.ttfe, 0.99)
    server_cpu = (
        server_cpu_end - server_cpu_start
        if server_cpu_start is not None and server_cpu_end is not None
        else None
    )
    events_per_s = stats.events / elapsed
    return {
        "clients": clients,
        "duration_s": round(elapsed, 3),
        "streams": stats.streams,
        "events": stats.events,
        "events_per_s": round(events_per_s, 1),
        "ttfe_p50_ms": round(p50 * 1000, 2) if p50 is not None else None,
        "ttfe_p99_ms": round(p99 * 1000, 2) if p99 is not None else None,
        "errors": stats.errors,
        "error_kinds": stats.error_kinds,
        "server_cpu_pct": round(100 * server_cpu / elapsed, 1) if server_cpu is not None else None,
        "client_cpu_pct": round(100 * client_cpu / elapsed, 1),
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "target_met": events_per_s >= TARGET_EVENTS_PER_S,
    }


def print_table(result: dict[str, Any], words: int, keep_alive: bool) -> None:
    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f} ms"

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} % of one core"

    rows = [
        ("clients", str(result["clients"])),
        ("answer words", str(words)),
        ("connections", "keep-alive" if keep_alive else "fresh per stream"),
        ("duration", f"{result['duration_s']:.2f} s"),
        ("streams completed", f"{result['streams']:,}"),
        ("events received", f"{result['events']:,}"),
        ("events/s", f"{result['events_per_s']:,.1f}"),
        ("time to first event p50", ms(result["ttfe_p50_ms"])),
        ("time to first event p99", ms(result["ttfe_p99_ms"])),
        ("errors", str(result["errors"])),
        ("server CPU", pct(result["server_cpu_pct"])),
        ("client CPU", pct(result["client_cpu_pct"])),
        (
            f"target {TARGET_EVENTS_PER_S:,} events/s",
            "met" if result["target_met"] else "NOT met",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for kind, count in result["error_kinds"].items():
        print(f"  {'':<{width}}  {count} x {kind}")
    print()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (32)")
    parser.add_argument("--duration", type=float, default=10.0, help="counted seconds (10)")
    parser.add_argument("--words", type=int, default=200, help="words per answer (200)")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds first (2)")
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="reuse each client's connection instead of opening a fresh one per stream",
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.words < 0 or args.warmup < 0:
        parser.error("--clients must be >= 1, --duration > 0, --words and --warmup >= 0")
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="streamforge-bench-")
    process = start_server(port, data_dir, args.words)
    try:
        await wait_until_healthy(process, port)
        return await measure(
            port, process.pid, args.clients, args.warmup, args.duration, args.keep_alive
        )
    finally:
        stop_server(process)
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        result = runner(run(args))
    except RuntimeError as exc:
        print(f"chat_throughput: {exc}", file=sys.stderr)
        return 1
    print_table(result, args.words, args.keep_alive)
    print(json.dumps({"benchmark": "chat_throughput", "words": args.words, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
