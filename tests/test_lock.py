"""The locks in ``locks/`` hold every dependency at one version: they cover ``pyproject.toml``,
agree with each other, carry hashes, and are what ``dev.py test`` installed.

When one of these fails after editing ``pyproject.toml``: ``python3 dev.py lock``.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "locks"
# Lock file -> extras of pyproject.toml it installs (as dev.py's PROFILES).
PROFILES = {"core": [], "serve": ["local", "embeddings"], "test": ["local", "embeddings", "dev"]}
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(profile: str) -> dict[str, tuple[str, list[str]]]:
    """Package -> (version, hashes)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=\S)", (LOCKS / f"{profile}.txt").read_text()):
        match = ENTRY.match(block)
        if match:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            entries[canonical(match.group(1))] = (match.group(2), hashes)
    return entries


def requirements(profile: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in PROFILES[profile]:
        wanted += project["optional-dependencies"][extra]
    return [Requirement(text) for text in wanted]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_lock_covers_pyproject(profile: str) -> None:
    lock = read_lock(profile)
    assert lock, f"locks/{profile}.txt is empty"
    for requirement in requirements(profile):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonical(requirement.name)
        assert name in lock, f"{requirement} is not in locks/{profile}.txt: python3 dev.py lock"
        version = Version(lock[name][0])
        assert requirement.specifier.contains(version, prereleases=True), (
            f"locks/{profile}.txt has {name}=={version}, pyproject.toml wants {requirement}"
        )
    for name, (_, hashes) in lock.items():
        assert hashes, f"{name} has no hash in locks/{profile}.txt"


def test_smaller_locks_take_the_full_locks_versions() -> None:
    full = read_lock("test")
    for profile in ("core", "serve"):
        for name, (version, _) in read_lock(profile).items():
            assert full.get(name, ("missing",))[0] == version, (profile, name, version)
    # The core install is the lean one: no llama.cpp build, no PyTorch.
    core = read_lock("core")
    for heavy in ("llama-cpp-python", "torch", "sentence-transformers", "transformers"):
        assert heavy not in core, heavy
    assert {"llama-cpp-python", "torch"} <= set(read_lock("serve"))


def test_locks_are_reproducible_from_the_documented_command() -> None:
    for profile in PROFILES:
        text = (LOCKS / f"{profile}.txt").read_text()
        assert "python3 dev.py lock" in text.splitlines()[1], profile
        # Nothing of the machine that made them.
        assert "/tmp/" not in text and "/root/" not in text and "/home/" not in text


def test_installed_packages_are_the_locked_versions() -> None:
    """``dev.py test`` installed the test lock: every package at exactly its version."""
    mismatched = {}
    for name, (version, _) in read_lock("test").items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            mismatched[name] = (version, None)
            continue
        if Version(installed) != Version(version):
            mismatched[name] = (version, installed)
    assert not mismatched, mismatched
