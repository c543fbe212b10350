"""The OpenAPI document as the server really answers.

FastAPI's generated document is refined in one pass:

- every error response (4xx, 5xx) is the JSON it is, `ErrorResponse`, with an example — also on
  the streaming routes, whose `response_class` would otherwise declare them `text/event-stream`,
  and instead of FastAPI's own `HTTPValidationError` for 422;
- every event-stream response lists its events in `x-sse-events` (event name → description and
  the schema of its `data:`, a component of its own), with an example stream;
- every request body has an example, and so does every success response that has no other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from streamforge.schemas.anthropic import ANTHROPIC_EVENTS
from streamforge.schemas.events import OPENAI_EVENTS, PLAIN_EVENTS, event_models
from streamforge.streaming.anthropic import error_body, error_type

_REF = "#/components/schemas/{model}"
_ERROR = {"$ref": _REF.format(model="ErrorResponse")}
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

_ERROR_EXAMPLES: dict[int, tuple[str, str]] = {
    400: ("malformed_json", "the request body is not valid JSON"),
    401: ("unauthorized", "an API key is needed: Authorization: Bearer <key>"),
    403: ("forbidden", "this needs an administrator's key"),
    404: ("not_found", "session not found"),
    409: ("conflict", "a template named 'support' already exists"),
    413: ("payload_too_large", "the request body is larger than 1048576 bytes"),
    429: ("rate_limited", "the local model's queue is full; try again shortly"),
    502: ("provider_error", "the provider failed: the upstream answered 500"),
    503: ("provider_unavailable", "the provider is not available right now"),
    504: ("provider_timeout", "the provider did not answer in time"),
}
_VALIDATION_EXAMPLE = {
    "error": {
        "code": "validation_error",
        "message": "message: Field required",
        "details": [{"loc": ["body", "message"], "msg": "Field required", "type": "missing"}],
    }
}

_PLAIN_STREAM_EXAMPLE = (
    "retry: 3000\n\n"
    "id: 1\nevent: session\n"
    'data: {"session_id":"0190f1c2-8d3a-7b4e-9f00-3c2a1b0d9e8f",'
    '"stream_id":"0190f1c2-8d3b-7c11-a2f4-5e6d7c8b9a01",'
    '"user_message_id":"0190f1c2-8d3a-7b4e-9f00-3c2a1b0d9e90",'
    '"assistant_message_id":"0190f1c2-8d3a-7b4e-9f00-3c2a1b0d9e91",'
    '"provider":"simulated","model":null,"template":{"name":"default","version":1}}\n\n'
    "id: 2\ndata: Hello!\n\n"
    "id: 3\ndata:  How can I help?\n\n"
    "id: 4\nevent: usage\n"
    'data: {"prompt_tokens":1,"completion_tokens":5,"total_tokens":6}\n\n'
    "id: 5\nevent: done\n"
    'data: {"finish_reason":"stop","status":"completed","provider":"simulated",'
    '"message_id":"0190f1c2-8d3a-7b4e-9f00-3c2a1b0d9e91",'
    '"usage":{"prompt_tokens":1,"completion_tokens":5,"total_tokens":6},'
    '"timings":{"total_ms":512.3,"ttft_ms":101.2}}\n\n'
)
_OPENAI_STREAM_EXAMPLE = (
    'data: {"id":"chatcmpl-0190f1c2","object":"chat.completion.chunk","created":1735689600,'
    '"model":"simulated","system_fingerprint":null,"choices":[{"index":0,'
    '"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
    'data: {"id":"chatcmpl-0190f1c2","object":"chat.completion.chunk","created":1735689600,'
    '"model":"simulated","system_fingerprint":null,"choices":[{"index":0,'
    '"delta":{"content":"Hello!"},"logprobs":null,"finish_reason":null}]}\n\n'
    'data: {"id":"chatcmpl-0190f1c2","object":"chat.completion.chunk","created":1735689600,'
    '"model":"simulated","system_fingerprint":null,"choices":[{"index":0,"delta":{},'
    '"logprobs":null,"finish_reason":"stop"}]}\n\n'
    "data: [DONE]\n\n"
)
_ANTHROPIC_STREAM_EXAMPLE = (
    "event: message_start\n"
    'data: {"type":"message_start","message":{"id":"msg_0190f1c2","type":"message",'
    '"role":"assistant","content":[],"model":"simulated","stop_reason":null,'
    '"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}\n\n'
    "event: content_block_start\n"
    'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
    "\n\n"
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    '"text":"Hello!"}}\n\n'
    "event: content_block_stop\n"
    'data: {"type":"content_block_stop","index":0}\n\n'
    "event: message_delta\n"
    'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    '"usage":{"input_tokens":1,"output_tokens":1}}\n\n'
    "event: message_stop\n"
    'data: {"type":"message_stop"}\n\n'
)
_STREAMS: dict[str, tuple[dict[str, tuple[type[BaseModel] | None, str]], str]] = {
    "/chat": (PLAIN_EVENTS, _PLAIN_STREAM_EXAMPLE),
    "/chat/streams/{stream_id}": (PLAIN_EVENTS, _PLAIN_STREAM_EXAMPLE),
    "/v1/chat/completions": (OPENAI_EVENTS, _OPENAI_STREAM_EXAMPLE),
    "/v1/messages": (ANTHROPIC_EVENTS, _ANTHROPIC_STREAM_EXAMPLE),
}
# Paths whose errors have Anthropic's shape (``http_errors.py``).
_ANTHROPIC_ERROR = {"$ref": _REF.format(model="AnthropicError")}
_ANTHROPIC_ERROR_PATHS = frozenset({"/v1/messages"})

_ID = "0190f1c2-8d3a-7b4e-9f00-3c2a1b0d9e8f"
# Request bodies whose schema has no example of its own, by schema name.
_REQUEST_EXAMPLES: dict[str, Any] = {
    "SessionCreate": {"title": "Router questions"},
    "SessionUpdate": {"title": "Resetting the router"},
    "TemplateCreate": {
        "name": "support",
        "system_prompt": "You help {customer} with their router.",
        "description": "Support answers",
    },
    "TemplateUpdate": {"system_prompt": "You help {customer}, briefly."},
    "UserCreate": {"name": "ada", "role": "user"},
    "KeyCreate": {"user": "ada", "name": "laptop"},
    # multipart/form-data: the file's bytes, and the collection's name or id.
    "Body_upload_document_documents_post": {"collection": "manuals", "file": "router-guide.pdf"},
}
# Success answers of operations that have no error response to show an example with.
_RESPONSE_EXAMPLES: dict[tuple[str, str], Any] = {
    ("get", "/"): {
        "name": "StreamForge",
        "version": "0.1.0",
        "docs": "/docs",
        "openapi": "/openapi.json",
        "endpoints": ["GET /", "GET /health", "POST /chat"],
    },
    ("get", "/health"): {
        "status": "ok",
        "version": "0.1.0",
        "components": {
            "database": {"status": "ok"},
            "vector_store": {"status": "ok"},
            "event_log": {"status": "ok", "worker": _ID},
            "provider": {"status": "ok", "name": "local"},
        },
    },
    ("get", "/chat/health"): {
        "status": "ok",
        "service": "chat",
        "provider": {"status": "ok", "name": "local"},
        "providers": ["local", "simulated"],
        "active_streams": 0,
    },
    ("get", "/metrics"): "# TYPE streamforge_active_streams gauge\nstreamforge_active_streams 0\n",
    ("get", "/v1/models"): {
        "object": "list",
        "data": [{"id": "local", "object": "model", "created": 1735689600, "owned_by": "local"}],
    },
    ("get", "/ui"): "<!doctype html>…",
}


def error_example(status: int) -> dict[str, Any]:
    if status == 422:
        return _VALIDATION_EXAMPLE
    code, message = _ERROR_EXAMPLES.get(status, ("bad_request", "the request cannot be served"))
    return {"error": {"code": code, "message": message}}


def anthropic_error_example(status: int) -> dict[str, Any]:
    shown = 400 if status == 422 else status
    message = error_example(status)["error"]["message"]
    return error_body(error_type(shown), message)


def _event_components() -> dict[str, Any]:
    models = [*event_models(), *(m for m, _ in ANTHROPIC_EVENTS.values() if m is not None)]
    _, schema = models_json_schema(
        [(model, "serialization") for model in models], ref_template=_REF
    )
    definitions: dict[str, Any] = schema.get("$defs", {})
    return definitions


def _sse_events(table: dict[str, tuple[type[BaseModel] | None, str]]) -> dict[str, Any]:
    events: dict[str, Any] = {}
    for name, (model, description) in table.items():
        data = {"$ref": _REF.format(model=model.__name__)} if model else {"type": "string"}
        events[name] = {"description": description, "data": data}
    return events


def _example_of(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    # An optional body is `anyOf: [{$ref}, {type: null}]`.
    refs = [schema, *schema.get("anyOf", [])]
    ref = next((item["$ref"] for item in refs if "$ref" in item), "")
    name = ref.rsplit("/", 1)[-1]
    if name in _REQUEST_EXAMPLES:
        return _REQUEST_EXAMPLES[name]
    target = components.get(name, schema)
    examples = target.get("examples")
    return examples[0] if examples else None


def refine(document: dict[str, Any]) -> dict[str, Any]:
    components: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    components.update(_event_components())
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            if path in _ANTHROPIC_ERROR_PATHS:
                # Anthropic answers an invalid request with a 400, never a 422.
                operation.get("responses", {}).pop("422", None)
            for status, response in operation.get("responses", {}).items():
                if not status.isdigit():
                    continue
                code = int(status)
                if code >= 400 and path in _ANTHROPIC_ERROR_PATHS:
                    response["content"] = {
                        "application/json": {
                            "schema": _ANTHROPIC_ERROR,
                            "example": anthropic_error_example(code),
                        }
                    }
                elif code >= 400:
                    response["content"] = {
                        "application/json": {"schema": _ERROR, "example": error_example(code)}
                    }
                elif "text/event-stream" in response.get("content", {}) and path in _STREAMS:
                    table, example = _STREAMS[path]
                    response["content"]["text/event-stream"] = {
                        "schema": {"type": "string", "format": "event-stream"},
                        "x-sse-events": _sse_events(table),
                        "example": example,
                    }
                elif (method, path) in _RESPONSE_EXAMPLES:
                    for media in response.get("content", {}).values():
                        media.setdefault("example", _RESPONSE_EXAMPLES[(method, path)])
            body = operation.get("requestBody", {}).get("content", {})
            for media in body.values():
                if "example" not in media:
                    example = _example_of(media.get("schema", {}), components)
                    if example is not None:
                        media["example"] = example
    _drop_unreferenced(document, ("HTTPValidationError", "ValidationError"))
    return document


def _drop_unreferenced(document: dict[str, Any], names: tuple[str, ...]) -> None:
    schemas = document["components"]["schemas"]
    for name in names:
        if name in schemas and _REF.format(model=name) not in repr(
            {k: v for k, v in document.items() if k != "components"}
        ) + repr({k: v for k, v in schemas.items() if k not in names}):
            del schemas[name]


def install(app: FastAPI) -> None:
    """Serve the refined document at `/openapi.json` (and to `/docs`)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = refine(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
