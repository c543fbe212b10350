"""Versioned prompt templates: a system prompt with ``{variable}`` placeholders.

The syntax is the plain subset of Python's format strings that LangChain's
``PromptTemplate.from_template`` (f-string format) parses the same way: ``{name}`` with an
identifier for a name, ``{{`` and ``}}`` for literal braces. Positional fields, attribute or
index access, conversions and format specs are refused, so a stored template renders the same
here and in LangChain, and rendering never evaluates anything but a lookup.

Every update stores a new version; rows are never rewritten. Deleting a template hides all its
versions from the API, but a session that recorded a version's id still renders it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from string import Formatter
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from streamforge.db.database import Database
from streamforge.db.ids import is_valid_id
from streamforge.errors import Conflict, NotFound, ValidationFailed
from streamforge.models import PromptTemplate
from streamforge.repositories import templates as repo
from streamforge.services.pages import Page

# Names travel in URL paths: letters, digits and "_.-", which need no escaping.
NAME_MAX_LENGTH = 100
DEFAULT_TEMPLATE_NAME = "default"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
_DEFAULT_DESCRIPTION = "The built-in template, used when a chat names none."

_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{NAME_MAX_LENGTH - 1}}}")
# The version column is a 32-bit integer; a larger number names no version (and PostgreSQL
# would refuse to compare with it).
_MAX_VERSION = 2**31 - 1


@dataclass(frozen=True, slots=True)
class TemplateVersion:
    """One version of a template, as the chat service renders it.

    ``id`` is None for the built-in default; otherwise it is the id a session records.
    """

    id: str | None
    name: str
    version: int
    system_prompt: str
    variables: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    """A template version as the API shows it; ``id`` and ``created_at`` are None for the
    built-in default."""

    id: str | None
    name: str
    version: int
    description: str | None
    system_prompt: str
    variables: list[str]
    created_at: datetime | None


class Renderable(Protocol):
    """What ``render`` reads of a template: ``TemplateVersion`` or any look-alike."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def system_prompt(self) -> str: ...


DEFAULT_TEMPLATE = TemplateVersion(
    id=None,
    name=DEFAULT_TEMPLATE_NAME,
    version=1,
    system_prompt=DEFAULT_SYSTEM_PROMPT,
    variables=(),
)

_Piece = tuple[str, str | None]


def _syntax_error(reason: str) -> ValidationFailed:
    return ValidationFailed(
        f"system_prompt: {reason}",
        details=[{"loc": ["body", "system_prompt"], "msg": reason, "type": "template_syntax"}],
    )


def _pieces(text: str) -> list[_Piece]:
    """The template as (literal text, variable or None) pairs; ``ValidationFailed`` if invalid."""
    try:
        parsed = list(Formatter().parse(text))
    except ValueError as exc:
        raise _syntax_error(
            f"invalid placeholder syntax ({exc}); write '{{{{' and '}}}}' for literal braces"
        ) from None
    pieces: list[_Piece] = []
    for literal, field, spec, conversion in parsed:
        if field is not None:
            shown = "{" + field + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            if field == "" or field.isdigit():
                raise _syntax_error(
                    f"positional placeholder {shown}: name the variable, e.g. {{topic}}; "
                    "write '{{' and '}}' for literal braces"
                )
            if any(char in field for char in ".[]"):
                raise _syntax_error(
                    f"placeholder {shown} uses attribute or index access; only {{name}} is allowed"
                )
            if not field.isidentifier():
                raise _syntax_error(
                    f"placeholder {shown}: a variable name must be an identifier "
                    "(letters, digits and underscores, not starting with a digit)"
                )
            if conversion or spec:
                raise _syntax_error(
                    f"placeholder {shown}: conversions and format specs are not supported; "
                    "only {name} is allowed"
                )
        pieces.append((literal, field))
    return pieces


def template_variables(text: str) -> tuple[str, ...]:
    """The variables a template text uses, sorted and without repeats.

    Raises ``ValidationFailed`` when the text is not valid template syntax.
    """
    return tuple(sorted({field for _, field in _pieces(text) if field is not None}))


def _is_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def _not_found(name: str, version: int | None = None) -> NotFound:
    if version is None:
        return NotFound(f"template {name!r} not found")
    return NotFound(f"template {name!r} has no version {version}")


