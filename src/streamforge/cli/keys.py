"""``streamforge keys``: API keys, on this machine's configured database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from streamforge.cli.client import when
from streamforge.cli.common import fail, note, read_settings

keys_app = typer.Typer(
    help="Create, list and revoke API keys (on this machine's configured database).",
    no_args_is_help=True,
)


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

    settings = read_settings(check=False)
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
    note(f"database: {where} ({how})")
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
    note(f"key id {key_id}; store the key now: it is not shown again")


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
            when(info.created_at.isoformat()),
            when(info.last_used_at.isoformat() if info.last_used_at else None),
            when(info.revoked_at.isoformat() if info.revoked_at else None),
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
