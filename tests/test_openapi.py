"""The OpenAPI document: valid, errors as the JSON they are, every stream's events described
with schemas that real streams match, and an example on every operation."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import orjson
import pytest
from fastapi import FastAPI

from streamforge.services.generation import SHUTDOWN_ERROR
from streamforge.services.streams import ABANDONED_ERROR
from streamforge.services.workers import WORKER_LOST
from tests.conftest import AppFactory, asgi_client
from tests.rag_support import BEES, create_collection, ingest, markdown_bytes
from tests.sse_client import read_chat

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
STREAMS = {
    "/chat": "post",
    "/chat/streams/{stream_id}": "get",
    "/v1/chat/completions": "post",
    "/v1/messages": "post",
}


@pytest.fixture
def app(app_factory: AppFactory) -> FastAPI:
    return app_factory()


@pytest.fixture
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A JSON Schema 2020-12 validator for ``schema``, its refs resolved in ``document``."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def test_the_document_is_structurally_valid(document: dict[str, Any]) -> None:
    # openapi-spec-validator is not among the dependencies: the rules it would check first.
    assert re.fullmatch(r"3\.1\.\d+", document["openapi"])
    assert document["info"]["title"] and document["info"]["version"]
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))
    for method, path, operation in operations(document):
        assert path.startswith("/")
        declared = set(re.findall(r"{([^}]+)}", path))
        in_path = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == in_path, (method, path)
        assert operation["responses"], (method, path)
        for status, response in operation["responses"].items():
            assert re.fullmatch(r"[1-5]\d\d|default", status), (method, path, status)
            assert response.get("description"), (method, path, status)
    for ref in refs(document):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in document["components"]["schemas"], ref
    # Every schema is itself a valid JSON Schema.
    for name, schema in document["components"]["schemas"].items():
        validator(document, schema)
        assert name


def test_every_error_response_is_the_json_it_is(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                content = response["content"]
                assert list(content) == ["application/json"], (method, path, status)
                schema = content["application/json"]["schema"]
                # Anthropic's Messages API answers in Anthropic's error shape.
                shape = "AnthropicError" if path == "/v1/messages" else "ErrorResponse"
                assert schema == {"$ref": f"#/components/schemas/{shape}"}
    # Not FastAPI's own shape for 422 (which the server never sends), e.g. on /v1/models/{model}.
    assert "HTTPValidationError" not in orjson.dumps(document).decode()
    assert "422" in document["paths"]["/v1/models/{model}"]["get"]["responses"]
    chat = document["paths"]["/chat"]["post"]["responses"]
    assert {"400", "404", "413", "422"} <= set(chat)


def test_every_operation_has_examples_that_fit_their_schemas(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        examples = 0
        media_types = [
            *operation.get("requestBody", {}).get("content", {}).items(),
            *(
                item
                for response in operation["responses"].values()
                for item in response.get("content", {}).items()
            ),
        ]
        for media_type, media in media_types:
            if "example" not in media:
                continue
            examples += 1
            if media_type == "application/json":
                errors = list(validator(document, media["schema"]).iter_errors(media["example"]))
                assert not errors, (method, path, media["example"], errors[0])
        assert examples, f"{method.upper()} {path} has no example"
        for media in operation.get("requestBody", {}).get("content", {}).values():
            assert "example" in media, f"{method.upper()} {path}: its request body"


def test_every_stream_lists_its_events_with_schemas(document: dict[str, Any]) -> None:
    for path, method in STREAMS.items():
        stream = document["paths"][path][method]["responses"]["200"]["content"]["text/event-stream"]
        events = stream["x-sse-events"]
        for event in events.values():
            assert event["description"]
            data = event["data"]
            assert data == {"type": "string"} or data["$ref"].startswith("#/components/schemas/")
        if path.startswith("/chat"):
            assert set(events) == {"message", "session", "sources", "usage", "error", "done"}
            assert stream["example"].startswith("retry: ")
        elif path == "/v1/messages":
            assert set(events) == {
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
                "ping",
                "error",
            }
            assert stream["example"].rstrip().endswith('data: {"type":"message_stop"}')
        else:
            assert set(events) == {"chunk", "error", "done"}
            assert stream["example"].rstrip().endswith("data: [DONE]")


def event_schema(document: dict[str, Any], path: str, event: str) -> Any:
    method = STREAMS[path]
    stream = document["paths"][path][method]["responses"]["200"]["content"]["text/event-stream"]
    return validator(document, stream["x-sse-events"][event]["data"])


async def test_real_streams_match_their_event_schemas(app: FastAPI) -> None:
    async with asgi_client(app) as client:
        components = app.state.components
        document = app.openapi()
        # Not vacuous: a wrong event does not pass.
        assert not event_schema(document, "/chat", "done").is_valid({"status": "completed"})
        assert not event_schema(document, "/chat", "session").is_valid("text")
        await create_collection(client, "bees")
        await ingest(client, components, "bees", "bees.md", markdown_bytes("Bees", [BEES]))
        stream = await read_chat(client, {"message": "When are hives inspected?", "rag": True})
        seen = {event or "message" for _, event, _ in stream.events}
        assert {"message", "session", "sources", "usage", "done"} <= seen
        for _, event, data in stream.events:
            name = event or "message"
            value = data if name == "message" else orjson.loads(data)
            errors = list(event_schema(document, "/chat", name).iter_errors(value))
            assert not errors, (name, value, errors[0])
        # The error events the server writes, as they are.
        for error in (SHUTDOWN_ERROR, ABANDONED_ERROR, WORKER_LOST):
            assert event_schema(document, "/chat", "error").is_valid(dict(error))

        # The OpenAI format: every data line is a chunk, an error or [DONE].
        body = {
            "model": "simulated",
            "messages": [{"role": "user", "content": "Hello"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "rag": True,
        }
        response = await client.post("/v1/chat/completions", json=body)
        lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        chunk = event_schema(document, "/v1/chat/completions", "chunk")
        for line in lines[:-1]:
            errors = list(chunk.iter_errors(orjson.loads(line)))
            assert not errors, (line, errors[0])

        # Anthropic's format: every event's data matches the schema listed for its name.
        response = await client.post(
            "/v1/messages",
            json={
                "model": "simulated",
                "max_tokens": 5,
                "messages": body["messages"],
                "stream": True,
            },
        )
        named = [block.split("\n") for block in response.text.split("\n\n") if block]
        assert [lines[0] for lines in named][-1] == "event: message_stop"
        for event_line, data_line in named:
            name, data = event_line.removeprefix("event: "), orjson.loads(data_line[6:])
            errors = list(event_schema(document, "/v1/messages", name).iter_errors(data))
            assert not errors, (name, data, errors[0])


async def test_documents_and_schema_are_served(app: FastAPI) -> None:
    async with asgi_client(app) as client:
        served = (await client.get("/openapi.json")).json()
        page = await client.get("/docs")
    assert served == app.openapi()
    assert page.status_code == 200 and "/openapi.json" in page.text
