"""What the benchmarks share: server processes, a lean HTTP/1.1 client, CPU and percentiles.

The client is deliberately cheap (raw asyncio sockets, no HTTP library) because it shares the
machine with the servers it measures: it reads the status line and headers, and the chunked
transfer encoding, and leaves the body's format to the caller.

Benchmarks import it as ``_client``: run as ``python benchmarks/NAME.py``, the script's own
directory is first on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
# The repository root: the vendor servers are importable from here as ``tests.vendors``.
ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


class StreamError(Exception):
    """A stream that did not end as a complete 200 response."""


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def start_process(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    quiet: bool = False,
) -> subprocess.Popen[bytes]:
    """A child process on the environment plus ``env``; its standard error goes to ours, and
    its standard output too unless ``quiet``."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    stdout = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(list(command), env=full_env, cwd=cwd, stdout=stdout)


def uvicorn_command(app: str, port: int, *, python: str | Path | None = None) -> list[str]:
    """One StreamForge-style uvicorn worker: quiet, no access log (run by ``python``, by
    default the one running this)."""
    return [
        str(python or sys.executable),
        "-m",
        "uvicorn",
        app,
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def get_status(port: int, path: str = "/health") -> int:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
            % (path.encode(), HOST.encode())
        )
        await writer.drain()
        status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def health_status(port: int) -> int:
    return await get_status(port, "/health")


async def wait_until_healthy(
    process: subprocess.Popen[bytes], port: int, path: str = "/health"
) -> None:
    """Wait until ``GET path`` answers 200; RuntimeError if the process exits or times out."""
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} while starting")
        try:
            status = await asyncio.wait_for(get_status(port, path), timeout=5)
        except (OSError, ValueError, IndexError, TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return
            last = f"status {status}"
        await asyncio.sleep(0.1)
    raise RuntimeError(f"GET {path} did not answer 200 within {START_TIMEOUT:.0f} s ({last})")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc (None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields 14 and 15 of stat(5) (utime, stime); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """A process and its living descendants (a server and, say, its model process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float | None:
    """``process_cpu_seconds`` summed over ``process_tree(pid)``."""
    seconds = [s for p in process_tree(pid) if (s := process_cpu_seconds(p)) is not None]
    return sum(seconds) if seconds else None


def machine_busy_seconds() -> float | None:
    """CPU time all processes of the machine have used (every core), from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


# --- the client ------------------------------------------------------------------------------


def post_request(port: int, path: str, body: bytes, *, keep_alive: bool) -> bytes:
    """A complete ``POST`` of a JSON body that asks for an event stream."""
    connection = b"keep-alive" if keep_alive else b"close"
    return (
        b"POST %s HTTP/1.1\r\n"
        b"Host: %s:%d\r\n"
        b"Content-Type: application/json\r\n"
        b"Accept: text/event-stream\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: %s\r\n"
        b"\r\n%s" % (path.encode(), HOST.encode(), port, len(body), connection, body)
    )


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body; b"" for the last one (its trailers are read too)."""
    size_line = await reader.readuntil(b"\r\n")
    size = int(size_line.split(b";", 1)[0], 16)
    if size == 0:
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass
        return b""
    data = await reader.readexactly(size + 2)
    return data[:-2]


async def skip_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> None:
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while await read_chunk(reader):
            pass
    elif b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (a cheaper client), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    result: T = uvloop.run(coroutine)
    return result
