"""The ``streamforge`` command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from streamforge import __version__

app = typer.Typer(
    help="StreamForge: a self-hostable streaming chat backend.",
    no_args_is_help=False,
    add_completion=False,
)


@app.callback(invoke_without_command=True)
def _root(ctx: typer.Context) -> None:
    # `python -m streamforge` with no command starts the server, as `python main.py` did.
    if ctx.invoked_subcommand is None:
        serve()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 0.0.0.0).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes (more than 1 needs Redis: STREAMFORGE_REDIS__URL)."),
    ] = None,
    reload: Annotated[bool, typer.Option(help="Restart when the code changes.")] = False,
) -> None:
    """Run the HTTP server."""
    import uvicorn

    from streamforge.config.settings import Settings

    settings = Settings()
    count = workers or settings.server.workers
    if count > 1 and settings.redis.url is None:
        # Each worker would keep its streams to itself: a resume or a cancel that reaches
        # another worker would not find them.
        fail(
            f"--workers {count} needs a shared event log: set STREAMFORGE_REDIS__URL "
            "(and a PostgreSQL STREAMFORGE_DATABASE__URL for several machines)"
        )
    uvicorn.run(
        "streamforge.main:app",
        host=host or settings.server.host,
        port=port if port is not None else settings.server.port,
        workers=count,
        reload=reload,
        log_level=settings.server.log_level,
        timeout_graceful_shutdown=10,
    )


DEFAULT_URL = "http://127.0.0.1:8000"
UrlOption = Annotated[
    str,
    typer.Option(envvar="STREAMFORGE_URL", help="The StreamForge server to talk to."),
]
SUFFIXES = {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx"}


def fail(message: str, code: int = 1) -> NoReturn:
    """One readable line on stderr and a non-zero exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            )
        elif path.is_file():
            found.append(path)
        else:
            fail(f"{path} does not exist")
    return found


def _error_text(response: Any) -> str:
    try:
        return str(response.json()["error"]["message"])
    except Exception:
        return f"HTTP {response.status_code}"


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to upload.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name.")],
    url: UrlOption = DEFAULT_URL,
    wait: Annotated[bool, typer.Option(help="Wait until every document is ingested.")] = True,
) -> None:
    """Upload documents into a collection (created when missing), with a progress bar."""
    import httpx
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    files = _files(paths)
    if not files:
        fail("no supported files (txt, md, html, pdf, docx) among the paths given")
    failed: list[tuple[str, str]] = []
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            created = client.post("/collections", json={"name": collection})
            if created.status_code not in (201, 409):
                fail(f"cannot create collection {collection!r}: {_error_text(created)}")
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
            )
            with Progress(*columns, transient=False) as progress:
                uploading = progress.add_task("upload", total=len(files), status="")
                pending: dict[str, str] = {}
                for path in files:
                    progress.update(uploading, status=path.name)
                    with path.open("rb") as handle:
                        response = client.post(
                            "/documents",
                            data={"collection": collection},
                            files={"file": (path.name, handle)},
                        )
                    if response.status_code not in (200, 202):
                        failed.append((path.name, _error_text(response)))
                    else:
                        document = response.json()
                        if document["status"] == "failed":
                            failed.append((path.name, document["error"]))
                        elif document["status"] != "ready":
                            pending[document["id"]] = path.name
                    progress.advance(uploading)
                if wait and pending:
                    ingesting = progress.add_task("ingest", total=float(len(pending)), status="")
                    while pending:
                        done = 0.0
                        for document_id, name in list(pending.items()):
                            document = client.get(f"/documents/{document_id}").json()
                            if document["status"] == "failed":
                                failed.append((name, document["error"]))
                                del pending[document_id]
                            elif document["status"] == "ready":
                                del pending[document_id]
                            else:
                                done += float(document["progress"])
                        finished = len(files) - len(failed) - len(pending)
                        progress.update(ingesting, completed=min(finished, len(files)) + done)
                        progress.update(ingesting, total=float(finished + len(pending)))
                        if pending:
                            time.sleep(0.25)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the StreamForge server at {url} ({exc.__class__.__name__})")
    for name, reason in failed:
        typer.echo(f"failed: {name}: {reason}", err=True)
    typer.echo(f"{len(files) - len(failed)} of {len(files)} documents ingested into {collection}")
    if failed:
        raise typer.Exit(1)


@app.command("eval")
def evaluate(
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
    """Score full-text, vector and hybrid retrieval on the shipped labelled set."""
    import asyncio
    import json
    import tempfile

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from streamforge.config.settings import Settings
    from streamforge.evaluation.run import evaluate as run_evaluation

    console = Console(stderr=True)
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

            def report(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=total)
                progress.update(tasks[stage], completed=done)

            result = asyncio.run(run_evaluation(settings, k=k, progress=report))
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    table = Table(
        title=f"{result.queries} queries, {result.documents} documents, {result.chunks} chunks; "
        f"embedder {result.embedder}, {result.backend}"
    )
    for column in ("mode", f"nDCG@{k}", f"recall@{k}", "p50 ms"):
        table.add_column(column)
    for score in result.scores:
        table.add_row(
            score.mode, f"{score.ndcg:.3f}", f"{score.recall:.3f}", f"{score.latency_p50_ms:.1f}"
        )
    Console().print(table)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
