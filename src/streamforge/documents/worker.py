"""The child side of sandboxed extraction: ``python -m streamforge.documents.worker``.

Protocol, on stdin: one JSON line ``{"format", "max_chars", "max_pages", "memory_mb",
"timeout"}``, then the file's raw bytes until EOF. On stdout: one JSON object, either
``{"ok": true, "text", "media_type", "pages"}`` (with ``page_starts``, where each page begins
in ``text``, for formats with pages) or ``{"ok": false, "reason"}``. The exit status
is 0 whenever that object was written; anything else means the process died.

The limits are set before the file is read or a parser imported, so both count against them.

``python -m streamforge.documents.worker --serve MEMORY_MB`` is the warm form
(``sandbox.WarmSandbox``): it answers requests until stdin closes. Each request is the same
header line with a ``length`` field, then exactly that many bytes; each answer is the JSON
object on one line. The address-space limit is set once at start; the CPU limit is moved
before each file to what has been used so far plus that file's allowance.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import warnings
from typing import Any, BinaryIO

_HEADER_LIMIT = 4096


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        return serve(int(sys.argv[2]))
    warnings.simplefilter("ignore")  # a broken file can make a parser warn per object
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        header = json.loads(stdin.readline(_HEADER_LIMIT))
        fmt, max_chars, max_pages = header["format"], header["max_chars"], header["max_pages"]
        memory_mb, timeout = int(header["memory_mb"]), float(header["timeout"])
    except (ValueError, KeyError, TypeError):
        _write(stdout, {"ok": False, "reason": "the document worker received a bad request"})
        return 0
    _limit_resources(memory_mb, timeout)
    _write(stdout, _extract(stdin, fmt, max_chars, max_pages, memory_mb))
    return 0


def serve(memory_mb: int) -> int:
    warnings.simplefilter("ignore")
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _limit_memory(memory_mb)
    while True:
        line = stdin.readline(_HEADER_LIMIT)
        if not line:
            return 0
        try:
            header = json.loads(line)
            fmt, max_chars, max_pages = header["format"], header["max_chars"], header["max_pages"]
            timeout, length = float(header["timeout"]), int(header["length"])
        except (ValueError, KeyError, TypeError):
            _write(stdout, {"ok": False, "reason": "the document worker received a bad request"})
            return 0
        _limit_cpu(timeout)
        data = stdin.read(length)
        result = _extract(io.BytesIO(data), fmt, max_chars, max_pages, memory_mb)
        del data
        _write(stdout, result)
        stdout.write(b"\n")
        stdout.flush()


def _extract(
    stdin: BinaryIO, fmt: str, max_chars: int, max_pages: int, memory_mb: int
) -> dict[str, Any]:
    memory_reason = f"parsing needed more than {memory_mb} MB of memory"
    try:
        from streamforge.documents.extract import ExtractionFailed, extract_bytes
    except MemoryError:
        return {"ok": False, "reason": memory_reason}
    try:
        extracted = extract_bytes(stdin.read(), fmt, max_chars=max_chars, max_pages=max_pages)
    except ExtractionFailed as exc:
        return {"ok": False, "reason": exc.reason}
    except MemoryError:
        return {"ok": False, "reason": memory_reason}
    except RecursionError:
        return {"ok": False, "reason": "the file is nested too deeply to read"}
    except Exception as exc:
        return {"ok": False, "reason": f"the file could not be read ({type(exc).__name__})"}
    result: dict[str, Any] = {
        "ok": True,
        "text": extracted.text,
        "media_type": extracted.media_type,
        "pages": extracted.pages,
    }
    if extracted.page_starts is not None:
        result["page_starts"] = list(extracted.page_starts)
    return result


def _write(stdout: BinaryIO, result: dict[str, Any]) -> None:
    try:
        payload = json.dumps(result, ensure_ascii=False).encode("utf-8", "replace")
    except MemoryError:
        payload = b'{"ok": false, "reason": "the extracted text did not fit in memory"}'
    stdout.write(payload)
    stdout.flush()


def _limit_memory(memory_mb: int) -> None:
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        memory = memory_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            memory = min(memory, hard)
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def _limit_cpu(timeout: float) -> None:
    """The soft CPU limit at what this process has used plus this file's allowance; the hard
    limit is left alone, so the next file can move the soft one on."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + timeout) + 1
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _limit_resources(memory_mb: int, timeout: float) -> None:
    try:
        import resource
    except ImportError:  # Windows: only the parent's wall-clock timeout applies
        return

    def lower(kind: int, soft: int, hard: int) -> None:
        _, current_hard = resource.getrlimit(kind)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        with contextlib.suppress(ValueError, OSError):  # macOS refuses RLIMIT_AS, for one
            resource.setrlimit(kind, (soft, hard))

    memory = memory_mb * 1024 * 1024
    lower(resource.RLIMIT_AS, memory, memory)
    # The soft limit sends SIGXCPU, which the parent reports as a timeout; the hard one kills.
    cpu = math.ceil(timeout) + 1
    lower(resource.RLIMIT_CPU, cpu, cpu + 1)


if __name__ == "__main__":
    sys.exit(main())
