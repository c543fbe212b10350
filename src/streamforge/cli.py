"""The ``streamforge`` command line."""

from __future__ import annotations

from typing import Annotated

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
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    reload: Annotated[bool, typer.Option(help="Restart when the code changes.")] = False,
) -> None:
    """Run the HTTP server."""
    import uvicorn

    from streamforge.config.settings import Settings

    settings = Settings()
    uvicorn.run(
        "streamforge.main:app",
        host=host or settings.server.host,
        port=port if port is not None else settings.server.port,
        workers=workers or settings.server.workers,
        reload=reload,
        log_level=settings.server.log_level,
        timeout_graceful_shutdown=10,
    )


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
