"""Settings that explain themselves: default models for every provider, one line per wrong or
missing setting (for ``streamforge serve`` and for ``uvicorn streamforge.main:app``),
``streamforge config``, and ``.env.example`` listing every setting."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamforge.config.loading import SettingsInvalid, env_names, load_settings
from tests.procs import free_port, server_process
from tests.sse_client import read_chat
from tests.vendors import SERVERS, Behaviour, VendorServer

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 60.0
DEFAULT_MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "ollama": "llama3.2",
    # Without a model, the first one the server lists at GET /v1/models.
    "openai_compatible": SERVERS["openai_compatible"].default_models[0],
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting of the machine running the tests, no .env file of the repository."""
    for name in list(os.environ):
        if name.upper().startswith("STREAMFORGE_"):
            monkeypatch.delenv(name)
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OLLAMA_HOST", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def base_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMFORGE_")}
    env["STREAMFORGE_DATA_DIR"] = str(tmp_path / "data")
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.update({f"STREAMFORGE_{name}": value for name, value in settings.items()})
    return env


async def run(
    *args: str, env: dict[str, str], cwd: Path, limit: float = LIMIT
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(limit):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# -- default models ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "provider"),
    [
        ("STREAMFORGE_LLM__OPENAI__API_KEY", "sk-x", "openai"),
        ("STREAMFORGE_LLM__ANTHROPIC__API_KEY", "sk-ant-x", "anthropic"),
        ("STREAMFORGE_LLM__OLLAMA__ENABLED", "true", "ollama"),
        ("STREAMFORGE_LLM__OPENAI_COMPATIBLE__BASE_URL", "http://127.0.0.1:1/v1", None),
    ],
)
def test_one_field_of_a_provider_keeps_the_others_defaults(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, provider: str | None
) -> None:
    """The first-hour crash: setting a provider's key replaced its whole group, and the model
    it no longer had was "Field required"."""
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("STREAMFORGE_LLM__PROVIDER", "simulated")
    settings = load_settings()
    llm = settings.llm
    assert (llm.openai.model, llm.anthropic.model, llm.ollama.model) == (
        "gpt-4o-mini",
        "claude-haiku-4-5",
        "llama3.2",
    )
    assert llm.ollama.base_url == "http://127.0.0.1:11434"
    assert llm.anthropic.context_window == 200_000
    if provider is not None:
        assert getattr(llm, provider).model == DEFAULT_MODELS[provider]


def test_lists_take_commas_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFORGE_LLM__FALLBACKS", "openai, anthropic")
    monkeypatch.setenv("STREAMFORGE_CORS__ORIGINS", '["http://a.test", "http://b.test"]')
    monkeypatch.setenv("STREAMFORGE_LLM__OPENAI__API_KEY", "sk-x")
    monkeypatch.setenv("STREAMFORGE_LLM__ANTHROPIC__API_KEY", "sk-x")
    monkeypatch.setenv("STREAMFORGE_LLM__PROVIDER", "simulated")
    settings = load_settings()
    assert settings.llm.fallbacks == ["openai", "anthropic"]
    assert settings.cors.origins == ["http://a.test", "http://b.test"]


def test_every_problem_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFORGE_LLM__PROVIDER", "simulatd")
    monkeypatch.setenv("STREAMFORGE_SERVER__PORT", "eighty")
    with pytest.raises(SettingsInvalid) as caught:
        load_settings()
    problems = caught.value.problems
    assert len(problems) == 2
    assert any(p.startswith("STREAMFORGE_LLM__PROVIDER='simulatd': must be") for p in problems)
    assert any(p.startswith("STREAMFORGE_SERVER__PORT='eighty': must be") for p in problems)


# -- wrong configurations: streamforge serve -------------------------------------------------

