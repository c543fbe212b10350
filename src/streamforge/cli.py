"""The ``streamforge`` command line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import quote

import typer

from streamforge import __version__

if TYPE_CHECKING:
    import httpx

    from streamforge.chains.providers.local.host import ModelHost
    from streamforge.config.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"

app = typer.Typer(
    help="StreamForge: a self-hostable streaming chat backend.",
    no_args_is_help=False,
    add_completion=False,
)


# Where the commands that talk to a server send their requests, and the API key they send:
# --url and --key, given before the command or after it (after wins), or STREAMFORGE_URL and
# STREAMFORGE_API_KEY.
_api_key: str | None = None
_root_url: str | None = None


def _auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {_api_key}"} if _api_key else {}


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"streamforge {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="STREAMFORGE_API_KEY",
            help="API key sent to the server (when it has authentication on).",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="STREAMFORGE_URL",
            help=f"The StreamForge server to talk to (default {DEFAULT_URL}).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    global _api_key, _root_url
    _api_key = key
    _root_url = url
    # `python -m streamforge` with no command starts the server, as `python main.py` did.
    if ctx.invoked_subcommand is None:
        serve()


def _target(url: str | None, key: str | None) -> str:
    """The server URL a command talks to (its --url, the one before the command, or the
    default), after taking its --key. A URL of the /v1 API rather than of the server is
    refused with the fix."""
    global _api_key
    if key is not None:
        _api_key = key
    chosen = (url or _root_url or DEFAULT_URL).strip()
    from urllib.parse import urlsplit

    path = urlsplit(chosen).path.rstrip("/")
    for suffix in ("/v1", "/chat", "/docs", "/ui"):
        if path.endswith(suffix):
            base = chosen.rstrip("/").removesuffix(suffix)
            fail(
                f"{chosen} is not the server's base URL: give --url {base} (the address "
                f"the server listens on, without {suffix})"
            )
    return chosen


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind (default 127.0.0.1; others need authentication)."),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes (more than 1 needs Redis: STREAMFORGE_REDIS__URL)."),
    ] = None,
    reload: Annotated[bool, typer.Option(help="Restart when the code changes.")] = False,
) -> None:
    """Run the HTTP server."""
    import uvicorn

    from streamforge.server import uvicorn_options

    settings = _settings()
    bind = host or settings.server.host
    if (
        not settings.auth.enabled
        and not settings.auth.allow_unauthenticated_remote
        and not _loopback(bind)
    ):
        fail(
            f"refusing to listen on {bind} with authentication off: set "
            "STREAMFORGE_AUTH__ENABLED=true (and create a key: streamforge keys create), or "
            "STREAMFORGE_AUTH__ALLOW_UNAUTHENTICATED_REMOTE=true if this network is trusted"
        )
    count = workers or settings.server.workers
    if count > 1 and settings.redis.url is None:
        # Each worker would keep its streams to itself: a resume or a cancel that reaches
        # another worker would not find them.
        fail(
            f"--workers {count} needs a shared event log: set STREAMFORGE_REDIS__URL "
            "(and a PostgreSQL STREAMFORGE_DATABASE__URL for several machines)"
        )
    if count > 1:
        # Each worker brings the schema up to date as it starts; on a new database several
        # doing it at once would collide, so the parent does it first.
        _migrate(settings)
    host_model = _shared_model_host(settings, count)
    try:
        uvicorn.run(
            "streamforge.main:app",
            host=bind,
            port=port if port is not None else settings.server.port,
            workers=count,
            reload=reload,
            log_level=settings.server.log_level,
            timeout_graceful_shutdown=10,
            # Header and keep-alive timeouts and the connection limit (streamforge.server).
            **uvicorn_options(settings),
        )
    finally:
        if host_model is not None:
            host_model.stop()


def _migrate(settings: Settings) -> None:
    import asyncio

    from streamforge.db.engine import create_engine
    from streamforge.db.migrate import upgrade_to_head

    async def upgrade() -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.database_url)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(upgrade())


def _shared_model_host(settings: Settings, workers: int) -> ModelHost | None:
    """With several workers, one model process for them all, supervised from here."""
    from streamforge.chains.core.llm_setup import local_extra_missing, local_wanted, model_process
    from streamforge.chains.providers.local.host import ModelHost

    local = settings.llm.local
    if workers < 2 or not local.shared_across_workers or local.endpoint is not None:
        return None
    if not local_wanted(settings) or local_extra_missing() is not None:
        return None
    host_model = ModelHost(model_process(settings))
    os.environ["STREAMFORGE_LLM__LOCAL__ENDPOINT"] = host_model.start()
    return host_model


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help=f"The StreamForge server to talk to (default: STREAMFORGE_URL, else {DEFAULT_URL}).",
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        help="API key sent to the server (default: STREAMFORGE_API_KEY).",
        show_default=False,
    ),
]
SUFFIXES = {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx"}


def fail(message: str, code: int = 1) -> NoReturn:
    """One readable line on stderr and a non-zero exit."""
    typer.echo(f"error: {' '.join(message.splitlines())}", err=True)
    raise typer.Exit(code)


def _settings(*, check: bool = True) -> Settings:
    """The settings from the environment and .env; unusable ones end the command with one
    ``error:`` line per problem. ``check``: also what each enabled provider needs."""
    from streamforge.config.loading import SettingsInvalid, load_settings

    try:
        return load_settings(check=check)
    except SettingsInvalid as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1) from None


def _files(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files to upload among ``paths`` (folders searched whole), and the files left out
    with the reason. A file named on the command line is always sent: the server judges it."""
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    kinds = ", ".join(sorted({suffix.lstrip(".") for suffix in SUFFIXES}))

    def walk(folder: Path) -> None:
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                skipped.append((entry, "hidden (its name starts with a dot)"))
            elif entry.is_dir():
                walk(entry)
            elif not entry.is_file():
                skipped.append((entry, "not a regular file"))
            elif entry.suffix.lower() in SUFFIXES:
                found.append(entry)
            else:
                kind = f"{entry.suffix} files" if entry.suffix else "files without a suffix"
                skipped.append((entry, f"{kind} are not supported (only {kinds})"))

    for path in paths:
        if path.is_dir():
            walk(path)
        elif path.is_file():
            found.append(path)
        else:
            fail(f"{path} does not exist")
    return found, skipped


