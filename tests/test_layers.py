"""The layers of the package hold in its imports.

The rule, from the top down (each layer may import the layers below it, never one above):

    entry points   app, main, __main__, cli, server, components, evaluation
                   — start things; the only ones that build or import the composition root
                     (components.py, app.py), apart from deps.py, which hands what it built
                     to the routers.
    HTTP           routers, deps, middleware, http_errors, openapi, schemas
                   — parse requests, call services, encode responses. Request and response
                     schemas are theirs (and the entry points') alone: services take and
                     return domain objects.
    services       services, metrics
                   — the work: chat turns, sessions, ingestion, retrieval. No web framework.
    adapters       repositories, stores, chains, streaming, documents
                   — each talks to one outside thing (a database table, a vector index, a
                     model, the event log, a file parser) and none imports another.
    storage        models, db
    foundation     config, errors, the package itself (its version)

Modules inside one package import each other freely. A module missing from ``LAYERS`` fails
the test: say which layer it belongs to.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import streamforge

PACKAGE = Path(streamforge.__file__).parent

ENTRY, HTTP, SERVICES, ADAPTERS, STORAGE, FOUNDATION = 5, 4, 3, 2, 1, 0
LAYER_NAMES = {
    ENTRY: "entry points",
    HTTP: "HTTP",
    SERVICES: "services",
    ADAPTERS: "adapters",
    STORAGE: "storage",
    FOUNDATION: "foundation",
}
# The first part of a module's name inside the package, and its layer.
LAYERS = {
    "app": ENTRY,
    "main": ENTRY,
    "__main__": ENTRY,
    "cli": ENTRY,
    "server": ENTRY,
    "components": ENTRY,
    "evaluation": ENTRY,
    "routers": HTTP,
    "deps": HTTP,
    "middleware": HTTP,
    "http_errors": HTTP,
    "openapi": HTTP,
    "schemas": HTTP,
    "services": SERVICES,
    "metrics": SERVICES,
    "repositories": ADAPTERS,
    "stores": ADAPTERS,
    "chains": ADAPTERS,
    "streaming": ADAPTERS,
    "documents": ADAPTERS,
    "models": STORAGE,
    "db": STORAGE,
    "config": FOUNDATION,
    "errors": FOUNDATION,
    "": FOUNDATION,  # streamforge/__init__.py
}
# Who may import the composition root.
COMPOSITION_ROOT = {"components", "app"}
ROOT_USERS = {name for name, layer in LAYERS.items() if layer == ENTRY} | {"deps"}
# Who may import request and response schemas.
SCHEMA_USERS = {name for name, layer in LAYERS.items() if layer >= HTTP}
WEB_FRAMEWORKS = ("fastapi", "starlette")


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(("streamforge", *parts)), path


def imports(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import, ``TYPE_CHECKING`` ones included: a type
    named from a higher layer is a dependency on it all the same."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base


def top(module: str) -> str:
    """``streamforge.services.chat`` → ``services``; the package itself → ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_has_a_layer() -> None:
    unknown = sorted({top(module) for module, _ in modules()} - set(LAYERS))
    assert not unknown, f"put these in LAYERS, in the layer they belong to: {unknown}"


def test_imports_go_down_the_layers() -> None:
    problems: list[str] = []
    for module, path in modules():
        here = top(module)
        layer = LAYERS.get(here)
        if layer is None:
            continue
        where = f"{path.relative_to(PACKAGE.parent)}"
        for line, imported in imports(module, path):
            if imported.split(".")[0] in WEB_FRAMEWORKS and layer == SERVICES:
                problems.append(f"{where}:{line}: a service imports {imported} (web framework)")
            if imported != "streamforge" and not imported.startswith("streamforge."):
                continue
            there = top(imported)
            if there == here:
                continue
            target = LAYERS.get(there)
            if target is None:
                continue  # reported by test_every_module_has_a_layer
            if there in COMPOSITION_ROOT:
                if here not in ROOT_USERS:
                    problems.append(f"{where}:{line}: imports the composition root ({imported})")
            elif there == "schemas":
                if here not in SCHEMA_USERS:
                    problems.append(
                        f"{where}:{line}: imports {imported}: schemas are the HTTP layer's; "
                        "take and return domain objects, and let the router map them"
                    )
            elif target > layer:
                problems.append(
                    f"{where}:{line}: {LAYER_NAMES[layer]} imports {imported}, "
                    f"which is in a higher layer ({LAYER_NAMES[target]})"
                )
            elif target == layer == ADAPTERS:
                problems.append(f"{where}:{line}: adapters do not import each other: {imported}")
    assert not problems, "\n".join(problems)


def test_the_rule_catches_an_import_upwards(tmp_path: Path) -> None:
    """The walk sees relative imports and ``TYPE_CHECKING`` blocks too."""
    source = tmp_path / "chat.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..routers import chat\n"
        "if TYPE_CHECKING:\n"
        "    from streamforge.components import Components\n",
        encoding="utf-8",
    )
    found = [name for _, name in imports("streamforge.services.chat", source)]
    assert "streamforge.routers" in found
    assert "streamforge.components" in found
    assert LAYERS[top("streamforge.routers")] > LAYERS[top("streamforge.services.chat")]
