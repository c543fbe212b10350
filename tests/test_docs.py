"""The README and docs/: every relative link resolves, and the quick start's commands work.

The quick start's two ``dev.py`` commands are what CI itself runs (``.ci/run``); every other
command of its code blocks is run here against a live server.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import unicodedata
from pathlib import Path

import pytest

from tests.procs import server_process

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); a title after the target is not used in these pages.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def prose(text: str) -> str:
    """The page without its code blocks and inline code (links there are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).strip().lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in ("L", "N"))
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text(encoding="utf-8")))


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {resolved.name}")
        elif fragment and resolved.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not Markdown")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    assert not broken_links(page)


def test_the_link_check_sees_links_and_anchors(tmp_path: Path) -> None:
    """The check itself: it would catch a missing file and a missing heading."""
    page = tmp_path / "page.md"
    page.write_text(
        "# The `POST /chat` stream: events\n\nSee [a](missing.md), [b](#nowhere), "
        "[c](#the-post-chat-stream-events), `[d](code.md)` and [e](https://example.com).\n",
        encoding="utf-8",
    )
    assert links(page) == ["missing.md", "#nowhere", "#the-post-chat-stream-events",
                           "https://example.com"]  # fmt: skip
    assert anchors(page) == {"the-post-chat-stream-events"}


def test_every_docs_page_is_linked_from_the_index() -> None:
    index = ROOT / "docs" / "README.md"
    linked = {target.partition("#")[0] for target in links(index)}
    pages = {page.name for page in (ROOT / "docs").glob("*.md")} - {"README.md"}
    assert not pages - linked
    assert "docs/README.md" in links(ROOT / "README.md")


def test_the_license_is_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()


# --------------------------------------------------------------------------------------------
# The quick start


def quick_start() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def commands(block: str) -> list[str]:
    """A shell code block's commands: one a line (continued with a trailing backslash),
    comments dropped."""
    lines: list[str] = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            lines.append(shlex.join(words))
    return lines


def code_blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_quick_start_first_commands_are_the_two_of_ci() -> None:
    blocks = code_blocks(quick_start())
    assert blocks and blocks[0][0] == "bash"
    assert commands(blocks[0][1]) == ["python3 dev.py serve", "python3 dev.py test"]
    assert "python3 dev.py test" in (ROOT / ".ci" / "run").read_text()
    # Every other block is shell, run by the next test.
    assert all(language == "bash" for language, _ in blocks[1:])


async def test_quick_start_commands_run_against_a_live_server(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("the quick start uses curl: apt-get install curl")
    others = [command for _, block in code_blocks(quick_start())[1:] for command in commands(block)]
    assert others, "the quick start shows how to ask the server something"
    fast = {"STREAMFORGE_STREAMING__SIMULATED_DELAY": "0"}
    async with server_process(tmp_path, fast) as server:
        for command in others:
            # The README's server is on localhost:8000; the test's on a free port.
            argv = [
                word.replace("localhost:8000", f"127.0.0.1:{server.port}")
                for word in shlex.split(command)
            ]
            assert argv[0] == "curl"
            curling = await asyncio.create_subprocess_exec(
                curl, "--silent", "--show-error", "--max-time", "30", *argv[1:],
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            stdout, stderr = await asyncio.wait_for(curling.communicate(), 60)
            assert curling.returncode == 0, stderr.decode()
            out = stdout.decode()
            assert out.startswith("retry:"), out[:200]
            assert "event: session" in out and out.rstrip().split("\n")[-2] == "event: done"
