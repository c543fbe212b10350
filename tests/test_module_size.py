"""Modules of one concept: no source module in ``src/`` is over 450 lines.

The rule, for a newcomer: a module that grows past 450 lines usually holds more than one idea;
split it along them (see how ``cli/`` or ``chains/providers/local/`` are split). A module that
really is one idea may stay longer if its docstring says so in a paragraph that starts with
"One concept" and gives the reason, so the next reader knows it was a choice.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
LIMIT = 450


def modules() -> list[Path]:
    return sorted(
        path
        for pattern in ("*.py", "*.js")
        for path in SRC.rglob(pattern)
        if "__pycache__" not in path.parts
    )


def explanation(path: Path) -> str:
    """The text a module gives about itself: a Python docstring, or a script's first comment."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return ast.get_docstring(ast.parse(text)) or ""
    found = re.match(r"\s*/\*(.*?)\*/", text, re.DOTALL)
    return found.group(1) if found else ""


def says_one_concept(path: Path) -> bool:
    return re.search(r"(^|\n)\s*\**\s*One concept\b", explanation(path)) is not None


def test_the_walk_sees_the_source_tree() -> None:
    names = {path.relative_to(SRC).as_posix() for path in modules()}
    assert "streamforge/cli/__init__.py" in names
    assert "streamforge/chains/providers/upstream.py" in names
    assert len(names) > 100


def test_no_module_over_the_limit_without_a_reason() -> None:
    over = {
        path.relative_to(SRC).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in modules()
    }
    unexplained = sorted(
        f"{name}: {lines} lines"
        for name, lines in over.items()
        if lines > LIMIT and not says_one_concept(SRC / name)
    )
    assert unexplained == [], (
        f"over {LIMIT} lines with no 'One concept' paragraph in the docstring saying why; "
        "split them by concept: " + "; ".join(unexplained)
    )


def test_a_reason_is_a_paragraph_not_a_passing_mention(tmp_path: Path) -> None:
    kept = tmp_path / "kept.py"
    kept.write_text('"""A store.\n\nOne concept, over 450 lines: the reason."""\n')
    mentioned = tmp_path / "mentioned.py"
    mentioned.write_text('"""A store that is not one concept at all."""\n')
    script = tmp_path / "page.js"
    script.write_text("/* The page.\n *\n * One concept: the reason.\n */\nlet x = 1;\n")
    assert says_one_concept(kept)
    assert not says_one_concept(mentioned)
    assert says_one_concept(script)
