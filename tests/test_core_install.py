"""The core install: a fresh virtual environment with ``locks/core.txt`` and the project without
extras has no llama.cpp and no PyTorch, and still serves ``/chat`` and ``/v1/chat/completions``
through the ``openai_compatible`` provider (a loopback server speaking OpenAI's wire format).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.polling import eventually
from tests.procs import free_port
from tests.sse_client import read_chat
from tests.vendors import SERVERS, Behaviour

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _bin(environment: Path, name: str) -> Path:
    return environment / ("Scripts" if os.name == "nt" else "bin") / name


@pytest.fixture(scope="module")
def core_environment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    environment = tmp_path_factory.mktemp("core") / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = str(_bin(environment, "python"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for command in (
        [python, "-m", "pip", "install", "-q", "--require-hashes", "--no-deps", "-r",
         str(ROOT / "locks" / "core.txt")],
        [python, "-m", "pip", "install", "-q", "--no-deps", str(ROOT)],
    ):  # fmt: skip
        completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return environment


def _imports(environment: Path, module: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(_bin(environment, "python")), "-c", f"import {module}"],
        env=env,
        capture_output=True,
        text=True,
        cwd=environment,
    )


def test_core_install_has_no_llama_cpp_and_no_torch(core_environment: Path) -> None:
    for module in ("torch", "llama_cpp", "sentence_transformers"):
        completed = _imports(core_environment, module)
        assert completed.returncode != 0 and "ModuleNotFoundError" in completed.stderr, module
    # The project itself imports (from the environment, not from this checkout).
    completed = _imports(core_environment, "streamforge.main")
    assert completed.returncode == 0, completed.stderr


@pytest.fixture
def upstream() -> Iterator[str]:
    server = SERVERS["openai"](Behaviour(), host="127.0.0.1", port=0)
    with server:
        yield server.base_url


async def test_core_install_serves_chat_through_openai_compatible(
    core_environment: Path, upstream: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        STREAMFORGE_DATABASE__URL=f"sqlite+aiosqlite:///{tmp_path / 'core.db'}",
        STREAMFORGE_LLM__PROVIDER="openai_compatible",
        STREAMFORGE_LLM__OPENAI_COMPATIBLE__BASE_URL=upstream,
        STREAMFORGE_LLM__OPENAI_COMPATIBLE__MODEL="qwen2.5-7b-instruct",
    )
    log = (tmp_path / "server.log").open("wb")
    process = _start_server(core_environment, port, env, tmp_path, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            health = await _wait_healthy(client, process, tmp_path)
            chat = await read_chat(client, {"message": "Hello"})
            completion = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "openai_compatible",
                    "messages": [{"role": "user", "content": "Hello"}],
                },
            )
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()

    assert health["components"]["provider"]["name"] == "openai_compatible"
    # No local embedder in the core: the vector store says which extra brings it.
    vector_store = health["components"]["vector_store"]
    assert vector_store["status"] == "unavailable"
    assert "streamforge[embeddings]" in vector_store["error"]
    assert chat.status == 200 and chat.done["status"] == "completed"
    assert chat.session["provider"] == "openai_compatible"
    assert chat.text == Behaviour().text
    assert completion.status_code == 200
    assert completion.json()["choices"][0]["message"]["content"] == Behaviour().text


def _start_server(
    environment: Path, port: int, env: dict[str, str], cwd: Path, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    command = [str(_bin(environment, "streamforge")), "serve", "--port", str(port)]
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)


async def _wait_healthy(
    client: httpx.AsyncClient, process: subprocess.Popen[bytes], tmp_path: Path
) -> dict[str, object]:
    async def health() -> dict[str, object]:
        if process.poll() is not None:
            raise AssertionError((tmp_path / "server.log").read_text()[-3000:])
        return (await client.get("/health")).json()  # type: ignore[no-any-return]

    return await eventually(
        health,
        timeout=30,
        interval=0.1,
        retry_on=(httpx.TransportError,),
        what="the core server starting",
    )


def test_local_provider_without_the_extra_says_which_to_install(core_environment: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["STREAMFORGE_LLM__PROVIDER"] = "local"
    code = (
        "from streamforge.chains.core.llm_setup import build_registry\n"
        "from streamforge.config.settings import Settings\n"
        "build_registry(Settings())\n"
    )
    completed = subprocess.run(
        [str(_bin(core_environment, "python")), "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=core_environment,
    )
    assert completed.returncode != 0
    assert "streamforge[local]" in completed.stderr and "llama-cpp-python" in completed.stderr
    assert sys.executable  # the test process itself keeps every extra
