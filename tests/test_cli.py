"""``streamforge chat``, ``sessions`` and ``templates``, run as a user runs them: the CLI as a
subprocess, against real server processes with the simulated provider."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import typer.main
from typer.testing import CliRunner

from streamforge.cli import app
from tests.procs import free_port, server_process

# Deltas with a line break (several `data:` lines), a U+2028 (a line break to
# str.splitlines(), not to SSE) and text beyond ASCII: the answer must come out verbatim.
ANSWER = "You said: {message}. Line two\nhas odd\u2028breaks, café, naïve, 漢字 and the end."
SERVER_ENV = {
    "STREAMFORGE_STREAMING__SIMULATED_DELAY": "0.05",
    "STREAMFORGE_LLM__SIMULATED__ANSWER": ANSWER,
}
# Long answers (about 10 s each), to be stopped with Ctrl-C.
LONG_ENV = {
    "STREAMFORGE_STREAMING__SIMULATED_DELAY": "0.05",
    "STREAMFORGE_LLM__SIMULATED__ANSWER": "Word by word, {message}",
    "STREAMFORGE_LLM__SIMULATED__MIN_WORDS": "200",
}
SESSION_LINE = re.compile(r"^session (\S+)$", re.MULTILINE)
LIMIT = 30.0


def answer_to(message: str) -> str:
    return ANSWER.replace("{message}", message)


def cli_env(url: str) -> dict[str, str]:
    env = {**os.environ, "STREAMFORGE_URL": url, "COLUMNS": "200", "NO_COLOR": "1"}
    env["NO_PROXY"] = "127.0.0.1,localhost"  # a proxy in the environment must not get in between
    env.pop("FORCE_COLOR", None)
    return env


async def start_cli(*args: str, url: str, stdin: bool = False) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamforge",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(url),
    )


async def run_cli(*args: str, url: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    process = await start_cli(*args, url=url, stdin=stdin is not None)
    try:
        async with asyncio.timeout(LIMIT):
            stdout, stderr = await process.communicate(stdin)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def session_of(stderr: str) -> str:
    found = SESSION_LINE.findall(stderr)
    assert len(found) == 1, stderr
    return str(found[0])


async def stored_messages(url: str, session_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
        response = await client.get(f"/sessions/{session_id}/messages")
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items


async def test_chat_prints_the_answer_as_it_arrives(tmp_path: Path) -> None:
    async with server_process(tmp_path, SERVER_ENV) as server:
        process = await start_cli("chat", "hello", url=server.url)
        assert process.stdout is not None and process.stderr is not None
        received = b""
        # (when, stdout so far, whether the CLI was still running)
        partials: list[tuple[float, bytes, bool]] = []
        async with asyncio.timeout(LIMIT):
            while chunk := await process.stdout.read(65536):
                received += chunk
                partials.append((time.monotonic(), received, process.returncode is None))
            stderr = (await process.stderr.read()).decode()
            code = await process.wait()
        assert code == 0, stderr
        stdout = received.decode()
        assert stdout == answer_to("hello") + "\n"
        # Growing partial outputs, read at different times while the CLI was still running.
        early = [(at, text) for at, text, running in partials if running and text != received]
        assert len(early) >= 3, partials
        assert all(received.startswith(text) for _, text in early)
        assert len({len(text) for _, text in early}) == len(early)
        assert early[-1][0] - early[0][0] >= 0.1  # delta by delta, not one burst at the end
        # The terminal shows exactly what the server stored.
        session_id = session_of(stderr)
        messages = await stored_messages(server.url, session_id)
        assert [(m["role"], m["status"]) for m in messages] == [
            ("user", "completed"),
            ("assistant", "completed"),
        ]
        assert messages[0]["content"] == "hello"
        assert stdout == messages[1]["content"] + "\n"


async def test_commands_against_a_server_that_is_down() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    calls = (["chat", "hello"], ["chat"], ["sessions", "list"], ["templates", "show", "x"])
    started = time.monotonic()
    results = await asyncio.gather(
        *(run_cli(*args, "--url", url, url="http://unused.invalid") for args in calls)
    )
    assert time.monotonic() - started < 15
    for args, (code, stdout, stderr) in zip(calls, results, strict=True):
        assert code == 1, (args, stderr)
        assert lines_of(stderr) == [f"error: cannot reach the StreamForge server at {url}"]
        assert "hello" not in stdout


async def test_interactive_chat_keeps_one_session(tmp_path: Path) -> None:
    async with server_process(tmp_path, SERVER_ENV) as server:
        code, stdout, stderr = await run_cli(
            "chat", url=server.url, stdin=b"first question\n\nsecond question\n"
        )
        assert code == 0, stderr
        assert answer_to("first question") in stdout
        assert answer_to("second question") in stdout
        assert stdout.index(answer_to("first question")) < stdout.index(
            answer_to("second question")
        )
        assert stdout.count("you> ") == 4  # two questions, one empty line, then EOF
        assert "error" not in stderr
        session_id = session_of(stderr)
        messages = await stored_messages(server.url, session_id)
        assert [(m["role"], m["content"]) for m in messages] == [
            ("user", "first question"),
            ("assistant", answer_to("first question")),
            ("user", "second question"),
            ("assistant", answer_to("second question")),
        ]
        assert {m["status"] for m in messages} == {"completed"}


async def read_until(
    stream: asyncio.StreamReader, seen: bytearray, text: bytes, count: int
) -> None:
    """Read stdout into ``seen`` until ``text`` is in it ``count`` times."""
    async with asyncio.timeout(LIMIT):
        while seen.count(text) < count:
            chunk = await stream.read(4096)
            assert chunk, f"stdout ended before {text!r}: {bytes(seen)!r}"
            seen.extend(chunk)


async def test_ctrl_c_cancels_the_answer_and_returns_to_the_prompt(tmp_path: Path) -> None:
    async with server_process(tmp_path, LONG_ENV) as server:
        process = await start_cli("chat", url=server.url, stdin=True)
        assert process.stdin is not None and process.stdout is not None
        seen = bytearray()
        try:
            for number, question in enumerate((b"one", b"two"), start=1):
                await read_until(process.stdout, seen, b"you> ", number)
                process.stdin.write(question + b"\n")
                await process.stdin.drain()
                # The answer has begun (its stream id came first): Ctrl-C.
                await read_until(process.stdout, seen, b"Word by word, " + question, 1)
                process.send_signal(signal.SIGINT)
            await read_until(process.stdout, seen, b"you> ", 3)
            process.stdin.write(b"/exit\n")
            await process.stdin.drain()
            process.stdin.close()
            async with asyncio.timeout(LIMIT):
                rest, stderr_bytes = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0
        stderr = stderr_bytes.decode()
        assert stderr.count("cancelled") == 2, stderr
        stdout = (bytes(seen) + rest).decode()
        shown = [part.strip("\n") for part in stdout.split("you> ")[1:3]]
        session_id = session_of(stderr)
        messages = await stored_messages(server.url, session_id)
        assert [(m["role"], m["status"]) for m in messages] == [
            ("user", "completed"),
            ("assistant", "cancelled"),
            ("user", "completed"),
            ("assistant", "cancelled"),
        ]
        # Stopped early, and stored with exactly the text the terminal showed.
        for shown_text, stored in zip(shown, messages[1::2], strict=True):
            assert 0 < len(stored["content"]) < 500
            assert shown_text == stored["content"]


async def test_sessions_and_templates(tmp_path: Path) -> None:
    # A provider whose server is down: its answers end with `event: error`.
    broken = {
        "STREAMFORGE_LLM__OPENAI_COMPATIBLE__ENABLED": "true",
        "STREAMFORGE_LLM__OPENAI_COMPATIBLE__BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "STREAMFORGE_LLM__OPENAI_COMPATIBLE__MODEL": "default",
        "STREAMFORGE_LLM__ATTEMPTS": "1",
    }
    async with server_process(tmp_path, {**SERVER_ENV, **broken}) as server:
        url = server.url
        async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
            older = await client.post("/sessions", json={"title": "an older one"})
            assert older.status_code == 201, older.text
            created = await client.post(
                "/templates",
                json={
                    "name": "support",
                    "system_prompt": "You help {customer}.",
                    "description": "Help desk",
                },
            )
            assert created.status_code == 201, created.text
            updated = await client.put(
                "/templates/support", json={"system_prompt": "You gladly help {customer}."}
            )
            assert updated.status_code == 200, updated.text
        code, _, stderr = await run_cli("chat", "remember this", url=url)
        assert code == 0, stderr
        session_id = session_of(stderr)

        unknown = "01a23065-0000-7000-8000-000000000000"
        missing_sessions = (
            ["sessions", "show", unknown],
            ["sessions", "delete", unknown],
            ["sessions", "show", "no/such"],
            ["chat", "hello", "--session", unknown],
        )
        missing_templates = (
            ["templates", "show", "nope"],
            ["templates", "show", "support", "--version", "9"],
        )
        calls = [
            ["sessions", "list"],
            ["sessions", "list", "--limit", "1"],
            ["sessions", "show", session_id],
            ["templates", "list"],
            ["templates", "show", "support"],
            ["templates", "show", "support", "--version", "1"],
            *missing_sessions,
            *missing_templates,
        ]
        results = await asyncio.gather(*(run_cli(*args, url=url) for args in calls))
        outcome = {" ".join(args): result for args, result in zip(calls, results, strict=True)}

        code, stdout, stderr = outcome["sessions list"]
        assert code == 0, stderr
        assert "id" in stdout and "title" in stdout and "updated" in stdout
        assert session_id in stdout and "remember this" in stdout
        assert older.json()["id"] in stdout and "an older one" in stdout
        code, stdout, stderr = outcome["sessions list --limit 1"]
        assert code == 0, stderr
        assert session_id in stdout and "an older one" not in stdout

        code, stdout, stderr = outcome[f"sessions show {session_id}"]
        assert code == 0, stderr
        assert "user (completed)" in stdout and "assistant (completed)" in stdout
        assert stdout.index("remember this") < stdout.index(answer_to("remember this"))

        code, stdout, stderr = outcome["templates list"]
        assert code == 0, stderr
        assert "default" in stdout and "Help desk" not in stdout  # v2 has no description
        assert any(
            "support" in line and " 2 " in line and "customer" in line
            for line in stdout.splitlines()
        ), stdout
        code, stdout, stderr = outcome["templates show support"]
        assert code == 0, stderr
        assert "support v2" in stdout and "You gladly help {customer}." in stdout
        code, stdout, stderr = outcome["templates show support --version 1"]
        assert code == 0, stderr
        assert "support v1" in stdout and "Help desk" in stdout
        assert "You help {customer}." in stdout

        # Not found: one line on stderr and exit code 1.
        for args in missing_sessions:
            code, _, stderr = outcome[" ".join(args)]
            assert code == 1, (args, stderr)
            assert lines_of(stderr) == [f"error: session {args[-1]} not found"], args
        for args in missing_templates:
            code, _, stderr = outcome[" ".join(args)]
            assert code == 1, (args, stderr)
            assert len(lines_of(stderr)) == 1 and lines_of(stderr)[0].startswith("error: template")

        # An answer that fails: one line on stderr, exit code 1.
        code, stdout, stderr = await run_cli(
            "chat", "hi", "--provider", "openai_compatible", url=url
        )
        assert code == 1, stderr
        assert len(lines_of(stderr)) == 1 and "(provider_unavailable)" in stderr, stderr
        assert stdout.strip() == ""

        code, stdout, stderr = await run_cli("sessions", "delete", session_id, url=url)
        assert code == 0, stderr
        assert f"deleted session {session_id}" in stdout
        code, _, stderr = await run_cli("sessions", "show", session_id, url=url)
        assert code == 1 and lines_of(stderr) == [f"error: session {session_id} not found"]


def all_commands() -> list[tuple[list[str], Any]]:
    """Every command and sub-command registered with the Typer app, by its path of names."""
    found: list[tuple[list[str], Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def test_every_command_has_help() -> None:
    commands = all_commands()
    names = {" ".join(path) for path, _ in commands}
    expected = {"chat", "sessions list", "sessions show", "sessions delete", "templates list"}
    assert expected | {"templates show", "serve", "ingest", "eval", "version"} <= names
    runner = CliRunner()
    for path, command in commands:
        if path:
            assert command.help, f"{' '.join(path)} has no help text"
        for param in command.params:
            if param.name != "help":
                assert getattr(param, "help", None), f"{' '.join(path)}: {param.name} has no help"
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output
        if path:
            assert " ".join(path) in result.output


# -- the first hour: options where users put them, errors that point at the fix, keys that say
# which database they act on -------------------------------------------------------------------


async def run_in(
    cwd: Path, *args: str, env: dict[str, str] | None = None, url: str = "http://unused.invalid"
) -> tuple[int, str, str]:
    """The CLI run from ``cwd`` with settings ``env`` (and no STREAMFORGE_* of the caller's)."""
    base = {k: v for k, v in cli_env(url).items() if not k.startswith("STREAMFORGE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamforge",
        *args,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**base, **(env or {})},
    )
    async with asyncio.timeout(LIMIT):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_version_option() -> None:
    from streamforge import __version__

    code, stdout, _ = await run_cli("--version", url="http://unused.invalid")
    assert code == 0 and stdout.strip() == f"streamforge {__version__}"


async def test_keys_say_which_database_and_make_none_unasked(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args in (["keys", "create", "--user", "ada"], ["keys", "list"], ["keys", "revoke", "x"]):
        code, stdout, stderr = await run_in(elsewhere, *args)
        assert code == 1 and stdout == "", (args, stderr)
        lines = lines_of(stderr)
        expected = elsewhere / "data" / "streamforge.db"
        assert lines[0].startswith(f"database: SQLite file {expected} (the default data dir")
        assert lines[1].startswith(f"error: there is no database at {expected}")
        assert "--create-database" in lines[1] and len(lines) == 2
    assert list(elsewhere.iterdir()) == []  # nothing made

    code, stdout, stderr = await run_in(
        elsewhere, "keys", "create", "--user", "ada", "--create-database"
    )
    assert code == 0, stderr
    assert stdout.startswith("sf_") and (elsewhere / "data" / "streamforge.db").is_file()


async def test_key_ids_are_whole_and_unique_prefixes_revoke(tmp_path: Path) -> None:
    env = {"STREAMFORGE_DATA_DIR": str(tmp_path / "data")}
    ids = []
    for user in ("ada", "bob"):
        args = ["keys", "create", "--user", user, "--name", "a rather long name for a key"]
        code, _, stderr = await run_in(tmp_path, *args, "--create-database", env=env)
        assert code == 0, stderr
        ids.append(stderr.split("key id ", 1)[1].split(";", 1)[0])
        assert f"database: SQLite file {tmp_path / 'data' / 'streamforge.db'}" in stderr
    narrow = {**env, "COLUMNS": "60"}
    code, stdout, _ = await run_in(tmp_path, "keys", "list", env=narrow)
    assert code == 0 and all(key_id in stdout for key_id in ids), stdout
    # Four characters are the same for ids made within weeks of each other: ambiguous.
    code, stdout, stderr = await run_in(tmp_path, "keys", "revoke", ids[0][:4], env=env)
    assert code == 1 and "give more of it" in stderr and stdout == ""
    # A cut id as a table shows it ("…") is enough when it is unique.
    code, stdout, stderr = await run_in(tmp_path, "keys", "revoke", ids[0][:-6] + "…", env=env)
    assert code == 0 and stdout.startswith(f"revoked {ids[0]} "), stderr
    code, stdout, stderr = await run_in(tmp_path, "keys", "revoke", "nope", env=env)
    assert code == 1 and lines_of(stderr)[-1] == (
        "error: no key has the id 'nope' (see: streamforge keys list)"
    )


async def test_options_after_the_command_and_errors_that_point_at_the_fix(
    tmp_path: Path,
) -> None:
    env = {**SERVER_ENV, "STREAMFORGE_AUTH__ENABLED": "true"}
    async with server_process(tmp_path, env) as server:
        data = {"STREAMFORGE_DATA_DIR": str(tmp_path / "server" / "data")}
        # The server made its database: the keys command finds it, no flag needed.
        code, key, stderr = await run_in(tmp_path, "keys", "create", "--user", "ada", env=data)
        assert code == 0, stderr
        key = key.strip()
        url = server.url

        for args in (
            ["chat", "hello", "--key", key, "--url", url],
            ["--key", key, "--url", url, "chat", "hello"],
            ["--url", url, "chat", "hello", "--key", key],
        ):
            code, stdout, stderr = await run_in(tmp_path, *args)
            assert code == 0, (args, stderr)
            assert stdout == answer_to("hello") + "\n"
        code, stdout, stderr = await run_in(
            tmp_path, "sessions", "list", "--key", key, "--url", url
        )
        assert code == 0 and "hello" in stdout, stderr
        code, _, stderr = await run_in(
            tmp_path, "chat", "hello", "--url", url, env={"STREAMFORGE_API_KEY": key}
        )
        assert code == 0, stderr

        # Without a key, and with a wrong one: say how to give one.
        for args in (["chat", "hello"], ["sessions", "list"], ["templates", "list"]):
            code, stdout, stderr = await run_in(tmp_path, *args, "--url", url)
            assert code == 1 and stdout == ""
            assert lines_of(stderr) == [
                "error: the server needs an API key: give it with --key KEY or "
                "STREAMFORGE_API_KEY (an administrator creates one with: streamforge keys "
                "create --user NAME)"
            ]
        code, _, stderr = await run_in(tmp_path, "chat", "hello", "--url", url, "--key", "sf_no")
        assert code == 1 and lines_of(stderr) == [
            "error: the server refused the API key (unknown or revoked): check --key or "
            "STREAMFORGE_API_KEY"
        ]

        # The OpenAI-compatible base URL is not the server's.
        code, _, stderr = await run_in(tmp_path, "chat", "hello", "--url", f"{url}/v1/")
        assert code == 1 and lines_of(stderr) == [
            f"error: {url}/v1/ is not the server's base URL: give --url {url} (the address "
            "the server listens on, without /v1)"
        ]
        # An empty message, in the project's words.
        code, _, stderr = await run_in(tmp_path, "chat", "  ", "--url", url, "--key", key)
        assert code == 1 and lines_of(stderr) == [
            "error: the message is empty: give some text to send, or no message at all for "
            "an interactive conversation"
        ]
