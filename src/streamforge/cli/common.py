"""What every command shares: one-line failures, the settings, notes on stderr."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from streamforge.config.settings import Settings


def fail(message: str, code: int = 1) -> NoReturn:
    """One readable line on stderr and a non-zero exit."""
    typer.echo(f"error: {' '.join(message.splitlines())}", err=True)
    raise typer.Exit(code)


def read_settings(*, check: bool = True) -> Settings:
    """The settings from the environment and .env; unusable ones end the command with one
    ``error:`` line per problem. ``check``: also what each enabled provider needs."""
    from streamforge.config.loading import SettingsInvalid, load_settings

    try:
        return load_settings(check=check)
    except SettingsInvalid as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1) from None


def note(text: str) -> None:
    """A dim line on stderr: information that is not the answer."""
    from rich.console import Console

    Console(stderr=True).print(text, style="dim", markup=False, highlight=False, soft_wrap=True)
