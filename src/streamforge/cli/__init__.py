"""The ``streamforge`` command line: the Typer app, its root options, and the commands
registered from the modules of this package (one concept each)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from streamforge import __version__
from streamforge.cli.chat import chat
from streamforge.cli.client import DEFAULT_URL, connection
from streamforge.cli.common import read_settings
from streamforge.cli.eval import evaluate
from streamforge.cli.ingest import ingest
from streamforge.cli.keys import keys_app
from streamforge.cli.resources import sessions_app, templates_app
from streamforge.cli.serve import serve

__all__ = ["app", "main"]

app = typer.Typer(
    help="StreamForge: a self-hostable streaming chat backend.",
    no_args_is_help=False,
    add_completion=False,
)
app.command()(serve)
app.command()(ingest)
app.command("eval")(evaluate)
app.command()(chat)
app.add_typer(sessions_app, name="sessions")
app.add_typer(templates_app, name="templates")
app.add_typer(keys_app, name="keys")


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
    connection.key = key
    connection.url = url
    # `streamforge` (or `python -m streamforge`) with no command starts the server.
    if ctx.invoked_subcommand is None:
        serve()


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

    settings = read_settings(check=False)
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