def _shown(path: Path) -> str:
    """A path as the user would recognise it: relative to here when it is below here."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to upload.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name.")],
    url: UrlOption = None,
    key: KeyOption = None,
    wait: Annotated[bool, typer.Option(help="Wait until every document is ingested.")] = True,
) -> None:
    """Upload documents into a collection (created when missing), with a progress bar per
    file; files that are left out are named, with the reason."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskID, TextColumn

    url = _target(url, key)
    files, skipped = _files(paths)
    console = Console(stderr=True, highlight=False)
    for path, reason in skipped:
        console.print(f"skipped {_shown(path)}: {reason}", markup=False, soft_wrap=True)
    if not files:
        fail("no supported files (txt, md, html, pdf, docx) among the paths given")
    failed: list[tuple[str, str]] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[status]}"),
    )
    with _server(url) as client:
        created = client.post("/collections", json={"name": collection})
        if created.status_code not in (201, 409):
            fail(f"cannot create collection {collection!r}: {_server_error(created)}")
        with Progress(*columns, console=console, transient=False) as progress:
            tasks = {
                path: progress.add_task(_shown(path), total=1.0, status="waiting") for path in files
            }
            # Upload is the first tenth of a file's bar, ingestion the rest.
            pending: dict[str, tuple[str, TaskID]] = {}
            # All files, with the rate since the first upload (ingestion runs meanwhile).
            overall = progress.add_task("all files", total=float(len(files)), status="")
            started, settled = time.monotonic(), [0]

            def advance() -> None:
                settled[0] += 1
                rate = settled[0] / max(time.monotonic() - started, 1e-6)
                progress.update(overall, completed=settled[0], status=f"{rate:.1f} documents/s")

            def failed_file(name: str, task: TaskID, reason: str) -> None:
                failed.append((name, reason))
                progress.update(task, status=f"failed: {reason}")
                advance()

            for path, task in tasks.items():
                name = _shown(path)
                progress.update(task, status="uploading")
                with path.open("rb") as handle:
                    response = client.post(
                        "/documents",
                        data={"collection": collection},
                        files={"file": (path.name, handle)},
                    )
                if response.status_code not in (200, 202):
                    failed_file(name, task, _server_error(response))
                    continue
                document = response.json()
                if document["status"] == "failed":
                    failed_file(name, task, str(document["error"]))
                elif document["status"] == "ready":
                    progress.update(task, completed=1.0, status="ready")
                    advance()
                else:
                    progress.update(task, completed=0.1, status="ingesting")
                    pending[document["id"]] = (name, task)
            if not wait:
                for _, task in pending.values():
                    progress.update(task, status="uploaded (ingesting on the server)")
                pending.clear()
            while pending:
                for document_id, (name, task) in list(pending.items()):
                    document = _call(client, "GET", f"/documents/{_segment(document_id)}")
                    if document["status"] == "failed":
                        failed_file(name, task, str(document["error"]))
                        del pending[document_id]
                    elif document["status"] == "ready":
                        progress.update(task, completed=1.0, status="ready")
                        advance()
                        del pending[document_id]
                    else:
                        done = 0.1 + 0.9 * float(document["progress"])
                        progress.update(task, completed=done, status=document["status"])
                if pending:
                    time.sleep(0.25)
    for name, reason in failed:
        typer.echo(f"failed: {name}: {reason}", err=True)
    verb = "ingested into" if wait else "uploaded to"
    typer.echo(f"{len(files) - len(failed)} of {len(files)} documents {verb} {collection}")
    if failed:
        raise typer.Exit(1)