# (settings, the variable the line must name, a word of what is allowed)
WRONG: list[tuple[dict[str, str], str, str]] = [
    ({"LLM__PROVIDER": "simulatd"}, "STREAMFORGE_LLM__PROVIDER", "'simulated'"),
    ({"SERVER__PORT": "eighty"}, "STREAMFORGE_SERVER__PORT", "integer"),
    ({"SERVER__PORT": "70000"}, "STREAMFORGE_SERVER__PORT", "65535"),
    ({"LLM__FALLBACKS": "openai,antropic"}, "STREAMFORGE_LLM__FALLBACKS", "'anthropic'"),
    ({"LLM__PROVIDER": "openai"}, "STREAMFORGE_LLM__OPENAI__API_KEY", "API key"),
    ({"LLM__PROVIDER": "anthropic"}, "STREAMFORGE_LLM__ANTHROPIC__API_KEY", "API key"),
    (
        {"LLM__PROVIDER": "openai_compatible"},
        "STREAMFORGE_LLM__OPENAI_COMPATIBLE__BASE_URL",
        "URL",
    ),
    (
        {"LLM__PROVIDER": "ollama", "LLM__OLLAMA__BASE_URL": "localhost:11434"},
        "STREAMFORGE_LLM__OLLAMA__BASE_URL",
        "http://",
    ),
    ({"DATABASE__URL": "mysql://u:hunter2@db/x"}, "STREAMFORGE_DATABASE__URL", "postgresql://"),
    (
        {"STREAMING__DISCONNECT_POLICY": "wait"},
        "STREAMFORGE_STREAMING__DISCONNECT_POLICY",
        "'cancel'",
    ),
    ({"AUTH__ENABLED": "maybe"}, "STREAMFORGE_AUTH__ENABLED", "boolean"),
    ({"REDIS__URL": "http://127.0.0.1:6379"}, "STREAMFORGE_REDIS__URL", "redis://"),
    (
        {"LLM__PROVIDER": "local", "LLM__LOCAL__MODEL_PATH": "/nowhere/model.gguf"},
        "STREAMFORGE_LLM__LOCAL__MODEL_PATH",
        "no such file",
    ),
]


async def test_wrong_configurations_stop_serve_with_one_line_each(tmp_path: Path) -> None:
    port = str(free_port())  # nothing may listen there: serve must stop first

    async def attempt(settings: dict[str, str]) -> tuple[int, str, str]:
        env = base_env(tmp_path, **{"LLM__PROVIDER": "simulated", **settings})
        command = [sys.executable, "-m", "streamforge", "serve", "--port", port]
        return await run(*command, env=env, cwd=tmp_path)

    results = await asyncio.gather(*(attempt(settings) for settings, _, _ in WRONG))
    for (settings, variable, allowed), (code, stdout, stderr) in zip(WRONG, results, strict=True):
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code != 0, (settings, stderr)
        assert len(lines) == 1, (settings, stderr)
        assert lines[0].startswith(f"error: {variable}"), (settings, lines)
        assert allowed in lines[0], (settings, lines)
        assert "Traceback" not in stderr and stdout == ""
        assert "hunter2" not in stderr  # a password in a URL is never printed


async def test_uvicorn_import_path_logs_the_problems_without_a_traceback(tmp_path: Path) -> None:
    env = base_env(tmp_path, LLM__PROVIDER="simulatd", LLM__OPENAI__TIMEOUT="-1")
    command = [sys.executable, "-m", "uvicorn", "streamforge.main:app", "--port", str(free_port())]
    code, stdout, stderr = await run(*command, env=env, cwd=tmp_path)
    log = stdout + stderr
    assert code != 0
    assert "Traceback" not in log
    assert re.search(r"^\s*STREAMFORGE_LLM__PROVIDER='simulatd': must be .*'simulated'", log, re.M)
    assert re.search(
        r"^\s*STREAMFORGE_LLM__OPENAI__TIMEOUT='-1': must be greater than 0", log, re.M
    )


# -- each provider from its key (or URL) alone -------------------------------------------------


@asynccontextmanager
async def vendor(provider: str) -> AsyncIterator[VendorServer]:
    async with SERVERS[provider](Behaviour(headers={"Connection": "close"})) as server:
        yield server


# The settings a user gives: the key (or the URL, for servers without keys), and the base URL
# of the loopback server standing in for the vendor.
ONLY = {
    "openai": lambda url: {"LLM__OPENAI__API_KEY": "sk-x", "LLM__OPENAI__BASE_URL": url},
    "anthropic": lambda url: {
        "LLM__ANTHROPIC__API_KEY": "sk-ant-x",
        "LLM__ANTHROPIC__BASE_URL": url,
    },
    "ollama": lambda url: {"LLM__OLLAMA__BASE_URL": url},
    "openai_compatible": lambda url: {"LLM__OPENAI_COMPATIBLE__BASE_URL": url},
}


