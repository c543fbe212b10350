"""The model process as a child of the server: the command that starts it, the environment
it gets, and its exit told in words."""

from __future__ import annotations

import os
import signal
import sys

WORKER_MODULE = "streamforge.chains.providers.local.worker"
_SIGNAL_HINTS = {
    signal.SIGILL: "the llama.cpp build uses a CPU instruction this machine lacks; rebuild it "
    "portable (python3 dev.py serve does) or with STREAMFORGE_LLAMA_CMAKE_ARGS for this CPU",
    signal.SIGSEGV: "a fault in native code (a CPU kernel of the llama.cpp build, or a bad "
    "model file); a portable build without AMX avoids the known one",
    signal.SIGKILL: "killed (the kernel's out-of-memory killer, or an operator)",
    signal.SIGABRT: "llama.cpp aborted (see the log for its message)",
}


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "it stopped answering"
    if returncode < 0:
        try:
            signum = signal.Signals(-returncode)
        except ValueError:
            return f"it was stopped by signal {-returncode}"
        hint = _SIGNAL_HINTS.get(signum)
        return f"it was stopped by {signum.name}" + (f": {hint}" if hint else "")
    return f"it exited with status {returncode}"


def worker_command(socket_path: str, model_path: str, n_ctx: int, n_threads: int) -> list[str]:
    """The command that starts the model process (``worker.py``) on ``socket_path``."""
    return [
        sys.executable,
        "-m",
        WORKER_MODULE,
        "--socket",
        socket_path,
        "--model",
        model_path,
        "--context-size",
        str(n_ctx),
        "--threads",
        str(n_threads),
    ]


def child_environment() -> dict[str, str]:
    """The model process needs no secrets: provider keys and database URLs stay here."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("STREAMFORGE_") or name.startswith("STREAMFORGE_LLAMA")
    }