@app.command("eval")
def evaluate(
    collections: Annotated[
        list[str] | None,
        typer.Argument(
            help="'shipped' (the labelled set in the package) or folders of SMART-format "
            "test collections (CISI, CACM, Cranfield: documents, queries, judgements).",
        ),
    ] = None,
    embedder: Annotated[
        str | None,
        typer.Option(help="local (all-MiniLM-L6-v2) or simulated; default from settings."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="Database to ingest into (default: a temporary SQLite file)."),
    ] = None,
    k: Annotated[int, typer.Option(min=1, max=100, help="Cut-off of the metrics.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Score full-text, vector and hybrid retrieval on test collections (default: the
    shipped labelled set), at the document level and, where passages are judged, the
    passage level."""
    import asyncio
    import json
    import tempfile

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from streamforge.config.settings import Settings
    from streamforge.evaluation.collections import load
    from streamforge.evaluation.run import evaluate as run_evaluation

    console = Console(stderr=True)
    reports = []
    for ref in collections or ["shipped"]:
        try:
            collection = load(ref)
        except (OSError, ValueError) as exc:
            fail(f"cannot read the test collection {ref}: {exc}")
        with tempfile.TemporaryDirectory(prefix="streamforge-eval-") as scratch:
            overrides: dict[str, Any] = {
                "data_dir": Path(scratch),
                "llm": {"provider": "simulated"},
                "database": {"url": database_url},
            }
            settings = Settings(**overrides)
            if embedder is not None:
                settings.embeddings.provider = embedder  # type: ignore[assignment]
            with Progress(console=console, transient=True) as progress:
                tasks: dict[str, Any] = {}

                def report(
                    stage: str, done: int, total: int, tasks: dict[str, Any] = tasks
                ) -> None:
                    if stage not in tasks:
                        tasks[stage] = progress.add_task(stage, total=total)
                    progress.update(tasks[stage], completed=done)

                reports.append(
                    asyncio.run(
                        run_evaluation(settings, collection=collection, k=k, progress=report)
                    )
                )
    if as_json:
        dicts = [result.as_dict() for result in reports]
        typer.echo(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=2))
        return
    for result in reports:
        passages = any(score.passage_ndcg is not None for score in result.scores)
        table = Table(
            title=f"{result.collection}: {result.queries} queries, {result.documents} documents, "
            f"{result.chunks} chunks; embedder {result.embedder}, {result.backend}; "
            f"ingested in {result.ingest_seconds:.1f} s"
        )
        columns = ["mode", f"nDCG@{k}", f"recall@{k}"]
        if passages:
            columns += [f"passage nDCG@{k}", f"passage recall@{k}"]
        for column in [*columns, "p50 ms"]:
            table.add_column(column)
        for score in result.scores:
            row = [score.mode, f"{score.ndcg:.3f}", f"{score.recall:.3f}"]
            if passages:
                row += [f"{score.passage_ndcg or 0:.3f}", f"{score.passage_recall or 0:.3f}"]
            table.add_row(*row, f"{score.latency_p50_ms:.1f}")
        Console().print(table)


# --------------------------------------------------------------------------------------------
# Talking to a running server: chat, sessions, templates

CONNECT_TIMEOUT = 10.0  # seconds to open a connection to the server
REQUEST_TIMEOUT = 30.0  # seconds a plain (not streamed) request may take
CANCEL_TIMEOUT = 5.0
EXIT_WORDS = {"/exit", "/quit"}


def _note(text: str) -> None:
    """A dim line on stderr: information that is not the answer."""
    from rich.console import Console

    Console(stderr=True).print(text, style="dim", markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _server(url: str, *, stream: bool = False) -> Iterator[httpx.Client]:
    """An HTTP client for the server at ``url``. Failing to reach it is one line on stderr and
    exit code 1. Streams get no read timeout: an answer may take its time."""
    import httpx

    timeout = httpx.Timeout(None if stream else REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)
    try:
        with httpx.Client(base_url=url, timeout=timeout, headers=_auth_headers()) as client:
            yield client
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        fail(f"{url} is not a usable server URL ({exc})")
    except (httpx.ConnectError, httpx.ConnectTimeout):
        fail(f"cannot reach the StreamForge server at {url}")
    except httpx.TimeoutException:
        fail(f"the StreamForge server at {url} did not answer in time")
    except httpx.HTTPError as exc:
        fail(f"the connection to the StreamForge server at {url} failed ({type(exc).__name__})")


def _server_error(response: httpx.Response) -> str:
    """The server's error message (``{"error": {"code", "message"}}``), else the status; a
    refused key says how to give one."""
    if response.status_code == 401:
        if _api_key:
            return (
                "the server refused the API key (unknown or revoked): check --key or "
                "STREAMFORGE_API_KEY"
            )
        return (
            "the server needs an API key: give it with --key KEY or STREAMFORGE_API_KEY "
            "(an administrator creates one with: streamforge keys create --user NAME)"
        )
    try:
        message = str(response.json()["error"]["message"])
    except Exception:
        return f"the server answered HTTP {response.status_code}"
    retry_after = response.headers.get("retry-after")
    if response.status_code == 429 and retry_after:
        message += f" (retry after {retry_after} s)"
    return message


def _call(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    not_found: str | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """One request; its JSON answer (None for 204). An error answer ends the command."""
    response = client.request(method, path, params=params)
    if response.status_code == 404 and not_found is not None:
        fail(not_found)
    if response.is_error:
        fail(_server_error(response))
    if response.status_code == 204:
        return None
    try:
        return response.json()
    except ValueError:
        fail(f"{response.url} did not answer JSON: is this a StreamForge server?")


def _segment(value: str) -> str:
    """``value`` as one URL path segment: an id or a name can never reach another route."""
    return quote(value, safe="")


def _when(value: str | None) -> str:
    """An ISO timestamp from the server, in the local time zone."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


# Server-Sent Events, parsed by the WHATWG rules. Lines are split on CR, LF and CRLF only, on
# bytes: httpx's iter_lines() splits like str.splitlines(), also on U+2028, U+0085, form feeds
# and the like, which would break a text delta that contains one.


@dataclass(slots=True)
class _Event:
    event: str
    data: str


def _sse_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        start = 0
        while True:
            lf, cr = buffer.find(b"\n", start), buffer.find(b"\r", start)
            if cr == -1 or (lf != -1 and lf < cr):
                if lf == -1:
                    break
                end, after = lf, lf + 1
            elif cr + 1 == len(buffer):
                break  # a CR at the end of what has arrived: it may be a CRLF's first half
            else:
                end = cr
                after = cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
            yield buffer[start:end].decode("utf-8", errors="replace")
            start = after
        buffer = buffer[start:]
    if buffer:
        yield buffer.rstrip(b"\r").decode("utf-8", errors="replace")


def _sse_events(chunks: Iterable[bytes]) -> Iterator[_Event]:
    data: list[str] = []
    name = ""
    for line in _sse_lines(chunks):
        if not line:
            if data:
                yield _Event(name or "message", "\n".join(data))
            data, name = [], ""
            continue
        if line.startswith(":"):
            continue  # a comment: ": ping"
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    # An event without its closing blank line is incomplete: it is not dispatched.


class _StdoutClosed(Exception):
    """Whoever read stdout has gone (``streamforge chat ... | head -1``)."""


class _Output:
    """The answer on stdout, written and flushed delta by delta as it arrives."""

    def __init__(self) -> None:
        self.at_line_start = True

    def write(self, text: str) -> None:
        if not text:
            return
        stream = sys.stdout
        try:
            try:
                stream.write(text)
            except UnicodeEncodeError:
                encoding = stream.encoding or "utf-8"
                stream.write(text.encode(encoding, errors="replace").decode(encoding))
            stream.flush()
        except BrokenPipeError:
            # Nothing more can be shown; point stdout at /dev/null so that the interpreter's
            # last flush does not complain, and let the caller stop the answer.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
            raise _StdoutClosed from None
        self.at_line_start = text.endswith("\n")

    def end_line(self) -> None:
        """End the answer's last line, so that what follows starts on a line of its own."""
        if not self.at_line_start:
            self.write("\n")


@dataclass(slots=True)
class _Turn:
    """How one message and its streamed answer went."""

    session_id: str | None = None
    stream_id: str | None = None
    status: str | None = None  # the ``done`` event's status
    error: str | None = None  # why it did not complete, as one line
    cancelled: bool = False  # stopped here: Ctrl-C, or stdout was closed
    stdout_closed: bool = False


ENDED = {
    "failed": "the answer failed",
    "cancelled": "the answer was cancelled",
    "interrupted": "the answer was interrupted",
}


def _on_event(event: _Event, turn: _Turn, output: _Output) -> bool:
    """Apply one event of the stream to ``turn``; True once the stream is done."""
    if event.event == "message":
        output.write(event.data)
        return False
    if event.event not in ("session", "error", "done"):
        return False  # usage, sources: nothing to show
    try:
        payload = json.loads(event.data)
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    if event.event == "session":
        turn.session_id = payload.get("session_id") or turn.session_id
        turn.stream_id = payload.get("stream_id")
        return False
    if event.event == "error":
        message = payload.get("message") or "the provider failed"
        code = payload.get("code")
        turn.error = f"{message} ({code})" if code else str(message)
        return False
    turn.status = str(payload.get("status", "unknown"))
    if turn.status != "completed" and turn.error is None:
        turn.error = ENDED.get(turn.status, f"the answer ended {turn.status}")
    return True


def _chat_error(response: httpx.Response, body: dict[str, Any]) -> str:
    message = _server_error(response)
    session_id = body.get("session_id")
    if response.status_code == 404 and session_id and message.startswith("session "):
        return f"session {session_id} not found"
    return message


def _cancel(url: str, stream_id: str) -> bool:
    """Ask the server to stop a generation: it stores the reply ``cancelled`` and ends the
    stream with ``done``. False when the server could not be asked.

    A client of its own: this runs in a signal handler, while the stream's client is busy."""
    import httpx

    path = f"/chat/streams/{_segment(stream_id)}/cancel"
    try:
        with httpx.Client(base_url=url, timeout=CANCEL_TIMEOUT, headers=_auth_headers()) as client:
            return client.post(path).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _ctrl_c_cancels(url: str, turn: _Turn) -> Iterator[None]:
    """While an answer streams, Ctrl-C asks the server to cancel it and the stream is read
    on to its ``done``: the reply is stored ``cancelled`` with the text shown. Raising
    KeyboardInterrupt inside the read would make httpx drop the connection first, and the
    server would store the reply ``interrupted``. A second Ctrl-C, or one before the stream
    has an id, stops reading at once."""

    def handler(signum: int, frame: Any) -> None:
        if turn.cancelled or turn.stream_id is None:
            raise KeyboardInterrupt
        turn.cancelled = True
        if not _cancel(url, turn.stream_id):
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _chat_turn(client: httpx.Client, url: str, body: dict[str, Any]) -> _Turn:
    """Send one message and stream its answer to stdout. Ctrl-C cancels the answer."""
    import httpx

    turn = _Turn(session_id=body.get("session_id"))
    output = _Output()
    headers = {"Accept": "text/event-stream"}
    try:
        with (
            _ctrl_c_cancels(url, turn),
            client.stream("POST", "/chat", json=body, headers=headers) as response,
        ):
            content_type = response.headers.get("content-type", "")
            if response.status_code != 200 or not content_type.startswith("text/event-stream"):
                response.read()
                turn.error = _chat_error(response, body)
                return turn
            # Held here, so that an exception in the loop's body does not close the stream
            # (and the connection) before the generation is cancelled.
            events = _sse_events(response.iter_bytes())
            try:
                for event in events:
                    if _on_event(event, turn, output):
                        break
            except _StdoutClosed:
                turn.cancelled = turn.stdout_closed = True
                if turn.stream_id is not None:
                    _cancel(url, turn.stream_id)
    except KeyboardInterrupt:
        turn.cancelled = True
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol):
        raise  # no server there: _server says so
    except httpx.TransportError:
        turn.error = f"the connection to the server at {url} broke before the answer ended"
    finally:
        if not turn.stdout_closed:
            try:
                output.end_line()
            except _StdoutClosed:
                turn.stdout_closed = True
    if turn.status is None and turn.error is None and not turn.cancelled:
        turn.error = f"the stream from {url} ended before the answer was complete"
    return turn


def _variables(pairs: list[str]) -> dict[str, str]:
    variables: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(f"--var takes NAME=VALUE, not {pair!r}")
        variables[name] = value
    return variables


def _converse(client: httpx.Client, url: str, first: dict[str, Any]) -> int:
    """The interactive conversation: prompt, answer, and again, in one session."""
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
        _note(f"chatting with {url}: /exit or Ctrl-D leaves, Ctrl-C stops an answer")
    # A server that is not there is one line and exit 1 now, not after the first question.
    client.get("/", timeout=REQUEST_TIMEOUT)
    options = dict(first)
    session_id: str | None = options.get("session_id")
    while True:
        try:
            line = input("you> ")
        except EOFError:
            sys.stdout.write("\n")
            return 0
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            return 130
        text = line.strip()
        if not text:
            continue
        if text in EXIT_WORDS:
            return 0
        body = {**options, "message": text}
        if session_id is not None:
            body["session_id"] = session_id
        turn = _chat_turn(client, url, body)
        if turn.stdout_closed:
            return 1
        if turn.session_id is not None and turn.session_id != session_id:
            session_id = turn.session_id
            _note(f"session {session_id}")
        if session_id is not None:
            # The session keeps the template version it started with: name it only once.
            options.pop("template", None)
            options.pop("variables", None)
        if turn.cancelled:
            _note("cancelled")
        elif turn.error is not None:
            typer.echo(f"error: {turn.error}", err=True)


@app.command()
def chat(
    message: Annotated[
        str | None,
        typer.Argument(help="The message. Without it: an interactive conversation."),
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", "-s", help="Continue this session (its id).")
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(help="Provider: local, simulated, openai... (default: the server's)."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="The provider's model.")] = None,
    template: Annotated[str | None, typer.Option(help="A prompt template's name.")] = None,
    var: Annotated[
        list[str] | None,
        typer.Option("--var", help="A template variable, NAME=VALUE; repeat for more."),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Send a message and stream the answer as it is written; without a message, chat.

    The session id goes to stderr (`session <id>`): pass it to --session to go on. In the
    conversation, /exit or Ctrl-D leaves and Ctrl-C stops an answer.
    """
    url = _target(url, key)
    if message is not None and not message.strip():
        fail(
            "the message is empty: give some text to send, or no message at all for an "
            "interactive conversation"
        )
    options: dict[str, Any] = {
        key: value
        for key, value in {
            "session_id": session,
            "provider": provider,
            "model": model,
            "template": template,
        }.items()
        if value is not None
    }
    if var:
        options["variables"] = _variables(var)
    with _server(url, stream=True) as client:
        if message is None:
            code = _converse(client, url, options)
            raise typer.Exit(code)
        turn = _chat_turn(client, url, {**options, "message": message})
    if turn.stdout_closed:
        raise typer.Exit(1)
    if turn.cancelled:
        _note("cancelled")
        raise typer.Exit(130)
    if turn.error is not None:
        fail(turn.error)
    if turn.session_id is not None:
        _note(f"session {turn.session_id}")


sessions_app = typer.Typer(help="List, show and delete chat sessions.", no_args_is_help=True)
app.add_typer(sessions_app, name="sessions")


@sessions_app.command("list")
def sessions_list(
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 20,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """List sessions, newest first."""
    url = _target(url, key)
    from rich.console import Console
    from rich.table import Table

    with _server(url) as client:
        page = _call(client, "GET", "/sessions", params={"limit": limit})
    items = page["items"]
    if not items:
        typer.echo("no sessions")
        return
    table = Table(caption=f"{len(items)} of {page['total']} sessions")
    table.add_column("id", no_wrap=True)
    table.add_column("title")
    table.add_column("updated", no_wrap=True)
    for item in items:
        table.add_row(item["id"], item.get("title") or "", _when(item.get("updated_at")))
    Console().print(table, markup=False, highlight=False)


@sessions_app.command("show")
def sessions_show(
    session_id: Annotated[str, typer.Argument(metavar="ID", help="The session's id.")],
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Show a session's messages, oldest first: role, status and content."""
    url = _target(url, key)
    from rich.console import Console

    not_found = f"session {session_id} not found"
    path = f"/sessions/{_segment(session_id)}"
    messages: list[dict[str, Any]] = []
    with _server(url) as client:
        found = _call(client, "GET", path, not_found=not_found)
        while True:
            params = {"limit": 100, "offset": len(messages)}
            page = _call(client, "GET", f"{path}/messages", not_found=not_found, params=params)
            messages.extend(page["items"])
            if not page["items"] or len(messages) >= page["total"]:
                break
    console = Console()
    title = found.get("title") or "(untitled)"
    console.print(f"session {found['id']}: {title}", style="bold", markup=False, soft_wrap=True)
    console.print(f"updated {_when(found.get('updated_at'))}", style="dim", soft_wrap=True)
    for item in messages:
        console.print()
        console.print(
            f"{item['role']} ({item['status']})", style="bold", markup=False, soft_wrap=True
        )
        console.print(item["content"], markup=False, highlight=False, soft_wrap=True)


@sessions_app.command("delete")
def sessions_delete(
    session_id: Annotated[str, typer.Argument(metavar="ID", help="The session's id.")],
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Delete a session with its messages."""
    url = _target(url, key)
    with _server(url) as client:
        path = f"/sessions/{_segment(session_id)}"
        _call(client, "DELETE", path, not_found=f"session {session_id} not found")
    typer.echo(f"deleted session {session_id}")


templates_app = typer.Typer(help="List and show prompt templates.", no_args_is_help=True)
app.add_typer(templates_app, name="templates")


@templates_app.command("list")
def templates_list(
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many.")] = 20,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """List templates: the built-in default, then the latest version of each."""
    url = _target(url, key)
    from rich.console import Console
    from rich.table import Table

    with _server(url) as client:
        page = _call(client, "GET", "/templates", params={"limit": limit})
    table = Table(caption=f"{len(page['items'])} of {page['total']} templates")
    table.add_column("name", no_wrap=True)
    table.add_column("version", justify="right")
    table.add_column("variables")
    table.add_column("description")
    for item in page["items"]:
        variables = ", ".join(item.get("variables") or [])
        table.add_row(item["name"], str(item["version"]), variables, item.get("description") or "")
    Console().print(table, markup=False, highlight=False)


@templates_app.command("show")
def templates_show(
    name: Annotated[str, typer.Argument(help="The template's name.")],
    version: Annotated[
        int | None, typer.Option(min=1, help="A version number (default: the latest).")
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Show a template's system prompt, its latest version or --version N."""
    url = _target(url, key)
    from rich.console import Console

    not_found = (
        f"template {name} not found"
        if version is None
        else f"template {name} has no version {version} (or does not exist)"
    )
    params = None if version is None else {"version": version}
    with _server(url) as client:
        found = _call(
            client, "GET", f"/templates/{_segment(name)}", not_found=not_found, params=params
        )
    console = Console()
    console.print(f"{found['name']} v{found['version']}", style="bold", markup=False)
    if found.get("description"):
        console.print(found["description"], markup=False, highlight=False, soft_wrap=True)
    variables = ", ".join(found.get("variables") or []) or "none"
    console.print(f"variables: {variables}", style="dim", markup=False, soft_wrap=True)
    console.print()
    console.print(found["system_prompt"], markup=False, highlight=False, soft_wrap=True)


keys_app = typer.Typer(
    help="Create, list and revoke API keys (on this machine's configured database).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


def _on_database(work: Any, *, create: bool = False) -> Any:
    """Run ``work(auth_service)`` against the configured database, migrated to head. Which
    database goes to stderr first; one that does not exist yet is made only when ``create``
    (keys made there would mean nothing to a server that uses another)."""
    import asyncio

    from sqlalchemy import inspect

    from streamforge.config.loading import mask, source
    from streamforge.db.database import Database
    from streamforge.db.engine import connection_failure, create_engine, normalise_url
    from streamforge.db.migrate import upgrade_to_head
    from streamforge.errors import AppError
    from streamforge.services.auth import AuthService

    settings = _settings(check=False)
    raw_url = settings.database_url
    try:
        url = normalise_url(raw_url)
    except AppError as exc:
        fail(exc.message)
    sqlite_file: Path | None = None
    if settings.database.url is None:
        origin = source(("data_dir",))
        how = (
            "the default data directory ./data of the current directory; set "
            "STREAMFORGE_DATA_DIR or STREAMFORGE_DATABASE__URL to the server's"
            if origin == "default"
            else f"STREAMFORGE_DATA_DIR from the {origin}"
        )
    else:
        how = f"STREAMFORGE_DATABASE__URL from the {source(('database', 'url'))}"
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        sqlite_file = Path(url.database)
        where = f"SQLite file {sqlite_file}"
    else:
        where = str(mask(("database", "url"), raw_url))
    _note(f"database: {where} ({how})")
    if sqlite_file is not None and not sqlite_file.exists():
        if not create:
            fail(
                f"there is no database at {sqlite_file}: run this command where the server "
                "runs, with its settings, or pass --create-database to make a new one here"
            )
        if settings.database.url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> Any:
        engine = create_engine(raw_url)
        try:
            async with engine.connect() as connection:
                migrated = await connection.run_sync(
                    lambda sync: inspect(sync).has_table("alembic_version")
                )
            if not migrated and not create:
                fail(
                    f"the database {where} has no StreamForge tables: point the settings at "
                    "the server's database, or pass --create-database to set this one up"
                )
            await upgrade_to_head(engine)
            return await work(AuthService(Database(engine)))
        except typer.Exit:
            raise
        except AppError:
            raise
        except Exception as exc:
            failure = connection_failure(raw_url, exc)
            if failure is None:
                raise
            raise failure from exc
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except AppError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot open the database: {exc}")


CreateDatabaseOption = Annotated[
    bool,
    typer.Option(
        "--create-database",
        help="Make the database when the settings point at none (or set up an empty one).",
    ),
]


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option(help="The user the key acts as; created if new.")],
    admin: Annotated[bool, typer.Option(help="Make a new user an administrator.")] = False,
    name: Annotated[str | None, typer.Option(help="What the key is for.")] = None,
    create_database: CreateDatabaseOption = False,
) -> None:
    """Create an API key and print it once (it cannot be shown again)."""
    from streamforge.errors import NotFound
    from streamforge.models import Role
    from streamforge.services.auth import AuthService

    async def work(auth: AuthService) -> tuple[str, str]:
        try:
            await auth.user(user)
        except NotFound:
            await auth.create_user(user, Role.ADMIN if admin else Role.USER)
        key, info = await auth.create_key(user, name)
        return key, info.id

    key, key_id = _on_database(work, create=create_database)
    typer.echo(key)
    _note(f"key id {key_id}; store the key now: it is not shown again")


@keys_app.command("list")
def keys_list() -> None:
    """List API keys: id, user, name, prefix, created, last used, revoked."""
    from rich.console import Console
    from rich.table import Table

    from streamforge.services.auth import AuthService

    async def work(auth: AuthService) -> Any:
        return await auth.keys()

    found = _on_database(work)
    if not found:
        typer.echo("no keys")
        return
    table = Table()
    table.add_column("id", no_wrap=True)
    for column in ("user", "name", "key", "created", "last used", "revoked"):
        table.add_column(column)
    for info in found:
        table.add_row(
            info.id,
            info.user,
            info.name or "",
            info.prefix + "…",
            _when(info.created_at.isoformat()),
            _when(info.last_used_at.isoformat() if info.last_used_at else None),
            _when(info.revoked_at.isoformat() if info.revoked_at else None),
        )
    # Never cut an id to fit the terminal: one that is cut cannot be revoked.
    console = Console()
    width = max(console.width, console.measure(table).maximum)
    Console(width=width).print(table, markup=False, highlight=False)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[
        str, typer.Argument(help="The key's id (keys list), or enough of its start to be unique.")
    ],
) -> None:
    """Revoke an API key: servers refuse it within seconds (their key cache)."""
    from streamforge.errors import NotFound
    from streamforge.services.auth import AuthService

    wanted = key_id.strip().rstrip("…").rstrip(".")

    async def work(auth: AuthService) -> Any:
        matches = [info.id for info in await auth.keys() if info.id.startswith(wanted)]
        if not wanted or not matches:
            raise NotFound(f"no key has the id {key_id!r} (see: streamforge keys list)")
        exact = [match for match in matches if match == wanted]
        if len(matches) > 1 and not exact:
            raise NotFound(
                f"{key_id!r} starts {len(matches)} key ids; give more of it: " + ", ".join(matches)
            )
        return await auth.revoke(exact[0] if exact else matches[0])

    info = _on_database(work)
    typer.echo(f"revoked {info.id} ({info.prefix}…, user {info.user})")


def _env_value(value: Any) -> str:
    """A setting's value as it would be written in the environment or a .env file."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


@app.command("config")
def show_config(
    changed: Annotated[
        bool, typer.Option("--changed", help="Only the settings that are not their default.")
    ] = False,
) -> None:
    """Print the effective configuration: every setting as NAME=value (keys and passwords
    masked) and where it came from (default, environment, .env file); then what is wrong
    with it, if anything (exit code 1)."""
    from streamforge.config.loading import entries, problems

    settings = _settings(check=False)
    rows = [
        (f"{entry.name}={_env_value(entry.value)}", entry.source)
        for entry in entries(settings)
        if not changed or entry.source != "default"
    ]
    width = max((len(text) for text, _ in rows), default=0)
    for text, origin in rows:
        typer.echo(f"{text.ljust(width)}  # {origin}")
    found = problems(settings)
    for problem in found:
        typer.echo(f"error: {problem}", err=True)
    if found:
        raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