def _exists(name: str) -> Conflict:
    return Conflict(f"template {name!r} already exists; update it to add a version")


def _built_in(action: str) -> Conflict:
    return Conflict(f"the built-in template {DEFAULT_TEMPLATE_NAME!r} cannot be {action}")


def _info(row: PromptTemplate) -> TemplateInfo:
    return TemplateInfo(
        id=row.id,
        name=row.name,
        version=row.version,
        description=row.description,
        system_prompt=row.system_prompt,
        variables=sorted(row.variables),
        created_at=row.created_at,
    )


def _version(row: PromptTemplate) -> TemplateVersion:
    return TemplateVersion(
        id=row.id,
        name=row.name,
        version=row.version,
        system_prompt=row.system_prompt,
        variables=tuple(sorted(row.variables)),
    )


DEFAULT_TEMPLATE_INFO = TemplateInfo(
    id=None,
    name=DEFAULT_TEMPLATE_NAME,
    version=1,
    description=_DEFAULT_DESCRIPTION,
    system_prompt=DEFAULT_SYSTEM_PROMPT,
    variables=[],
    created_at=None,
)


class TemplateService:
    """Templates of one owner at a time; names and ids of other owners behave as missing.

    For the chat service:

    - ``resolve(owner_id, name, version)`` picks the version a new session will use;
    - ``get_version_by_id(owner_id, template_id)`` loads the version a session recorded;
    - ``render(template, variables)`` produces the system prompt.
    """

    def __init__(self, database: Database) -> None:
        self.database = database

    # -- for the chat service ------------------------------------------------------------

    async def resolve(
        self, owner_id: str, name: str | None, version: int | None = None
    ) -> TemplateVersion:
        """The template a chat asked for by name: its latest live version, or ``version``.

        ``None`` or ``"default"`` is the built-in default (version 1). Raises ``NotFound``
        naming the template when it, or the version, does not exist, is deleted or belongs to
        another owner.
        """
        if name is None or name == DEFAULT_TEMPLATE_NAME:
            if version not in (None, 1):
                raise _not_found(DEFAULT_TEMPLATE_NAME, version)
            return DEFAULT_TEMPLATE
        async with self.database.read() as db:
            return _version(await self._load(db, owner_id, name, version))

    async def get_version_by_id(self, owner_id: str, template_id: str | None) -> TemplateVersion:
        """The version a session recorded, by its id; ``None`` is the built-in default.

        A deleted template's versions still resolve here, so existing sessions keep their
        prompt. Raises ``NotFound`` for an id that names no version of this owner.
        """
        if template_id is None:
            return DEFAULT_TEMPLATE
        if not is_valid_id(template_id):
            raise NotFound(f"template version {template_id!r} not found")
        async with self.database.read() as db:
            row = await repo.get_by_id(db, owner_id, template_id)
        if row is None:
            raise NotFound(f"template version {template_id!r} not found")
        return _version(row)

    @staticmethod
    def render(template: Renderable, variables: Mapping[str, str]) -> str:
        """The system prompt with each ``{name}`` replaced by ``variables[name]``.

        Values are inserted verbatim (braces in a value are not placeholders); variables the
        template does not use are ignored. Raises ``ValidationFailed`` naming every missing
        variable, e.g. ``missing template variables: audience, tone``.
        """
        pieces = _pieces(template.system_prompt)
        missing = sorted({f for _, f in pieces if f is not None and f not in variables})
        if missing:
            raise ValidationFailed(
                f"missing template variables: {', '.join(missing)}",
                details={
                    "template": template.name,
                    "version": template.version,
                    "missing": missing,
                },
            )
        return "".join(literal + (variables[f] if f is not None else "") for literal, f in pieces)

    # -- for the API ---------------------------------------------------------------------

    async def create(
        self, owner_id: str, name: str, system_prompt: str, description: str | None = None
    ) -> TemplateInfo:
        """A new template at version 1, or, for a name whose template was deleted, at the
        version after the deleted ones (a name and version never mean two different texts)."""
        if name == DEFAULT_TEMPLATE_NAME:
            raise Conflict(f"template {name!r} is built in; choose another name")
        if not _is_name(name):
            raise ValidationFailed(
                f"name: invalid template name {name!r}: 1-{NAME_MAX_LENGTH} letters, digits, "
                "'_', '.' or '-', starting with a letter or digit"
            )
        variables = template_variables(system_prompt)
        try:
            async with self.database.write() as db:
                highest, live = await repo.name_state(db, owner_id, name)
                if live:
                    raise _exists(name)
                row = await repo.add_version(
                    db,
                    owner_id=owner_id,
                    name=name,
                    version=highest + 1,
                    description=description,
                    system_prompt=system_prompt,
                    variables=list(variables),
                )
                return _info(row)
        except IntegrityError:
            # Another request stored the same version between our read and our insert.
            raise _exists(name) from None

    async def list(self, owner_id: str, *, limit: int, offset: int) -> Page[TemplateInfo]:
        """The latest live version of each template by name, after the built-in default."""
        # The default is item 0 of the listing; stored templates follow from item 1.
        items = [DEFAULT_TEMPLATE_INFO] if offset == 0 else []
        async with self.database.read() as db:
            rows, total = await repo.list_latest(
                db, owner_id, limit=limit - len(items), offset=max(offset - 1, 0)
            )
        items += [_info(row) for row in rows]
        return Page(items=items, total=total + 1, limit=limit, offset=offset)

    async def get(self, owner_id: str, name: str, version: int | None = None) -> TemplateInfo:
        if name == DEFAULT_TEMPLATE_NAME:
            if version not in (None, 1):
                raise _not_found(name, version)
            return DEFAULT_TEMPLATE_INFO
        async with self.database.read() as db:
            return _info(await self._load(db, owner_id, name, version))

    async def versions(
        self, owner_id: str, name: str, *, limit: int, offset: int
    ) -> Page[TemplateInfo]:
        """Every live version of a template, oldest first."""
        if name == DEFAULT_TEMPLATE_NAME:
            items = [DEFAULT_TEMPLATE_INFO] if offset == 0 else []
            return Page(items=items, total=1, limit=limit, offset=offset)
        async with self.database.read() as db:
            await self._load(db, owner_id, name)
            rows, total = await repo.list_versions(db, owner_id, name, limit=limit, offset=offset)
            items = [_info(row) for row in rows]
        return Page(items=items, total=total, limit=limit, offset=offset)

    async def update(
        self, owner_id: str, name: str, system_prompt: str, description: str | None = None
    ) -> TemplateInfo:
        """Store the next version of a template; earlier versions stay as they were."""
        if name == DEFAULT_TEMPLATE_NAME:
            raise _built_in("updated")
        variables = template_variables(system_prompt)
        try:
            async with self.database.write() as db:
                latest = await self._load(db, owner_id, name)
                row = await repo.add_version(
                    db,
                    owner_id=owner_id,
                    name=name,
                    version=latest.version + 1,
                    description=description,
                    system_prompt=system_prompt,
                    variables=list(variables),
                )
                return _info(row)
        except IntegrityError:
            raise Conflict(
                f"template {name!r} was changed by another request; retry the update"
            ) from None

    async def delete(self, owner_id: str, name: str) -> None:
        """Hide every version of a template; sessions that used one can still render it."""
        if name == DEFAULT_TEMPLATE_NAME:
            raise _built_in("deleted")
        if not _is_name(name):
            raise _not_found(name)
        async with self.database.write() as db:
            if not await repo.soft_delete(db, owner_id, name):
                raise _not_found(name)

    @staticmethod
    async def _load(
        db: AsyncSession, owner_id: str, name: str, version: int | None = None
    ) -> PromptTemplate:
        # A name that could never be stored names no template: the same 404 as a missing one,
        # without sending the database text it may refuse (NUL, oversized values).
        if not _is_name(name):
            raise _not_found(name)
        if version is None:
            row = await repo.get_latest(db, owner_id, name)
            if row is None:
                raise _not_found(name)
            return row
        if not 1 <= version <= _MAX_VERSION:
            raise _not_found(name, version)
        row = await repo.get_version(db, owner_id, name, version)
        if row is None:
            raise _not_found(name, version)
        return row
