"""A loopback server speaking Ollama's native API (NDJSON streaming).

Give the client ``server.base_url`` (``http://127.0.0.1:PORT``) as ``host`` / ``base_url``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from tests.vendors._core import (
    ApiError,
    Behaviour,
    ChatCall,
    Exchange,
    Frame,
    Handler,
    JsonBody,
    Plan,
    VendorServer,
    dumps,
    fake_embedding,
    int_or_none,
    require_object,
)

VERSION = "0.12.6"
EMBEDDING_DIMENSIONS = 768

_MESSAGES: dict[int, str] = {
    400: "invalid request",
    401: "unauthorized",
    404: "model not found",
    429: "too many requests, please try again later",
    500: "an error was encountered while running the model",
    503: "server busy, please try again.  maximum pending requests exceeded",
}


def _now() -> str:
    # Ollama reports RFC 3339 with sub-second digits, e.g. 2025-01-01T12:00:00.123456Z.
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _tagged(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _details() -> JsonBody:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    }


class OllamaServer(VendorServer):
    """``POST /api/chat`` (NDJSON or JSON), ``GET /api/tags``, ``GET /api/version``,
    ``POST /api/show``, ``GET /api/ps``, ``GET /``."""

    vendor: ClassVar[str] = "ollama"
    chat_path: ClassVar[str] = "/api/chat"
    base_path: ClassVar[str] = ""
    stream_content_type: ClassVar[str] = "application/x-ndjson"
    json_content_type: ClassVar[str] = "application/json; charset=utf-8"
    default_models: ClassVar[tuple[str, ...]] = ("llama3.2:latest", "qwen3:0.6b")
    invalid_json_message: ClassVar[str] = "invalid character in request body"

    def extra_routes(self) -> Mapping[tuple[str, str], Handler]:
        return {
            ("GET", "/api/tags"): self._tags,
            ("POST", "/api/embed"): self._embed,
            ("GET", "/api/version"): self._version,
            ("POST", "/api/show"): self._show,
            ("GET", "/api/ps"): self._ps,
            ("GET", "/"): self._root,
            ("HEAD", "/"): self._root,
        }

    # -- embeddings ----------------------------------------------------------------------------

    async def _embed(self, exchange: Exchange) -> None:
        body = exchange.record.body if isinstance(exchange.record.body, dict) else {}
        name = body.get("model")
        if not isinstance(name, str) or self._known(name) is None:
            await self.send_error(exchange, ApiError(404, f"model '{name}' not found"))
            return
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list):
            await self.send_error(exchange, ApiError(400, "invalid input type"))
            return
        await self.send_json(
            exchange,
            {
                "model": _tagged(name),
                "embeddings": [fake_embedding(str(text), EMBEDDING_DIMENSIONS) for text in texts],
                "total_duration": 14143917,
                "load_duration": 1019500,
                "prompt_eval_count": sum(len(str(text).split()) for text in texts),
            },
        )

    # -- model listing -------------------------------------------------------------------------

    def _known(self, name: str) -> str | None:
        wanted = _tagged(name)
        return next((model for model in self.models if _tagged(model) == wanted), None)

    def _entry(self, name: str) -> JsonBody:
        name = _tagged(name)
        return {
            "name": name,
            "model": name,
            "modified_at": "2025-10-01T12:00:00.000000000Z",
            "size": 2019393189,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": _details(),
        }

    async def _tags(self, exchange: Exchange) -> None:
        await self.send_json(exchange, {"models": [self._entry(name) for name in self.models]})

    async def _version(self, exchange: Exchange) -> None:
        await self.send_json(exchange, {"version": VERSION})

    async def _ps(self, exchange: Exchange) -> None:
        await self.send_json(exchange, {"models": []})

    async def _root(self, exchange: Exchange) -> None:
        exchange.record.outcome = "served"
        await exchange.respond(200, b"Ollama is running", "text/plain; charset=utf-8", [])

    async def _show(self, exchange: Exchange) -> None:
        body = exchange.record.body if isinstance(exchange.record.body, dict) else {}
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            await self.send_error(exchange, ApiError(400, "model is required"))
            return
        if self._known(name) is None:
            await self.send_error(exchange, ApiError(404, f"model '{name}' not found"))
            return
        await self.send_json(
            exchange,
            {
                "license": "",
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {_tagged(name)}\n',
                "parameters": 'stop                           "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": _details(),
                "model_info": {
                    "general.architecture": "llama",
                    "general.parameter_count": 3212749888,
                    "llama.context_length": 131072,
                },
                "capabilities": ["completion", "tools"],
                "modified_at": "2025-10-01T12:00:00.000000000Z",
            },
        )

    # -- chat ----------------------------------------------------------------------------------

    def finish_value(self, generic: Literal["stop", "length"]) -> str:
        return generic

    def parse_chat(self, body: Any) -> ChatCall:
        body = require_object(body, "invalid request body")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "model is required")
        options = body.get("options")
        options = options if isinstance(options, dict) else {}
        messages = body.get("messages")
        return ChatCall(
            model=model,
            # Unlike the hosted APIs, Ollama streams unless told not to.
            stream=body.get("stream", True) is not False,
            max_tokens=int_or_none(options.get("num_predict")),
            # A chat without messages only loads the model.
            flags=(("load_only", not messages),),
        )

    def _plan(self, call: ChatCall, behaviour: Behaviour) -> Plan:
        plan = super()._plan(call, behaviour)
        if call.flag("load_only"):
            plan.tokens = ()
            plan.finish = "load"
            plan.completion_tokens = 0
        return plan

    def _final(self, plan: Plan, content: str, started: float) -> JsonBody:
        if plan.finish == "load":
            return {
                "model": plan.model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": ""},
                "done_reason": "load",
                "done": True,
            }
        total = max(int((time.perf_counter() - started) * 1e9), 1_000)
        return {
            "model": plan.model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": content},
            "done_reason": plan.finish,
            "done": True,
            "total_duration": total + 2_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": plan.prompt_tokens,
            "prompt_eval_duration": 1_000_000,
            "eval_count": plan.completion_tokens,
            "eval_duration": total,
        }

    def stream_frames(self, plan: Plan) -> Iterator[Frame]:
        started = time.perf_counter()
        for token in plan.tokens:
            yield (
                "token",
                dumps(
                    {
                        "model": plan.model,
                        "created_at": _now(),
                        "message": {"role": "assistant", "content": token},
                        "done": False,
                    }
                )
                + b"\n",
            )
        yield "tail", dumps(self._final(plan, "", started)) + b"\n"

    def stream_error_frame(self, plan: Plan, status: int) -> bytes:
        return dumps(self.error_body(status, None)) + b"\n"

    def completion_body(self, plan: Plan) -> JsonBody:
        return self._final(plan, plan.text, time.perf_counter())

    # -- errors --------------------------------------------------------------------------------

    def error_body(self, status: int, message: str | None, **extra: Any) -> JsonBody:
        return {"error": message or _MESSAGES.get(status, f"HTTP {status}")}

    async def not_found(self, exchange: Exchange) -> None:
        # Ollama's router answers unknown paths in plain text, like Go's net/http.
        exchange.record.outcome = "invalid"
        await exchange.respond(404, b"404 page not found", "text/plain", [])
