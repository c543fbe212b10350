"""``streamforge chat``: one message or a conversation, the answer streamed to stdout."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from streamforge.cli.client import (
    REQUEST_TIMEOUT,
    KeyOption,
    UrlOption,
    auth_headers,
    segment,
    server,
    server_error,
    target,
)
from streamforge.cli.common import fail, note
from streamforge.cli.sse import Event, parse_events

if TYPE_CHECKING:
    import httpx


CANCEL_TIMEOUT = 5.0
EXIT_WORDS = {"/exit", "/quit"}


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


def _on_event(event: Event, turn: _Turn, output: _Output) -> bool:
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
    message = server_error(response)
    session_id = body.get("session_id")
    if response.status_code == 404 and session_id and message.startswith("session "):
        return f"session {session_id} not found"
    return message


def _cancel(url: str, stream_id: str) -> bool:
    """Ask the server to stop a generation: it stores the reply ``cancelled`` and ends the
    stream with ``done``. False when the server could not be asked.

    A client of its own: this runs in a signal handler, while the stream's client is busy."""
    import httpx

    path = f"/chat/streams/{segment(stream_id)}/cancel"
    try:
        with httpx.Client(base_url=url, timeout=CANCEL_TIMEOUT, headers=auth_headers()) as client:
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
            events = parse_events(response.iter_bytes())
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
        raise  # no server there: server says so
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
        note(f"chatting with {url}: /exit or Ctrl-D leaves, Ctrl-C stops an answer")
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
            note(f"session {session_id}")
        if session_id is not None:
            # The session keeps the template version it started with: name it only once.
            options.pop("template", None)
            options.pop("variables", None)
        if turn.cancelled:
            note("cancelled")
        elif turn.error is not None:
            typer.echo(f"error: {turn.error}", err=True)


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
    url = target(url, key)
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
    with server(url, stream=True) as client:
        if message is None:
            code = _converse(client, url, options)
            raise typer.Exit(code)
        turn = _chat_turn(client, url, {**options, "message": message})
    if turn.stdout_closed:
        raise typer.Exit(1)
    if turn.cancelled:
        note("cancelled")
        raise typer.Exit(130)
    if turn.error is not None:
        fail(turn.error)
    if turn.session_id is not None:
        note(f"session {turn.session_id}")
