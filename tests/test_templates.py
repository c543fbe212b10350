"""Versioned prompt templates, stored on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streamforge.components import Components
from streamforge.errors import NotFound, ValidationFailed
from streamforge.services.templates import (
    DEFAULT_SYSTEM_PROMPT,
    DEFAULT_TEMPLATE,
    TemplateService,
    TemplateVersion,
    template_variables,
)
from tests.conftest import AppFactory, asgi_client

SUPPORT = "You help {audience} with {topic}, in a {tone} tone. Reply in {{JSON}}."


def version_of(system_prompt: str, variables: tuple[str, ...] = ()) -> TemplateVersion:
    return TemplateVersion(
        id=None, name="t", version=1, system_prompt=system_prompt, variables=variables
    )


async def test_crud(app_factory: AppFactory, database_url: str) -> None:
    async with asgi_client(app_factory(database_url)) as client:
        created = await client.post(
            "/templates",
            json={"name": "support", "system_prompt": SUPPORT, "description": "first"},
        )
        assert created.status_code == 201, created.text
        v1 = created.json()
        assert set(v1) == {
            "id",
            "name",
            "version",
            "description",
            "system_prompt",
            "variables",
            "created_at",
        }
        assert (v1["name"], v1["version"], v1["description"]) == ("support", 1, "first")
        assert v1["system_prompt"] == SUPPORT
        assert v1["variables"] == ["audience", "tone", "topic"]

        assert (await client.get("/templates/support")).json() == v1

        updated = await client.put(
            "/templates/support", json={"system_prompt": "Be brief with {audience}."}
        )
        assert updated.status_code == 200, updated.text
        v2 = updated.json()
        assert (v2["version"], v2["variables"], v2["description"]) == (2, ["audience"], None)
        assert v2["id"] != v1["id"]

        assert (await client.get("/templates/support")).json() == v2
        assert (await client.get("/templates/support", params={"version": 1})).json() == v1
        assert (await client.get("/templates/support", params={"version": 2})).json() == v2
        versions = (await client.get("/templates/support/versions")).json()
        assert versions["total"] == 2
        assert versions["items"] == [v1, v2]

        listed = (await client.get("/templates")).json()
        assert [(t["name"], t["version"]) for t in listed["items"]] == [
            ("default", 1),
            ("support", 2),
        ]
        assert listed["total"] == 2

        assert (await client.delete("/templates/support")).status_code == 204
        assert (await client.get("/templates/support")).status_code == 404
        assert (await client.get("/templates/support?version=1")).status_code == 404
        assert (await client.get("/templates/support/versions")).status_code == 404
        put = await client.put("/templates/support", json={"system_prompt": "x"})
        assert put.status_code == 404
        assert (await client.delete("/templates/support")).status_code == 404
        listed = (await client.get("/templates")).json()
        assert [t["name"] for t in listed["items"]] == ["default"]
        assert listed["total"] == 1


async def test_deleted_version_still_renders_by_id(
    app_factory: AppFactory, database_url: str
) -> None:
    app = app_factory(database_url)
    async with asgi_client(app) as client:
        v1 = await client.post("/templates", json={"name": "kept", "system_prompt": SUPPORT})
        await client.put("/templates/kept", json={"system_prompt": "Version two for {audience}."})
        assert (await client.delete("/templates/kept")).status_code == 204
        service: TemplateService = app.state.components.templates

        template = await service.get_version_by_id("local", v1.json()["id"])
        assert (template.name, template.version) == ("kept", 1)
        assert template.variables == ("audience", "tone", "topic")
        rendered = service.render(template, {"audience": "admins", "topic": "DNS", "tone": "calm"})
        assert rendered == "You help admins with DNS, in a calm tone. Reply in {JSON}."

        with pytest.raises(NotFound, match="kept"):
            await service.resolve("local", "kept")


async def test_recreating_a_deleted_name_continues_its_versions(
    app_factory: AppFactory, database_url: str
) -> None:
    # Deleted rows stay (sessions still render them), so a (name, version) pair is never
    # reused for a different text.
    async with asgi_client(app_factory(database_url)) as client:
        body = {"name": "again", "system_prompt": "one"}
        assert (await client.post("/templates", json=body)).json()["version"] == 1
        assert (await client.delete("/templates/again")).status_code == 204
        again = await client.post("/templates", json={**body, "system_prompt": "two"})
        assert again.status_code == 201
        assert again.json()["version"] == 2
        versions = (await client.get("/templates/again/versions")).json()
        assert [(v["version"], v["system_prompt"]) for v in versions["items"]] == [(2, "two")]
        assert (await client.get("/templates/again?version=1")).status_code == 404


async def test_duplicate_name_is_a_conflict(app_factory: AppFactory, database_url: str) -> None:
    async with asgi_client(app_factory(database_url)) as client:
        body = {"name": "dup", "system_prompt": "Hello."}
        assert (await client.post("/templates", json=body)).status_code == 201
        response = await client.post("/templates", json=body)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "conflict"
        assert "dup" in response.json()["error"]["message"]


async def test_concurrent_writes_never_share_a_version(
    app_factory: AppFactory, database_url: str
) -> None:
    async with asgi_client(app_factory(database_url)) as client:
        body = {"name": "race", "system_prompt": "Hello."}
        creates = await asyncio.gather(*(client.post("/templates", json=body) for _ in range(5)))
        assert sorted(r.status_code for r in creates) == [201, 409, 409, 409, 409]

        updates = await asyncio.gather(
            *(client.put("/templates/race", json={"system_prompt": f"take {i}"}) for i in range(5))
        )
        assert {r.status_code for r in updates} <= {200, 409}
        stored = [r.json()["version"] for r in updates if r.status_code == 200]
        versions = (await client.get("/templates/race/versions")).json()["items"]
        assert sorted(stored) == [v["version"] for v in versions][1:]
        assert [v["version"] for v in versions] == list(range(1, len(versions) + 1))


async def test_list_is_sorted_by_name_and_paginated(
    app_factory: AppFactory, database_url: str
) -> None:
    names = ["b", "B", "a-b", "ab", "a.c", "Z9", "a_b", "0x"]
    async with asgi_client(app_factory(database_url)) as client:
        for name in names:
            response = await client.post("/templates", json={"name": name, "system_prompt": "x"})
            assert response.status_code == 201, response.text
        await client.put("/templates/ab", json={"system_prompt": "y"})

        everything = (await client.get("/templates", params={"limit": 100})).json()
        assert everything["total"] == len(names) + 1
        expected = ["default", *sorted(names)]
        assert [t["name"] for t in everything["items"]] == expected
        assert [t["version"] for t in everything["items"] if t["name"] == "ab"] == [2]

        seen = []
        for offset in range(0, len(expected), 3):
            page = (await client.get("/templates", params={"limit": 3, "offset": offset})).json()
            assert page["total"] == len(expected)
            assert (page["limit"], page["offset"]) == (3, offset)
            seen += [t["name"] for t in page["items"]]
        assert seen == expected
        one = (await client.get("/templates", params={"limit": 1})).json()
        assert [t["name"] for t in one["items"]] == ["default"]
        past = (await client.get("/templates", params={"offset": 50})).json()
        assert past["items"] == []


async def test_unknown_names_and_versions_are_404(app_factory: AppFactory) -> None:
    async with asgi_client(app_factory()) as client:
        await client.post("/templates", json={"name": "known", "system_prompt": "x"})
        for method, path in [
            ("GET", "/templates/unknown"),
            ("GET", "/templates/unknown/versions"),
            ("PUT", "/templates/unknown"),
            ("DELETE", "/templates/unknown"),
            ("GET", "/templates/known?version=2"),
            ("GET", "/templates/default?version=2"),
            # Names that could never be stored are simply missing.
            ("GET", "/templates/-x"),
            ("GET", "/templates/" + "x" * 101),
            ("DELETE", "/templates/a%20b"),
        ]:
            kwargs: dict[str, Any] = {"json": {"system_prompt": "x"}} if method == "PUT" else {}
            response = await client.request(method, path, **kwargs)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == "not_found"
        # NUL is refused in every URL, before any route sees it.
        nul = await client.get("/templates/%00")
        assert nul.status_code == 400 and "NUL" in nul.json()["error"]["message"]


@pytest.mark.parametrize(
    ("system_prompt", "fragment"),
    [
        ("Hello {name", "literal braces"),
        ("Hello name}", "literal braces"),
        ("Hello {", "literal braces"),
        ("Hello {}", "positional placeholder {}"),
        ("Hello {0}", "positional placeholder {0}"),
        ("Hello {user.name}", "attribute or index access"),
        ("Hello {users[0]}", "attribute or index access"),
        ("Hello {name!r}", "conversions and format specs"),
        ("Hello {name:>10}", "conversions and format specs"),
        ("Hello {a:{b}}", "conversions and format specs"),
        ("Hello { name }", "identifier"),
        ("Hello {first-name}", "identifier"),
        ("Hello {1st}", "identifier"),
    ],
)
def test_invalid_syntax_names_the_problem(system_prompt: str, fragment: str) -> None:
    with pytest.raises(ValidationFailed, match=r"^system_prompt: ") as caught:
        template_variables(system_prompt)
    assert fragment in caught.value.message


async def test_invalid_syntax_is_a_422(app_factory: AppFactory) -> None:
    async with asgi_client(app_factory()) as client:
        create = await client.post("/templates", json={"name": "bad", "system_prompt": "{a.b}"})
        assert create.status_code == 422
        error = create.json()["error"]
        assert error["code"] == "validation_error"
        assert error["message"].startswith("system_prompt: placeholder {a.b}")
        assert error["details"][0]["loc"] == ["body", "system_prompt"]

        await client.post("/templates", json={"name": "good", "system_prompt": "{a}"})
        update = await client.put("/templates/good", json={"system_prompt": "{a"})
        assert update.status_code == 422
        assert (await client.get("/templates/good/versions")).json()["total"] == 1
        assert (await client.get("/templates")).json()["total"] == 2


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "system_prompt": "x"},
        {"name": "-dash-first", "system_prompt": "x"},
        {"name": ".dot-first", "system_prompt": "x"},
        {"name": "has space", "system_prompt": "x"},
        {"name": "a/b", "system_prompt": "x"},
        {"name": "trailing\n", "system_prompt": "x"},
        {"name": "café", "system_prompt": "x"},
        {"name": "x" * 101, "system_prompt": "x"},
        {"name": 7, "system_prompt": "x"},
        {"name": "ok"},
        {"name": "ok", "system_prompt": ""},
        {"name": "ok", "system_prompt": "x" * 20_001},
        {"name": "ok", "system_prompt": "a\x00b"},
        {"name": "ok", "system_prompt": "x", "description": "a\x00b"},
        {"name": "ok", "system_prompt": "x", "owner_id": "someone"},
        {"name": "ok", "system_prompt": "x", "version": 3},
    ],
)
async def test_invalid_create_bodies_are_422(app_factory: AppFactory, body: Any) -> None:
    async with asgi_client(app_factory()) as client:
        response = await client.post("/templates", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "validation_error"
        assert (await client.get("/templates")).json()["total"] == 1


async def test_longest_name_and_prompt_are_accepted(app_factory: AppFactory) -> None:
    name = "N" + "x" * 99
    async with asgi_client(app_factory()) as client:
        response = await client.post(
            "/templates", json={"name": name, "system_prompt": "é" * 20_000}
        )
        assert response.status_code == 201, response.text
        assert (await client.get(f"/templates/{name}")).json()["name"] == name
        extra = await client.put(f"/templates/{name}", json={"system_prompt": "x", "name": "y"})
        assert extra.status_code == 422


async def test_default_template(app_factory: AppFactory) -> None:
    app = app_factory()
    async with asgi_client(app) as client:
        default = (await client.get("/templates/default")).json()
        assert default == {
            "id": None,
            "name": "default",
            "version": 1,
            "description": default["description"],
            "system_prompt": DEFAULT_SYSTEM_PROMPT,
            "variables": [],
            "created_at": None,
        }
        assert (await client.get("/templates/default?version=1")).json() == default
        assert (await client.get("/templates/default/versions")).json()["items"] == [default]
        assert (await client.get("/templates")).json()["items"] == [default]

        for response in [
            await client.post("/templates", json={"name": "default", "system_prompt": "x"}),
            await client.put("/templates/default", json={"system_prompt": "x"}),
            await client.delete("/templates/default"),
        ]:
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "conflict"
        assert (await client.get("/templates/default")).json() == default

        components: Components = app.state.components
        service = components.templates
        assert await service.resolve("local", None) == DEFAULT_TEMPLATE
        assert await service.resolve("local", "default") == DEFAULT_TEMPLATE
        assert await service.resolve("local", "default", 1) == DEFAULT_TEMPLATE
        assert await service.get_version_by_id("local", None) == DEFAULT_TEMPLATE
        with pytest.raises(NotFound, match="default"):
            await service.resolve("local", "default", 2)
        assert DEFAULT_TEMPLATE.id is None
        assert service.render(DEFAULT_TEMPLATE, {"unused": "x"}) == DEFAULT_SYSTEM_PROMPT


async def test_resolve_and_render(app_factory: AppFactory, database_url: str) -> None:
    app = app_factory(database_url)
    async with asgi_client(app) as client:
        await client.post("/templates", json={"name": "support", "system_prompt": SUPPORT})
        await client.put("/templates/support", json={"system_prompt": "v2 {audience}"})
        service: TemplateService = app.state.components.templates

        latest = await service.resolve("local", "support")
        assert (latest.version, latest.variables, latest.system_prompt) == (
            2,
            ("audience",),
            "v2 {audience}",
        )
        first = await service.resolve("local", "support", 1)
        assert first.version == 1
        assert await service.get_version_by_id("local", first.id) == first
        for version in (3, 0, 2**40):
            with pytest.raises(NotFound, match="'support' has no version"):
                await service.resolve("local", "support", version)
        with pytest.raises(NotFound, match="'missing'"):
            await service.resolve("local", "missing")

        with pytest.raises(ValidationFailed) as caught:
            service.render(first, {"topic": "billing", "extra": "ignored"})
        assert caught.value.message == "missing template variables: audience, tone"
        assert caught.value.details["missing"] == ["audience", "tone"]

        # Values go in verbatim: braces in them are not placeholders.
        values = {"audience": "{topic}", "topic": "a}{b", "tone": "dry", "extra": "ignored"}
        assert service.render(first, values) == (
            "You help {topic} with a}{b, in a dry tone. Reply in {JSON}."
        )


def test_render_agrees_with_langchain() -> None:
    prompts = pytest.importorskip("langchain_core.prompts")
    values = {"a": "1", "b_2": "{x}", "名前": "n", "class": "c"}
    for text in [
        "plain text",
        "{a}",
        "{{a}} is {a}, {{{a}}} {b_2}{a}",
        "{名前} and {class}",
        "}}{{",
        "{a:}",
    ]:
        langchain = prompts.PromptTemplate.from_template(text)
        assert template_variables(text) == tuple(sorted(langchain.input_variables))
        variables = {k: v for k, v in values.items() if k in langchain.input_variables}
        assert TemplateService.render(version_of(text), variables) == langchain.format(**variables)


async def test_other_owners_see_nothing(app_factory: AppFactory, database_url: str) -> None:
    app = app_factory(database_url)
    async with asgi_client(app) as client:
        mine = (await client.post("/templates", json={"name": "mine", "system_prompt": "x"})).json()
        service: TemplateService = app.state.components.templates

        with pytest.raises(NotFound, match="'mine'"):
            await service.resolve("intruder", "mine")
        with pytest.raises(NotFound, match="'mine'"):
            await service.resolve("intruder", "mine", 1)
        with pytest.raises(NotFound):
            await service.get_version_by_id("intruder", mine["id"])
        with pytest.raises(NotFound, match="'mine'"):
            await service.get("intruder", "mine")
        with pytest.raises(NotFound, match="'mine'"):
            await service.versions("intruder", "mine", limit=10, offset=0)
        with pytest.raises(NotFound, match="'mine'"):
            await service.update("intruder", "mine", "taken over")
        with pytest.raises(NotFound, match="'mine'"):
            await service.delete("intruder", "mine")
        listed = await service.list("intruder", limit=10, offset=0)
        assert [t.name for t in listed.items] == ["default"]

        # The same name is free for another owner, and stays separate.
        theirs = await service.create("intruder", "mine", "their {own}")
        assert (theirs.version, theirs.variables) == (1, ["own"])
        assert (await client.get("/templates/mine")).json() == mine
        with pytest.raises(NotFound):
            await service.get_version_by_id("local", theirs.id)
