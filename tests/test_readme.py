"""The configuration page's table documents every setting; the README keeps the quick start."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from streamforge.config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# Where the table of settings lives (the README links to it).
CONFIGURATION = ROOT / "docs" / "configuration.md"


def env_names(model: type[BaseModel], prefix: str) -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_every_setting_is_in_the_configuration_table() -> None:
    # Rows of its tables only: a name in an example does not document it.
    lines = CONFIGURATION.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if line.startswith("| `"))
    # The hosted providers share one table row per field, written for OpenAI.
    hosted = ("ANTHROPIC", "OLLAMA", "OPENAI_COMPATIBLE")
    names = [
        name.replace(f"__{provider}__", "__OPENAI__")
        for name in env_names(Settings, "STREAMFORGE_")
        for provider in [next((p for p in hosted if f"__{p}__" in name), "OPENAI")]
    ]
    missing = [name for name in names if f"`{name}`" not in text]
    assert not missing
    assert "(docs/configuration.md)" in README.read_text(encoding="utf-8")


def test_quick_start_has_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "python3 dev.py serve" in quick
    assert "python3 dev.py test" in quick
    assert "python3 dev.py test" in (README.parent / ".ci" / "run").read_text()
