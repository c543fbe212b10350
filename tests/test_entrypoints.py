"""The ways to start the server, each as a real process answering the README's curl example."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.polling import eventually_sync

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "command",
    [
        [str(BIN / "streamforge"), "serve", "--host", "127.0.0.1", "--port", "{port}"],
        [sys.executable, "-m", "streamforge", "serve", "--host", "127.0.0.1", "--port", "{port}"],
        [sys.executable, "-m", "uvicorn", "streamforge.main:app", "--port", "{port}"],
    ],
    ids=["streamforge-serve", "python-m-streamforge", "uvicorn"],
)
def test_server_starts_and_answers_the_curl_example(tmp_path: Path, command: list[str]) -> None:
    port = free_port()
    env = {
        **os.environ,
        "STREAMFORGE_DATA_DIR": str(tmp_path / "data"),
        "STREAMFORGE_STREAMING__SIMULATED_DELAY": "0.01",
    }
    process = subprocess.Popen(
        [part.format(port=port) for part in command],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # A safety net: start-up loads the local model (in its process) and the embedder.

        def healthy() -> bool:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200

        eventually_sync(
            healthy,
            timeout=120,
            interval=0.1,
            retry_on=(httpx.TransportError,),
            what="the server starting",
        )
        response = httpx.post(
            f"http://127.0.0.1:{port}/chat", json={"message": "Hello"}, timeout=10
        )
        assert response.status_code == 200
        assert response.text.count("\ndata: ") > 10
        assert response.text.rstrip().split("\n")[-2] == "event: done"
        # The default database is a SQLite file in the data directory.
        assert (tmp_path / "data" / "streamforge.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stderr is not None:
            process.stderr.close()


def test_cli_help_and_version() -> None:
    result = subprocess.run(
        [str(BIN / "streamforge"), "--help"], capture_output=True, text=True, check=True
    )
    assert "serve" in result.stdout
    version = subprocess.run(
        [str(BIN / "streamforge"), "version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == "0.1.0"
