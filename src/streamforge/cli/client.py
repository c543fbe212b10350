"""Talking to a running server: which one, with which key, and its HTTP client."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer

from streamforge.cli.common import fail

if TYPE_CHECKING:
    import httpx


DEFAULT_URL = "http://127.0.0.1:8000"
CONNECT_TIMEOUT = 10.0  # seconds to open a connection to the server
REQUEST_TIMEOUT = 30.0  # seconds a plain (not streamed) request may take


@dataclass(slots=True)
class Connection:
    """Where the commands that talk to a server send their requests, and the API key they
    send: --url and --key, given before the command or after it (after wins), or
    STREAMFORGE_URL and STREAMFORGE_API_KEY."""

    key: str | None = None
    url: str | None = None


connection = Connection()


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {connection.key}"} if connection.key else {}


def target(url: str | None, key: str | None) -> str:
    """The server URL a command talks to (its --url, the one before the command, or the
    default), after taking its --key. A URL of the /v1 API rather than of the server is
    refused with the fix."""
    if key is not None:
        connection.key = key
    chosen = (url or connection.url or DEFAULT_URL).strip()
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


@contextlib.contextmanager
def server(url: str, *, stream: bool = False) -> Iterator[httpx.Client]:
    """An HTTP client for the server at ``url``. Failing to reach it is one line on stderr and
    exit code 1. Streams get no read timeout: an answer may take its time."""
    import httpx

    timeout = httpx.Timeout(None if stream else REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)
    try:
        with httpx.Client(base_url=url, timeout=timeout, headers=auth_headers()) as client:
            yield client
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        fail(f"{url} is not a usable server URL ({exc})")
    except (httpx.ConnectError, httpx.ConnectTimeout):
        fail(f"cannot reach the StreamForge server at {url}")
    except httpx.TimeoutException:
        fail(f"the StreamForge server at {url} did not answer in time")
    except httpx.HTTPError as exc:
        fail(f"the connection to the StreamForge server at {url} failed ({type(exc).__name__})")


def server_error(response: httpx.Response) -> str:
    """The server's error message (``{"error": {"code", "message"}}``), else the status; a
    refused key says how to give one."""
    if response.status_code == 401:
        if connection.key:
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


def call(
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
        fail(server_error(response))
    if response.status_code == 204:
        return None
    try:
        return response.json()
    except ValueError:
        fail(f"{response.url} did not answer JSON: is this a StreamForge server?")


def segment(value: str) -> str:
    """``value`` as one URL path segment: an id or a name can never reach another route."""
    return quote(value, safe="")


def when(value: str | None) -> str:
    """An ISO timestamp from the server, in the local time zone."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
