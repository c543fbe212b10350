"""Event streams through the shipped nginx configuration, in front of real server processes.

Each test runs Debian's nginx as this user (its own prefix under ``tmp_path``, its own port,
in the foreground) with ``deploy/nginx.conf`` turned into a test configuration by ``derive``:
the upstream's ``server`` lines name the test's server processes, ``listen`` names a free
loopback port, and (in the heartbeat test only) ``proxy_read_timeout`` is shortened. Every
other line is the shipped file's. Each substitution must match exactly once, so a change to
the shipped file that these tests would no longer cover fails here instead of passing unseen.

The derived file is included in an ``http`` block as hostile as a site's own ``nginx.conf``
may be: Debian's ``gzip on`` and more (event streams among ``gzip_types``), and the workers'
``X-Accel-Buffering: no`` ignored (as when something in between drops it), so the shipped
server block alone has to keep streams whole and unbuffered. A second server in that block, a
plain ``proxy_pass`` without the shipped directives, shows what happens to the same stream
without them: it arrives all at once at the end, compressed.

Two deployments: one server on SQLite with the in-process event log; two servers on
PostgreSQL and Redis behind the same upstream (the compose file's ``api-1`` and ``api-2``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import postgres_database
from tests.procs import (
    Event,
    ServerProcess,
    SSEParser,
    SSEResult,
    _kill_group,
    _spawn,
    _tail,
    _wait_exit,
    free_port,
    read_sse,
    redis_server,
    server_env,
    server_process,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "deploy" / "nginx.conf"
NGINX = Path("/usr/sbin/nginx")

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
LONG_ANSWER = {"STREAMFORGE_LLM__SIMULATED__MIN_WORDS": "400"}


# --------------------------------------------------------------------------------------------
# The configuration under test


def _replace_once(text: str, pattern: str, make: Callable[[re.Match[str]], str]) -> str:
    matches = list(re.finditer(pattern, text, flags=re.MULTILINE))
    assert len(matches) == 1, f"deploy/nginx.conf: {pattern!r} matches {len(matches)} times"
    match = matches[0]
    return text[: match.start()] + make(match) + text[match.end() :]


def derive(
    shipped: str, upstreams: list[str], port: int, *, read_timeout: str | None = None
) -> str:
    """The shipped configuration with the test's addresses, and nothing else changed but
    ``proxy_read_timeout`` when ``read_timeout`` is given.

    - The run of ``server`` lines of ``upstream streamforge`` becomes one line per address of
      ``upstreams``, with the parameters of the shipped first line (``max_fails=0``).
    - ``listen 80;`` becomes ``listen 127.0.0.1:<port>;``.
    - ``proxy_read_timeout 1h;`` becomes ``proxy_read_timeout <read_timeout>;``.
    """

    def servers(match: re.Match[str]) -> str:
        parameters = match["parameters"]
        lines = [f"{match['indent']}server {address}{parameters};\n" for address in upstreams]
        return match["head"] + "".join(lines)

    text = _replace_once(
        shipped,
        r"(?P<head>^upstream streamforge \{\n(?:\s*#[^\n]*\n)*)"
        r"(?P<indent>[ \t]+)server \S+?(?P<parameters>(?: [^;\n]+)?);\n(?:[ \t]+server [^\n]+\n)*",
        servers,
    )
    text = _replace_once(
        text,
        r"^(?P<indent>[ \t]+)listen [^;\n]+;",
        lambda m: f"{m['indent']}listen 127.0.0.1:{port};",
    )
    if read_timeout is not None:
        text = _replace_once(
            text,
            r"^(?P<indent>[ \t]+)proxy_read_timeout [^;\n]+;",
            lambda m: f"{m['indent']}proxy_read_timeout {read_timeout};",
        )
    return text


def main_config(prefix: Path, plain_port: int) -> str:
    """The ``http`` block the shipped file is included in, as a site's ``nginx.conf`` would.

    It logs which worker answered each request, and adds a plain proxy (no directives for
    event streams) on ``plain_port`` over the same upstream."""
    temp = prefix / "temp"
    # One worker process: the round robin over the upstream is per process, so with one
    # the requests of a test alternate strictly between the workers.
    return f"""\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{
    worker_connections 512;
}}
http {{
    log_format upstreams '$request_method $uri $status $upstream_addr';
    access_log {prefix}/access.log upstreams;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    # Debian's nginx.conf says sendfile, tcp_nopush and gzip on; a site may compress more.
    # And the shipped block must not lean on the workers' X-Accel-Buffering header.
    proxy_ignore_headers X-Accel-Buffering;
    sendfile on;
    tcp_nopush on;
    gzip on;
    gzip_types text/event-stream application/json;
    gzip_min_length 1;
    gzip_proxied any;

    include {prefix}/conf.d/*.conf;

    server {{
        listen 127.0.0.1:{plain_port};
        location / {{
            proxy_pass http://streamforge;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    prefix: Path
    port: int
    plain_port: int
    control_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def plain_url(self) -> str:
        return f"http://127.0.0.1:{self.plain_port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> list[list[str]]:
        path = self.prefix / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [line.split(" ") for line in lines]

    async def upstream_of(self, path: str, count: int = 1, within: float = 15.0) -> list[str]:
        """The worker addresses that answered requests for ``path``, once ``count`` are
        logged (nginx logs a request when it ends)."""
        deadline = time.monotonic() + within
        while True:
            found = [line[3] for line in self.access_log() if line[1] == path]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.05)


def write_configuration(
    proxy: Nginx,
    upstreams: list[str],
    read_timeout: str | None,
    control_read_timeout: str | None,
) -> None:
    if not NGINX.exists():
        raise AssertionError(
            f"the reverse-proxy tests need Debian's nginx at {NGINX}: apt-get install nginx "
            "(python3 dev.py test installs it)"
        )
    prefix = proxy.prefix
    for name in ("conf.d", "temp"):
        (prefix / name).mkdir(parents=True, exist_ok=True)
    shipped = SHIPPED.read_text()
    derived = derive(shipped, upstreams, proxy.port, read_timeout=read_timeout)
    (prefix / "conf.d" / "streamforge.conf").write_text(derived)
    if control_read_timeout is not None:
        control = derive(shipped, upstreams, proxy.control_port, read_timeout=control_read_timeout)
        # Its server block only: the upstream is defined once.
        server_block = control[control.index("\nserver {") + 1 :]
        (prefix / "conf.d" / "control.conf").write_text(server_block)
    (prefix / "nginx.conf").write_text(main_config(prefix, proxy.plain_port))


@contextlib.asynccontextmanager
async def nginx(
    tmp_path: Path,
    servers: list[ServerProcess],
    *,
    read_timeout: str | None = None,
    control_read_timeout: str | None = None,
) -> AsyncIterator[Nginx]:
    """Debian's nginx with the derived configuration, in front of ``servers``; stopped on
    exit. ``control_read_timeout``: a second copy of the shipped server block, on
    ``control_port``, with that read timeout."""
    prefix = tmp_path / "nginx"
    proxy = Nginx(prefix, free_port(), free_port(), free_port())
    upstreams = [f"127.0.0.1:{server.port}" for server in servers]
    write_configuration(proxy, upstreams, read_timeout, control_read_timeout)
    command = [str(NGINX), "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
    command += ["-e", str(prefix / "error.log"), "-g", "daemon off;"]
    proc = _spawn(command, prefix, tmp_path / "nginx.log")
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"nginx exited with {proc.returncode}:\n{_tail(tmp_path / 'nginx.log')}\n"
                    f"{proxy.error_log()}"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", proxy.plain_port)
                writer.close()
                _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"nginx not listening:\n{proxy.error_log()}") from None
                await asyncio.sleep(0.05)
        yield proxy
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: nginx's fast shutdown
            with contextlib.suppress(TimeoutError):
                await _wait_exit(proc, 10)
        _kill_group(proc.pid)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# A deployment: server processes, an API key, nginx in front


@dataclass
class Deployment:
    servers: list[ServerProcess]
    proxy: Nginx
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def create_key(tmp_path: Path, env: Mapping[str, str]) -> str:
    """An API key made with ``streamforge keys create`` on the first server's database."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamforge",
        "keys",
        "create",
        "--user",
        "proxy-tests",
        cwd=tmp_path / "first",
        env=server_env(tmp_path, "first", env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    key = out.decode().strip()
    assert key.startswith("sf_"), out
    return key


@contextlib.asynccontextmanager
async def deployment(
    tmp_path: Path,
    backend: str,
    env: Mapping[str, str],
    *,
    read_timeout: str | None = None,
    control_read_timeout: str | None = None,
) -> AsyncIterator[Deployment]:
    """``sqlite``: one server, SQLite, the in-process event log. ``postgres``: two servers on
    one PostgreSQL database and one Redis. Keys on, as behind any proxy."""
    settings = {"STREAMFORGE_AUTH__ENABLED": "true", **env}
    async with contextlib.AsyncExitStack() as stack:
        names = ["first"]
        if backend == "postgres":
            redis = await stack.enter_async_context(redis_server(tmp_path))
            database = await stack.enter_async_context(postgres_database())
            settings |= {"STREAMFORGE_DATABASE__URL": database, "STREAMFORGE_REDIS__URL": redis.url}
            names.append("second")
        servers = list(
            await asyncio.gather(
                *(
                    stack.enter_async_context(server_process(tmp_path, settings, name=name))
                    for name in names
                )
            )
        )
        key = await create_key(tmp_path, settings)
        proxy = await stack.enter_async_context(
            nginx(
                tmp_path,
                servers,
                read_timeout=read_timeout,
                control_read_timeout=control_read_timeout,
            )
        )
        yield Deployment(servers, proxy, key)


def ids(events: list[Event]) -> list[int]:
    return [int(e.id) for e in events if e.id is not None]


def text_of(events: list[Event]) -> str:
    return "".join(e.data for e in events if e.event == "message")


def spread(result: SSEResult) -> float:
    """Seconds between the first and the last text delta received."""
    deltas = [e for e in result.events if e.event == "message"]
    return deltas[-1].at - deltas[0].at


async def read_compressed_sse(url: str, body: Any, headers: dict[str, str]) -> SSEResult:
    """POST ``body`` and parse the answer as it arrives, decompressed (httpx undoes gzip)."""
    parser = SSEParser()
    async with (
        httpx.AsyncClient(timeout=60, trust_env=False) as client,
        client.stream("POST", url, json=body, headers=headers) as response,
    ):
        result = SSEResult(response.status_code, response.reason_phrase, response.headers)
        async for chunk in response.aiter_bytes():
            result.events.extend(parser.feed(chunk))
    return result


async def stored_reply(url: str, headers: dict[str, str], session_id: str) -> dict[str, Any]:
    """The session's assistant message, once it is no longer streaming."""
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=15, trust_env=False
    ) as client:
        deadline = time.monotonic() + 15
        while True:
            response = await client.get(f"/sessions/{session_id}/messages")
            assert response.status_code == 200, response.text
            reply: dict[str, Any] = response.json()["items"][-1]
            assert reply["role"] == "assistant"
            if reply["status"] != "streaming" or time.monotonic() > deadline:
                return reply
            await asyncio.sleep(0.1)


# --------------------------------------------------------------------------------------------
# The tests


def test_derive_changes_only_the_addresses_and_the_read_timeout() -> None:
    shipped = SHIPPED.read_text()
    derived = derive(shipped, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], 9, read_timeout="2s")
    old, new = shipped.splitlines(), derived.splitlines()
    changed_old = [line for line in old if line not in new]
    changed_new = [line for line in new if line not in old]
    assert [line.split()[0] for line in changed_old] == [
        "server",
        "server",
        "listen",
        "proxy_read_timeout",
    ]
    assert [line.strip() for line in changed_new] == [
        "server 127.0.0.1:1 max_fails=0;",
        "server 127.0.0.1:2 max_fails=0;",
        "server 127.0.0.1:3 max_fails=0;",
        "listen 127.0.0.1:9;",
        "proxy_read_timeout 2s;",
    ]
    # The directives event streams depend on are the shipped file's.
    for directive in (
        "proxy_buffering off;",
        "gzip off;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
    ):
        assert directive in derived


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
async def test_events_arrive_one_by_one_through_the_proxy_uncompressed(
    backend: str, tmp_path: Path
) -> None:
    """40 deltas 50 ms apart: through the proxy the first and the last arrive as far apart as
    on a direct connection, and the stream is not compressed although the client accepts gzip
    and the surrounding http block compresses event streams. Through the plain proxy_pass in
    the same http block the same stream comes all at once at the end, and compressed."""
    delay, words = 0.05, 40
    env = {**LONG_ANSWER, "STREAMFORGE_STREAMING__SIMULATED_DELAY": str(delay)}
    async with deployment(tmp_path, backend, env) as deployed:
        body = {"message": "one by one", "max_tokens": words}
        gzip = {**deployed.auth, "Accept-Encoding": "gzip"}
        direct = await read_sse(f"{deployed.servers[0].url}/chat", "POST", json=body, headers=gzip)
        proxied = await read_sse(f"{deployed.proxy.url}/chat", "POST", json=body, headers=gzip)

        # Not compressed, not given a length: a stream, passed on as it comes.
        assert proxied.status == 200, proxied.body
        assert "content-encoding" not in proxied.headers
        assert proxied.headers["content-type"].startswith("text/event-stream")
        assert proxied.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in proxied.headers
        for result in (direct, proxied):
            assert result.status == 200, result.body
            assert result.ended == "complete"
            assert result.done["status"] == "completed"
            assert ids(result.events) == list(range(1, words + 4))  # session … usage, done
        assert proxied.text == direct.text and len(proxied.deltas) == words

        # Spread over the generation time, not delivered all at once at the end.
        assert spread(direct) >= 0.5 * (words - 1) * delay
        assert spread(proxied) >= 0.6 * spread(direct), (spread(proxied), spread(direct))

        # The control: without the shipped directives nginx compresses the stream, and the
        # client gets it all at once at the end.
        plain = await read_compressed_sse(f"{deployed.proxy.plain_url}/chat", body, gzip)
        assert plain.headers["content-encoding"] == "gzip"
        assert plain.text == direct.text
        assert spread(plain) < 0.2 * spread(direct), (spread(plain), spread(direct))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_stream_silent_longer_than_the_read_timeout_lives_on_heartbeats(
    backend: str, tmp_path: Path
) -> None:
    """The proxy's read timeout shortened to 1.5 s, heartbeats every 0.4 s, and 3 s of
    silence before each delta: the stream completes through the proxy, the heartbeats
    reaching the client. The control: a second copy of the shipped server block whose read
    timeout (0.2 s) is below the heartbeat interval cuts the same stream."""
    delay, heartbeat, read_timeout = 3.0, 0.4, 1.5
    env = {
        "STREAMFORGE_STREAMING__SIMULATED_DELAY": str(delay),
        "STREAMFORGE_STREAMING__HEARTBEAT_INTERVAL": str(heartbeat),
    }
    async with deployment(
        tmp_path,
        backend,
        env,
        read_timeout=f"{int(read_timeout * 1000)}ms",
        control_read_timeout="200ms",
    ) as deployed:
        body = {"message": "take your time", "max_tokens": 2}
        result = await read_sse(
            f"{deployed.proxy.url}/chat", "POST", json=body, headers=deployed.auth
        )
        assert result.status == 200, result.body
        assert result.ended == "complete"
        assert result.done["status"] == "completed"
        assert len(result.deltas) == 2
        # Each delta came after a silence longer than the read timeout, bridged by pings.
        session = result.events[0]
        first, second = [e for e in result.events if e.event == "message"]
        assert session.event == "session"
        assert first.at - session.at > read_timeout
        assert second.at - first.at > read_timeout
        assert result.pings >= 4 and set(result.comments) == {"ping"}
        assert "upstream timed out" not in deployed.proxy.error_log()
        reply = await stored_reply(deployed.proxy.url, deployed.auth, result.session["session_id"])
        assert reply["status"] == "completed" and reply["content"] == result.text

        cut = await read_sse(
            f"{deployed.proxy.control_url}/chat", "POST", json=body, headers=deployed.auth
        )
        # Cut after the session event (or, on a slow machine, before the answer's head: 504).
        assert cut.status == 504 or cut.ended == "broken", (cut.status, cut.ended)
        assert not cut.typed("done") and not cut.deltas
        assert "upstream timed out" in deployed.proxy.error_log()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_stream_cut_at_the_proxy_resumes_through_it_on_another_worker(
    backend: str, tmp_path: Path
) -> None:
    """The client drops its connection to the proxy after event 10, resumes through the proxy
    with Last-Event-ID (dropping it again after event 25), then reads to the end. With two
    workers every request lands on the other one (round robin); the events continue with the
    next id each time, and the text put together equals the stored reply."""
    env = {
        **LONG_ANSWER,
        "STREAMFORGE_STREAMING__SIMULATED_DELAY": "0.05",
        "STREAMFORGE_STREAMING__DISCONNECT_POLICY": "continue",
    }
    words = 60
    async with deployment(tmp_path, backend, env) as deployed:
        url, auth = deployed.proxy.url, deployed.auth
        first = await read_sse(
            f"{url}/chat",
            "POST",
            json={"message": "cut me", "max_tokens": words},
            headers=auth,
            stop_after=10,
        )
        assert first.status == 200 and first.ended == "cut"
        events = list(first.events)
        stream_id = str(first.session["stream_id"])
        path = f"/chat/streams/{stream_id}"
        for cut in (25, None):
            last = events[-1].id
            assert last is not None
            part = await read_sse(
                f"{url}{path}",
                headers={**auth, "Last-Event-ID": last},
                stop_after=None if cut is None else cut - int(last),
            )
            assert part.status == 200, (part.status, part.body)
            # The header reached the worker: the answer starts right after it.
            assert ids(part.events)[0] == int(last) + 1
            events.extend(part.events)

        assert ids(events) == list(range(1, words + 4))
        assert events[-1].event == "done" and events[-1].json()["status"] == "completed"
        reply = await stored_reply(url, auth, first.session["session_id"])
        assert reply["status"] == "completed"
        assert reply["content"] == text_of(events)

        started = await deployed.proxy.upstream_of("/chat")
        resumed = await deployed.proxy.upstream_of(path, count=2)
        workers = [f"127.0.0.1:{server.port}" for server in deployed.servers]
        assert len(started) == 1 and len(resumed) == 2
        served = [*started, *resumed]
        assert set(served) <= set(workers)
        if len(workers) == 2:
            # Each request on the other worker than the one before it.
            assert served[0] != served[1] and served[1] != served[2], served
