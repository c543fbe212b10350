#!/usr/bin/env python3
"""Set up and run StreamForge from a fresh clone: `python3 dev.py serve` or `python3 dev.py test`.

Both create ``.venv`` (once), install the project into it (again only when pyproject.toml
changed), then either run the server on the embedded defaults or run the whole test suite:
ruff, mypy and pytest, after making sure the services the tests use are up.
Works the same on Linux, macOS and Windows (``py dev.py serve``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".streamforge-installed"
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
TORCH = "torch==2.13.0"
CHROMIUM = "/usr/bin/chromium"


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    completed = subprocess.run([str(a) for a in args], cwd=ROOT, env=env)
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def ensure_venv(extras: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs before the venv exists
        sys.exit("StreamForge needs Python 3.11 or newer.")
    if not PYTHON.exists():
        print(f"creating {VENV.name}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    installed = STAMP.read_text().split() if STAMP.exists() else []
    if wanted in installed:
        return
    env = dict(os.environ)
    # llama-cpp-python builds from source; its multimodal part is not needed.
    env.setdefault("CMAKE_ARGS", "-DLLAVA_BUILD=OFF")
    run(PYTHON, "-m", "pip", "install", "--upgrade", "pip", env=env)
    # The embedding model runs on PyTorch; this release has a CPU build for every platform,
    # where an unpinned `torch` can pull a multi-gigabyte CUDA build on Linux.
    run(PYTHON, "-m", "pip", "install", TORCH, env=env)
    target = f".[{extras}]" if extras else "."
    run(PYTHON, "-m", "pip", "install", "-e", target, env=env)
    STAMP.write_text("\n".join([*installed, wanted]))


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def ensure_postgres() -> None:
    if os.environ.get("STREAMFORGE_TEST_POSTGRES_URL") or reachable(POSTGRES_HOST, POSTGRES_PORT):
        return
    ctl = shutil.which("pg_ctlcluster")
    if ctl and Path("/etc/postgresql").is_dir():
        for version in sorted(os.listdir("/etc/postgresql")):
            subprocess.run([ctl, "--skip-systemctl-redirect", version, "main", "start"])
    if not reachable(POSTGRES_HOST, POSTGRES_PORT):
        sys.exit(
            "The tests need PostgreSQL on 127.0.0.1:5432 (database 'test', trust auth), "
            "or STREAMFORGE_TEST_POSTGRES_URL pointing at one."
        )


def ensure_redis_server() -> None:
    """The tests start private redis-server processes (which they crash and restart)."""
    if shutil.which("redis-server"):
        return
    apt = shutil.which("apt-get")
    if apt and hasattr(os, "geteuid") and os.geteuid() == 0:
        quiet = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([apt, "update", "-q"], env=quiet)
        subprocess.run(
            [apt, "install", "-y", "-q", "--no-install-recommends", "redis-server"], env=quiet
        )
    if not shutil.which("redis-server"):
        sys.exit(
            "The tests need the redis-server program (Debian/Ubuntu: apt install redis-server)."
        )


def ensure_chromium() -> None:
    """The browser tests of the chat page drive Debian's Chromium (Playwright never downloads
    a browser of its own here)."""
    if os.name == "nt" or Path(CHROMIUM).exists():
        return
    apt = shutil.which("apt-get")
    if apt and hasattr(os, "geteuid") and os.geteuid() == 0:
        quiet = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([apt, "update", "-q"], env=quiet)
        subprocess.run([apt, "install", "-y", "-q", "chromium"], env=quiet)
    if not Path(CHROMIUM).exists():
        sys.exit(f"The browser tests need Chromium at {CHROMIUM} (Debian: apt install chromium).")


def serve(extra: list[str]) -> None:
    ensure_venv("")
    os.chdir(ROOT)
    streamforge = BIN / ("streamforge.exe" if os.name == "nt" else "streamforge")
    completed = subprocess.run([str(streamforge), "serve", *extra])
    sys.exit(completed.returncode)


def test(extra: list[str]) -> None:
    ensure_venv("dev")
    ensure_postgres()
    ensure_redis_server()
    ensure_chromium()
    run(PYTHON, "-m", "ruff", "check", "src", "tests", "benchmarks", "dev.py")
    run(PYTHON, "-m", "ruff", "format", "--check", "src", "tests", "benchmarks", "dev.py")
    run(PYTHON, "-m", "mypy")
    run(PYTHON, "-m", "pytest", *extra)


def main() -> None:
    commands = {"serve": serve, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit("usage: python3 dev.py serve [streamforge serve options] | test [pytest options]")
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