@pytest.mark.parametrize("provider", sorted(ONLY))
async def test_serve_with_only_the_key_or_url_of_a_provider(tmp_path: Path, provider: str) -> None:
    async with vendor(provider) as server:
        settings = {"LLM__PROVIDER": provider, **ONLY[provider](server.base_url)}
        env = {f"STREAMFORGE_{name}": value for name, value in settings.items()}
        async with (
            server_process(tmp_path, env) as streamforge,
            httpx.AsyncClient(base_url=streamforge.url, timeout=30, trust_env=False) as client,
        ):
            stream = await read_chat(client, {"message": "hello"})
            assert stream.status == 200
            assert stream.done["status"] == "completed", stream.events
            model = DEFAULT_MODELS[provider]
            assert stream.session["model"] == model
            assert stream.done["model"] == model
            session_id = stream.session["session_id"]
            messages = (await client.get(f"/sessions/{session_id}/messages")).json()["items"]
            assert messages[1]["model"] == model and messages[1]["provider"] == provider
            health = (await client.get("/chat/health")).json()
            assert health["models"][provider] == model
            assert health["provider"]["model"] == model
            listed = (await client.get("/v1/models")).json()["data"]
            assert {"id": provider, "model": model}.items() <= next(
                item for item in listed if item["id"] == provider
            ).items()
        assert server.last_chat.json["model"] == model


# -- streamforge config and .env.example ------------------------------------------------------


async def test_config_prints_values_sources_and_masks_secrets(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "STREAMFORGE_LLM__PROVIDER=anthropic\n"
        "STREAMFORGE_DATABASE__URL=postgresql://ada:hunter2@db.test/chat\n"
    )
    env = base_env(tmp_path, LLM__ANTHROPIC__API_KEY="sk-ant-supersecret-1234")
    command = [sys.executable, "-m", "streamforge", "config"]
    code, stdout, stderr = await run(*command, env=env, cwd=tmp_path)
    assert code == 0, stderr
    rows: dict[str, tuple[str, str]] = {}
    for line in stdout.splitlines():
        setting, _, origin = line.partition("  # ")
        name, _, value = setting.strip().partition("=")
        rows[name] = (value, origin.strip())
    assert set(rows) == set(env_names())
    assert rows["STREAMFORGE_LLM__PROVIDER"] == ("anthropic", ".env file")
    assert rows["STREAMFORGE_LLM__ANTHROPIC__API_KEY"] == ("****1234", "environment")
    assert rows["STREAMFORGE_DATABASE__URL"] == ("postgresql://ada:****@db.test/chat", ".env file")
    assert rows["STREAMFORGE_LLM__ANTHROPIC__MODEL"] == ("claude-haiku-4-5", "default")
    assert rows["STREAMFORGE_SERVER__PORT"] == ("8000", "default")
    assert "supersecret" not in stdout and "hunter2" not in stdout

    code, stdout, stderr = await run(
        *command, "--changed", env=base_env(tmp_path, LLM__PROVIDER="openai"), cwd=tmp_path
    )
    assert code == 1
    # The data directory and the provider from the environment, the URL from .env.
    names = [line.split("=", 1)[0] for line in stdout.splitlines()]
    assert names == [
        "STREAMFORGE_DATA_DIR",
        "STREAMFORGE_DATABASE__URL",
        "STREAMFORGE_LLM__PROVIDER",
    ]
    assert stderr.strip() == (
        "error: STREAMFORGE_LLM__OPENAI__API_KEY is not set: the openai provider "
        "(STREAMFORGE_LLM__PROVIDER=openai) needs an API key"
    )


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    documented = re.findall(r"^# (STREAMFORGE_[A-Z0-9_]+)=", text, re.MULTILINE)
    assert sorted(documented) == sorted(env_names())
    assert len(documented) == len(set(documented))


def test_env_example_defaults_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uncommenting every line of .env.example changes nothing."""
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    values: dict[str, Any] = dict(
        re.findall(r"^# (STREAMFORGE_[A-Z0-9_]+)=(.*)$", text, re.MULTILINE)
    )
    for name, value in values.items():
        if value:
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("STREAMFORGE_LLM__PROVIDER", "simulated")
    configured = load_settings(check=False).model_dump()
    for name in values:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STREAMFORGE_LLM__PROVIDER", "simulated")
    assert configured == load_settings(check=False).model_dump()
