#!/usr/bin/env python3
"""Set up and run StreamForge from a fresh clone: `python3 dev.py serve` or `python3 dev.py test`.

Both create ``.venv`` (once) and install into it exactly what a lock file in ``locks/`` names
(every package, transitive ones included, at one version, checked against its hashes), then
either run the server on the embedded defaults or run the whole test suite: ruff, mypy and
pytest, after making sure the services the tests use are up.

* ``serve`` installs ``locks/serve.txt``: the core and the ``local`` and ``embeddings`` extras.
* ``test`` installs ``locks/test.txt``: that and the ``dev`` extra.
* ``lock`` re-resolves the three locks (``core.txt`` too) from ``pyproject.toml`` with uv. It is
  the one way a new release of a dependency reaches the project; run the tests after it.

llama-cpp-python compiles from source. It is built portable, never for the compiling CPU only:
``GGML_NATIVE`` off, a fixed instruction-set baseline (x86-64: AVX2, FMA, F16C, BMI2; no
AVX-512, no AMX; arm64: ARMv8-A), so the same build runs on every machine of that baseline.
``STREAMFORGE_LLAMA_CMAKE_ARGS`` replaces those flags. The wheel is kept per version and per
flags in ``~/.cache/streamforge/llama-cpp`` (pip's own wheel cache would hand back a wheel
built with other flags).

Works the same on Linux, macOS and Windows (``py dev.py serve``); the locks are resolved for
CPython 3.11 on Linux x86-64, and elsewhere their versions are used as constraints.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".streamforge-installed"
LOCKS = ROOT / "locks"
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
CHROMIUM = "/usr/bin/chromium"
LLAMA = "llama-cpp-python"
# The platform the locks are resolved for (hashes of every file are kept, but markers and
# the CPU build of torch are this platform's).
LOCK_PLATFORM = ("Linux", "x86_64", (3, 11))
# What `dev.py lock` resolves: lock file -> extras of pyproject.toml.
PROFILES = {"core": [], "serve": ["local", "embeddings"], "test": ["local", "embeddings", "dev"]}
# Pins the locks keep whatever pyproject.toml allows (torch's CPU build, for one).
CONSTRAINTS = LOCKS / "constraints.txt"
TORCH_HINT = (
    "If pip found no torch 2.13.0+cpu: that CPU build is on PyTorch's own package index, not on "
    "PyPI; point pip at it, e.g. PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu"
)
# Neither the multimodal part nor llama.cpp's own programs are used.
LLAMA_COMMON_FLAGS = ["-DLLAVA_BUILD=OFF", "-DLLAMA_BUILD_TOOLS=OFF"]
LLAMA_PORTABLE_FLAGS = {
    "x86_64": [
        "-DGGML_NATIVE=OFF",
        "-DGGML_AVX=ON",
        "-DGGML_AVX2=ON",
        "-DGGML_FMA=ON",
        "-DGGML_F16C=ON",
        "-DGGML_BMI2=ON",
        "-DGGML_AVX512=OFF",
        "-DGGML_AMX_TILE=OFF",
        "-DGGML_AMX_INT8=OFF",
        "-DGGML_AMX_BF16=OFF",
    ],
    "arm64": ["-DGGML_NATIVE=OFF", "-DGGML_CPU_ARM_ARCH=armv8-a"],
}


def run(*args: str | Path, env: dict[str, str] | None = None, hint: str = "") -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    completed = subprocess.run([str(a) for a in args], cwd=ROOT, env=env)
    if completed.returncode != 0:
        if hint:
            print(hint, file=sys.stderr)
        sys.exit(completed.returncode)


def machine() -> str:
    arch = platform.machine().lower()
    return {"amd64": "x86_64", "aarch64": "arm64"}.get(arch, arch)


def llama_cmake_args() -> str:
    """The CMake flags llama-cpp-python is built with (printed by the local-model benchmark)."""
    override = os.environ.get("STREAMFORGE_LLAMA_CMAKE_ARGS")
    if override is not None:
        return override
    return " ".join(LLAMA_PORTABLE_FLAGS.get(machine(), ["-DGGML_NATIVE=OFF"]) + LLAMA_COMMON_FLAGS)


def on_lock_platform() -> bool:
    system, arch, version = LOCK_PLATFORM
    return platform.system() == system and machine() == arch and sys.version_info[:2] == version


def locked_requirements(profile: str) -> tuple[list[str], str | None]:
    """The lock's requirement entries (each with its hashes) but llama-cpp-python's, and that."""
    text = (LOCKS / f"{profile}.txt").read_text()
    entries, llama = [], None
    for block in re.split(r"\n(?=\S)", text):
        if not block.strip() or block.startswith("#"):
            continue
        if block.startswith(f"{LLAMA}=="):
            llama = block
        else:
            entries.append(block)
    return entries, llama


def build_llama(entry: str, env: dict[str, str]) -> Path:
    """Build (once per version and flags) llama-cpp-python's wheel from its hash-checked sdist."""
    flags = llama_cmake_args()
    version = entry.split("==", 1)[1].split()[0]
    key = hashlib.sha256(f"{version} {flags} {platform.platform()}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    wheels = cache / "streamforge" / "llama-cpp" / f"{version}-{key}"
    found = sorted(wheels.glob("llama_cpp_python-*.whl")) if wheels.is_dir() else []
    if found:
        return found[-1]
    print(f"building {LLAMA} {version} (portable: {flags}); this takes several minutes")
    with tempfile.TemporaryDirectory() as scratch:
        requirement = Path(scratch) / "llama.txt"
        requirement.write_text(entry + "\n")
        build_env = {**env, "CMAKE_ARGS": flags}
        build_env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        run(PYTHON, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--require-hashes",
            "--no-binary", LLAMA, "-w", scratch, "-r", requirement, env=build_env)  # fmt: skip
        built = sorted(Path(scratch).glob("llama_cpp_python-*.whl"))
        wheels.mkdir(parents=True, exist_ok=True)
        target = wheels / built[-1].name
        shutil.copy(built[-1], target)
    (wheels / "CMAKE_ARGS").write_text(flags + "\n")
    return target


def ensure_venv(profile: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs before the venv exists
        sys.exit("StreamForge needs Python 3.11 or newer.")
    if not PYTHON.exists():
        print(f"creating {VENV.name}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    lock = (LOCKS / f"{profile}.txt").read_bytes()
    wanted = hashlib.sha256(
        lock + (ROOT / "pyproject.toml").read_bytes() + llama_cmake_args().encode()
    ).hexdigest()
    installed = STAMP.read_text().split() if STAMP.exists() else []
    if wanted in installed:
        return
    env = dict(os.environ)
    entries, llama = locked_requirements(profile)
    extras = ",".join(PROFILES[profile])
    target = f".[{extras}]" if extras else "."
    with tempfile.TemporaryDirectory() as scratch:
        requirements = Path(scratch) / "requirements.txt"
        if on_lock_platform():
            requirements.write_text("\n".join(entries) + "\n")
            run(PYTHON, "-m", "pip", "install", "--require-hashes", "--no-deps", "-r",
                requirements, env=env, hint=TORCH_HINT)  # fmt: skip
            if llama is not None:
                run(PYTHON, "-m", "pip", "install", "--no-deps", "--force-reinstall",
                    build_llama(llama, env), env=env)  # fmt: skip
            run(PYTHON, "-m", "pip", "install", "--no-deps", "-e", target, env=env)
        else:
            # Another platform: the lock's versions as constraints, resolved for this one.
            pins = [e.split()[0] for e in [*entries, llama or ""] if e and "+" not in e.split()[0]]
            requirements.write_text("\n".join(pins) + "\n")
            env["CMAKE_ARGS"] = llama_cmake_args()
            run(PYTHON, "-m", "pip", "install", "-c", requirements, "-c", CONSTRAINTS,
                "-e", target, env=env)  # fmt: skip
    STAMP.write_text("\n".join([*installed, wanted]))


def lock(extra: list[str]) -> None:
    """Re-resolve every lock from pyproject.toml: the newest releases its ranges allow."""
    ensure_venv("test")
    uv = BIN / ("uv.exe" if os.name == "nt" else "uv")
    env = dict(os.environ)
    # pip's configured extra locations (a local wheel of torch's CPU build) count for uv too.
    links = subprocess.run(
        [PYTHON, "-m", "pip", "config", "get", "global.find-links"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if links and "UV_FIND_LINKS" not in env:
        env["UV_FIND_LINKS"] = links.replace("\n", " ")
    # The full set first; the smaller ones take its versions, so every lock agrees.
    for profile in ("test", "serve", "core"):
        extras = [arg for name in PROFILES[profile] for arg in ("--extra", name)]
        pins = ["-c", "locks/constraints.txt" if profile == "test" else "locks/test.txt"]
        run(uv, "pip", "compile", "pyproject.toml", *extras, *pins, "--generate-hashes",
            "--python-version", "3.11", "--python-platform", "x86_64-unknown-linux-gnu",
            "--custom-compile-command", "python3 dev.py lock",
            "--output-file", f"locks/{profile}.txt", *extra, env=env)  # fmt: skip


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


def apt_install(package: str, present: Path | str, *, recommends: bool = False) -> bool:
    """Install a Debian package when ``present`` (a path or a program) is missing, as root."""
    if Path(present).exists() or shutil.which(str(present)):
        return True
    apt = shutil.which("apt-get")
    if apt and hasattr(os, "geteuid") and os.geteuid() == 0:
        quiet = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([apt, "update", "-q"], env=quiet)
        extra = [] if recommends else ["--no-install-recommends"]
        subprocess.run([apt, "install", "-y", "-q", *extra, package], env=quiet)
    return Path(present).exists() or bool(shutil.which(str(present)))


NGINX = "/usr/sbin/nginx"


def ensure_test_programs() -> None:
    """The tests start private redis-server processes (which they crash and restart), drive
    Debian's Chromium (Playwright never downloads a browser of its own here) and put Debian's
    nginx in front of real server processes."""
    if not apt_install("redis-server", "redis-server"):
        sys.exit(
            "The tests need the redis-server program (Debian/Ubuntu: apt install redis-server)."
        )
    if os.name != "nt" and not apt_install("chromium", CHROMIUM, recommends=True):
        sys.exit(f"The browser tests need Chromium at {CHROMIUM} (Debian: apt install chromium).")
    if os.name != "nt" and not apt_install("nginx", NGINX):
        sys.exit(f"The reverse-proxy tests need nginx at {NGINX} (Debian: apt install nginx).")


def serve(extra: list[str]) -> None:
    ensure_venv("serve")
    os.chdir(ROOT)
    streamforge = BIN / ("streamforge.exe" if os.name == "nt" else "streamforge")
    completed = subprocess.run([str(streamforge), "serve", *extra])
    sys.exit(completed.returncode)


def test(extra: list[str]) -> None:
    ensure_venv("test")
    ensure_postgres()
    ensure_test_programs()
    run(PYTHON, "-m", "ruff", "check", "src", "tests", "benchmarks", "dev.py")
    run(PYTHON, "-m", "ruff", "format", "--check", "src", "tests", "benchmarks", "dev.py")
    run(PYTHON, "-m", "mypy")
    env = {**os.environ, "STREAMFORGE_LLAMA_BUILD": llama_cmake_args()}
    run(PYTHON, "-m", "pytest", *extra, env=env)


def main() -> None:
    commands = {"serve": serve, "test": test, "lock": lock}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(
            "usage: python3 dev.py serve [streamforge serve options] | test [pytest options]"
            " | lock [uv pip compile options, e.g. --upgrade-package NAME]"
        )
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
