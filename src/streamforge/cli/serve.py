"""``streamforge serve``: the HTTP server, with its workers and shared model process."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from streamforge.cli.common import fail, read_settings

if TYPE_CHECKING:
    from streamforge.chains.providers.local.host import ModelHost
    from streamforge.config.settings import Settings


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

    settings = read_settings()
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
