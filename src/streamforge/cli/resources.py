"""``streamforge sessions`` and ``streamforge templates``: a server's resources."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from streamforge.cli.client import (
    KeyOption,
    UrlOption,
    call,
    segment,
    server,
    target,
    when,
)

sessions_app = typer.Typer(help="List, show and delete chat sessions.", no_args_is_help=True)


@sessions_app.command("list")
def sessions_list(
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 20,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """List sessions, newest first."""
    url = target(url, key)
    from rich.console import Console
    from rich.table import Table

    with server(url) as client:
        page = call(client, "GET", "/sessions", params={"limit": limit})
    items = page["items"]
    if not items:
        typer.echo("no sessions")
        return
    table = Table(caption=f"{len(items)} of {page['total']} sessions")
    table.add_column("id", no_wrap=True)
    table.add_column("title")
    table.add_column("updated", no_wrap=True)
    for item in items:
        table.add_row(item["id"], item.get("title") or "", when(item.get("updated_at")))
    Console().print(table, markup=False, highlight=False)


@sessions_app.command("show")
def sessions_show(
    session_id: Annotated[str, typer.Argument(metavar="ID", help="The session's id.")],
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Show a session's messages, oldest first: role, status and content."""
    url = target(url, key)
    from rich.console import Console

    not_found = f"session {session_id} not found"
    path = f"/sessions/{segment(session_id)}"
    messages: list[dict[str, Any]] = []
    with server(url) as client:
        found = call(client, "GET", path, not_found=not_found)
        while True:
            params = {"limit": 100, "offset": len(messages)}
            page = call(client, "GET", f"{path}/messages", not_found=not_found, params=params)
            messages.extend(page["items"])
            if not page["items"] or len(messages) >= page["total"]:
                break
    console = Console()
    title = found.get("title") or "(untitled)"
    console.print(f"session {found['id']}: {title}", style="bold", markup=False, soft_wrap=True)
    console.print(f"updated {when(found.get('updated_at'))}", style="dim", soft_wrap=True)
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
    url = target(url, key)
    with server(url) as client:
        path = f"/sessions/{segment(session_id)}"
        call(client, "DELETE", path, not_found=f"session {session_id} not found")
    typer.echo(f"deleted session {session_id}")


templates_app = typer.Typer(help="List and show prompt templates.", no_args_is_help=True)


@templates_app.command("list")
def templates_list(
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many.")] = 20,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """List templates: the built-in default, then the latest version of each."""
    url = target(url, key)
    from rich.console import Console
    from rich.table import Table

    with server(url) as client:
        page = call(client, "GET", "/templates", params={"limit": limit})
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
    url = target(url, key)
    from rich.console import Console

    not_found = (
        f"template {name} not found"
        if version is None
        else f"template {name} has no version {version} (or does not exist)"
    )
    params = None if version is None else {"version": version}
    with server(url) as client:
        found = call(
            client, "GET", f"/templates/{segment(name)}", not_found=not_found, params=params
        )
    console = Console()
    console.print(f"{found['name']} v{found['version']}", style="bold", markup=False)
    if found.get("description"):
        console.print(found["description"], markup=False, highlight=False, soft_wrap=True)
    variables = ", ".join(found.get("variables") or []) or "none"
    console.print(f"variables: {variables}", style="dim", markup=False, soft_wrap=True)
    console.print()
    console.print(found["system_prompt"], markup=False, highlight=False, soft_wrap=True)
