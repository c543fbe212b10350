"""``streamforge serve`` as clients meet it: silent and slow connections cannot starve the
others, idle ones are closed, and start-up failures are one line naming what to fix."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from streamforge.server import connection_limit
from tests.polling import eventually
from tests.procs import free_port, server_env, server_process

HEADER_TIMEOUT = 2.0
OPEN_FILES = 256
SILENT = 300
SLOW = 50


def test_connection_limit_leaves_descriptors_for_the_rest() -> None:
    assert connection_limit(1000, None) == 1000
    assert connection_limit(1000, 256) == 256 - 64
    assert connection_limit(1000, 1024) == 1024 - 128
    assert connection_limit(100, 1_000_000) == 100
    assert connection_limit(1000, 10) == 1


async def _closed_by_server(reader: asyncio.StreamReader, deadline: float) -> bytes | None:
    """What the server sent before closing, or None if it is still open at ``deadline``."""
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            return await reader.read()
    except TimeoutError:
        return None
    except OSError:
        return b""  # reset: closed too


async def _trickle(writer: asyncio.StreamWriter, request: bytes) -> None:
    """One byte every half second: headers that would never end in time."""
    with contextlib.suppress(OSError):
        for byte in request:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.5)


async def _served_after(url: str, started: float, give_up: float) -> float:
    """Seconds until GET /health answers 200, retrying on 503 and refused connections."""
    async with httpx.AsyncClient(base_url=url, timeout=5, trust_env=False) as client:

        async def served() -> bool:
            response = await client.get("/health")
            if response.status_code == 200:
                return True
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "too_many_connections"
            return False

        await eventually(
            served,
            timeout=give_up - time.monotonic(),
            interval=0.2,
            retry_on=(httpx.HTTPError,),
            what="a well-behaved client being served",
        )
        return time.monotonic() - started


async def test_silent_and_slow_connections_cannot_starve_a_well_behaved_client(
    tmp_path: Path,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * (SILENT + SLOW):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    env = {
        "STREAMFORGE_SERVER__HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "STREAMFORGE_SERVER__KEEP_ALIVE_TIMEOUT": "1",
    }
    async with server_process(tmp_path, env, open_files=OPEN_FILES) as server:
        connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        trickles: list[asyncio.Task[None]] = []
        try:
            started = time.monotonic()
            # The slow ones first, so that they hold connections the server has accepted.
            for _ in range(SLOW):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                connections.append((reader, writer))
                request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40 + b"\r\n\r\n"
                trickles.append(asyncio.create_task(_trickle(writer, request)))
            for _ in range(SILENT):
                connections.append(await asyncio.open_connection("127.0.0.1", server.port))

            served = await _served_after(server.url, started, started + 20)
            assert served < HEADER_TIMEOUT + 4, served

            # Every silent and slow connection is closed: refused at once with a 503 beyond the
            # connection limit, or after the header deadline.
            deadline = started + HEADER_TIMEOUT + 5
            ends = await asyncio.gather(*(_closed_by_server(r, deadline) for r, _ in connections))
            still_open = sum(end is None for end in ends)
            assert still_open == 0, f"{still_open} of {len(ends)} connections still open"
            refusals = [end for end in ends if end and end.startswith(b"HTTP/1.1 503")]
            assert refusals, "the connection limit was never reached"
            body = refusals[0].partition(b"\r\n\r\n")[2]
            assert orjson.loads(body)["error"]["code"] == "too_many_connections"
            assert b"retry-after: 1" in refusals[0].lower()
            # The slow ones got nothing: their headers never ended.
            assert all(not end.startswith(b"HTTP/1.1 200") for end in ends if end)
            assert time.monotonic() - started < HEADER_TIMEOUT + 6
        finally:
            for task in trickles:
                task.cancel()
            for _, writer in connections:
                writer.close()

        # A kept-alive connection that stays idle is closed after the keep-alive timeout.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            rest = await _closed_by_server(reader, time.monotonic() + 4)
            assert rest is not None, "an idle kept-alive connection was not closed"
        finally:
            writer.close()

        assert server.running
        async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
            assert (await client.get("/health")).status_code == 200
        assert "Traceback" not in server.log()


def _start(tmp_path: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = server_env(tmp_path, "server", {"STREAMFORGE_DATABASE__URL": database_url})
    (tmp_path / "server").mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "streamforge", "serve", "--port", str(free_port())]
    return subprocess.run(
        command,
        cwd=tmp_path / "server",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_wrong_postgres_port_is_one_line_naming_the_host_and_the_setting(
    tmp_path: Path,
) -> None:
    port = free_port()
    result = _start(tmp_path, f"postgresql://postgres@127.0.0.1:{port}/streamforge")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if f"127.0.0.1:{port}" in line]
    assert len(lines) == 1, output
    assert "PostgreSQL" in lines[0] and "refused" in lines[0], lines
    assert "STREAMFORGE_DATABASE__URL" in lines[0], lines
    assert len(output.splitlines()) < 8, output


def test_a_sqlite_file_in_a_missing_directory_is_refused_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    result = _start(tmp_path, f"sqlite:///{(missing / 'x.db').as_posix()}")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert f"{missing} does not exist" in output, output
    assert "STREAMFORGE_DATABASE__URL" in output, output
    assert not missing.parent.exists()


def test_the_default_data_directory_is_still_created(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    env = {**server_env(tmp_path, "server", {}), "STREAMFORGE_DATA_DIR": str(data)}
    code = (
        "import asyncio\n"
        "from streamforge.components import Components\n"
        "from streamforge.config.settings import Settings\n"
        "async def main():\n"
        "    components = await Components.start(Settings())\n"
        "    await components.stop()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=60)
    assert (data / "streamforge.db").exists()
