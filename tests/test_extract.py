"""Document extraction: good files come out as text, hostile ones as a readable reason, and the
child process never outlives the call — not on timeout, crash, memory exhaustion or cancel."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from streamforge.documents import sandbox
from streamforge.documents.extract import (
    MEDIA_TYPES,
    ExtractionFailed,
    check_filename,
    claimed_format,
    extract_bytes,
    normalize,
    sniff,
)
from streamforge.documents.sandbox import Limits, extract_isolated
from tests.hostile_files import (
    GOOD,
    HOSTILE,
    REFUSED_EARLY,
    Good,
    Hostile,
    pdf_longer_than,
    text_longer_than,
    text_pdf,
)

POSIX = os.name == "posix"


class Spawned(list[asyncio.subprocess.Process]):
    """The worker processes the sandbox started, and an event set at the first."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> Spawned:
    processes = Spawned()
    original = asyncio.create_subprocess_exec

    async def recording(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        process = await original(*args, **kwargs)
        processes.append(process)
        processes.started.set()
        return process

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    return processes


def assert_reaped(process: asyncio.subprocess.Process) -> None:
    assert process.returncode is not None
    if POSIX:  # a reaped child's pid no longer exists; a zombie's still would
        with pytest.raises(ProcessLookupError):
            os.kill(process.pid, 0)


def use_worker(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    monkeypatch.setattr(sandbox, "worker_command", lambda: [sys.executable, "-c", code])


@pytest.mark.parametrize("make", GOOD, ids=lambda make: make.__name__)
async def test_good_file_extracts(make: Callable[[], Good], spawned: Spawned) -> None:
    name, data, phrases = make()
    extracted = await extract_isolated(data, name, Limits())
    for phrase in phrases:
        assert phrase in extracted.text
    assert "\r" not in extracted.text and "never" not in extracted.text
    assert extracted.text == extracted.text.rstrip()
    assert extracted.media_type == MEDIA_TYPES[claimed_format(name)]
    assert (extracted.pages is not None) == name.endswith(".pdf")
    assert len(spawned) == 1
    assert_reaped(spawned[0])


@pytest.mark.parametrize("make", HOSTILE, ids=lambda make: make.__name__)
async def test_hostile_file_fails_with_a_reason(
    make: Callable[[], Hostile], spawned: Spawned
) -> None:
    name, data, reason = make()
    with pytest.raises(ExtractionFailed) as failure:
        await extract_isolated(data, name, Limits(timeout=15))
    assert reason in failure.value.reason
    assert "Traceback" not in failure.value.reason and len(failure.value.reason) < 200
    assert len(spawned) == (0 if make.__name__ in REFUSED_EARLY else 1)
    for process in spawned:
        assert_reaped(process)


@pytest.mark.parametrize("make", [text_longer_than, pdf_longer_than])
async def test_text_over_max_chars_is_refused(make: Callable[[int], Hostile]) -> None:
    name, data, reason = make(500)
    with pytest.raises(ExtractionFailed, match=reason):
        await extract_isolated(data, name, Limits(max_chars=500))


async def test_megabytes_of_text_come_back_whole() -> None:
    data = ("Ünïcode line of text\r\n" * 120_000).encode()
    extracted = await extract_isolated(data, "big.txt", Limits())
    assert len(extracted.text) == 21 * 120_000 - 1
    assert extracted.text.startswith("Ünïcode line of text\nÜ")


async def test_timeout_kills_the_worker(spawned: Spawned) -> None:
    # Interpreter start-up alone takes longer than 50 ms.
    with pytest.raises(ExtractionFailed, match=r"parsing took longer than 0.05 s"):
        await extract_isolated(text_pdf(), "slow.pdf", Limits(timeout=0.05))
    assert len(spawned) == 1
    assert_reaped(spawned[0])


async def test_timeout_kills_a_hung_worker(
    spawned: Spawned, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_worker(monkeypatch, "import time; time.sleep(60)")
    with pytest.raises(ExtractionFailed, match=r"parsing took longer than 0.5 s"):
        await extract_isolated(b"hello", "hung.txt", Limits(timeout=0.5))
    assert_reaped(spawned[0])


@pytest.mark.skipif(not POSIX, reason="memory limits need the resource module")
async def test_memory_limit_ends_in_a_reason(spawned: Spawned) -> None:
    # The bomb stays under pypdf's own 75 MB cap only by exhausting 128 MB of address space.
    name, data, _ = next(make() for make in HOSTILE if make.__name__ == "pdf_decompression_bomb")
    with pytest.raises(ExtractionFailed, match="parsing needed more than 128 MB of memory"):
        await extract_isolated(data, name, Limits(memory_mb=128))
    assert_reaped(spawned[0])


async def test_cancelling_kills_the_worker(
    spawned: Spawned, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_worker(monkeypatch, "import sys, time; sys.stdin.buffer.read(); time.sleep(60)")
    task = asyncio.create_task(extract_isolated(b"x" * 200_000, "cancel.txt", Limits()))
    await spawned.started.wait()
    await asyncio.sleep(0.2)  # the child is reading its input, or sleeping
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_reaped(spawned[0])


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("raise MemoryError", "parsing needed more than 512 MB of memory"),
        ("import sys; sys.exit(3)", "the parser stopped unexpectedly (exit status 3)"),
        ("print('not json')", "the parser returned no result"),
        ('print(\'{"ok": false, "reason": "stub reason"}\')', "stub reason"),
        pytest.param(
            "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)",
            "the parser crashed on this file (SIGSEGV)",
            marks=pytest.mark.skipif(not POSIX, reason="signals"),
        ),
        pytest.param(
            "import os, signal; os.kill(os.getpid(), signal.SIGXCPU)",
            "parsing took longer than 30 s",
            marks=pytest.mark.skipif(not POSIX, reason="signals"),
        ),
    ],
)
async def test_a_dying_worker_ends_in_a_reason(
    code: str, reason: str, spawned: Spawned, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_worker(monkeypatch, code)
    with pytest.raises(ExtractionFailed) as failure:
        await extract_isolated(b"hello", "a.txt", Limits())
    assert failure.value.reason == reason
    assert_reaped(spawned[0])


def test_worker_imports_only_the_parser_it_needs() -> None:
    code = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: sys.stderr.write(' '.join(sorted(sys.modules))))\n"
        "runpy.run_module('streamforge.documents.worker', run_name='__main__')\n"
    )
    header = b'{"format": "txt", "max_chars": 100, "max_pages": 1, "memory_mb": 512, "timeout": 5}'
    done = subprocess.run(
        [sys.executable, "-c", code], input=header + b"\nplain", capture_output=True, check=True
    )
    assert done.stdout.decode() == (
        '{"ok": true, "text": "plain", "media_type": "text/plain", "pages": null}'
    )
    modules = set(done.stderr.decode().split())
    assert "streamforge.documents.extract" in modules
    for heavy in ("pypdf", "docx", "lxml", "inscriptis", "fastapi", "streamforge.app", "torch"):
        assert heavy not in modules


@pytest.mark.parametrize(
    ("name", "stored", "fmt"),
    [
        ("Report.PDF", "Report.PDF", "pdf"),
        ("page.htm", "page.htm", "html"),
        ("notes.Markdown", "notes.Markdown", "md"),
        ("log.text", "log.text", "txt"),
        ("  spaced.docx ", "spaced.docx", "docx"),
        ("cafe\u0301.md", "café.md", "md"),
        ("archive.tar.txt", "archive.tar.txt", "txt"),
    ],
)
def test_check_filename_accepts(name: str, stored: str, fmt: str) -> None:
    assert check_filename(name) == stored
    assert claimed_format(stored) == fmt


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "the file name is empty"),
        ("..", "not a plain file name"),
        ("README", "has no extension"),
        ("del\x7f.txt", "control characters"),
        ("c1\x85.txt", "control characters"),
        ("x." + "t" * 40, "files of type .tttttttttttttttt… are not supported"),
    ],
)
def test_check_filename_refuses(name: str, reason: str) -> None:
    with pytest.raises(ExtractionFailed, match=re.escape(reason)):
        check_filename(name)


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b"\xef\xbb\xbf\r\n %PDF-1.4", "pdf"),  # a BOM and whitespace are tolerated
        (b"\n\xef\xbb\xbf%PDF-1.4", "pdf"),
        (b"\xfe\xff" + "<p>\u00e9</p>".encode("utf-16-be"), "html"),
        (b"\xef\xbb\xbfplain", "txt"),
    ],
)
def test_sniff_accepts(data: bytes, fmt: str) -> None:
    sniff(data, fmt)


def test_sniff_refuses_pdf_header_after_1024_bytes() -> None:
    with pytest.raises(ExtractionFailed, match="not a PDF"):
        sniff(b"x" * 1024 + b"%PDF-1.4", "pdf")


def test_normalize() -> None:
    raw = "a\r\nb\rc\x00d\x07e\tf\x0cg\ud83d\ude00h\udc80i  \n\n "
    assert normalize(raw) == "a\nb\ncde\tf\ng\U0001f600h\ufffdi"


def test_extract_bytes_keeps_text_as_is() -> None:
    extracted = extract_bytes(b"# Title\n\n  indented\n", "md", max_chars=100)
    assert extracted.text == "# Title\n\n  indented"
    assert extracted.pages is None
