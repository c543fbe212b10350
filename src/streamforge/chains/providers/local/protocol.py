"""The model process's wire protocol: one JSON object a line over a Unix socket.

A client opens one connection per request and sends one request line:

* ``{"op": "generate", "messages": [...], "max_tokens": N, "temperature": T, "stop": [...]}``:
  the process answers ``{"text": "..."}`` lines as tokens are decoded, then one
  ``{"result": {...}}`` (token counts, finish reason, what the engine did) or one
  ``{"error": {...}}`` (a ``ProviderError``'s fields). The client may send
  ``{"op": "cancel"}`` at any time; closing the connection cancels too. Either way decoding
  stops within one token and the result says ``"finish_reason": "cancelled"``.
* ``{"op": "info"}``: ``{"info": {...}}``, what the process runs (pid, model, llama.cpp's
  build and CPU features) and how busy it is.

On start-up the process writes one line to its standard output: ``{"ready": {...}}`` (the same
info) once the model is loaded and has decoded a few tokens, or ``{"failed": "reason"}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson

from streamforge.chains.providers.base import ProviderError
from streamforge.chains.providers.local.types import GenerationResult, GenerationStats, Message

# Lines can carry a whole conversation.
LINE_LIMIT = 16 * 1024 * 1024


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message) + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    message = orjson.loads(line)
    if not isinstance(message, dict):
        raise ValueError("a protocol line must be a JSON object")
    return message


def generate_request(
    messages: Sequence[Message], max_tokens: int, temperature: float, stop: Sequence[str]
) -> dict[str, Any]:
    return {
        "op": "generate",
        "messages": list(messages),
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stop": list(stop),
    }


def result_message(result: GenerationResult) -> dict[str, Any]:
    stats = dataclasses.asdict(result.stats) if result.stats is not None else None
    return {
        "result": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "finish_reason": result.finish_reason,
            "stats": stats,
        }
    }


def parse_result(body: dict[str, Any]) -> GenerationResult:
    stats = body.get("stats")
    return GenerationResult(
        prompt_tokens=int(body["prompt_tokens"]),
        completion_tokens=int(body["completion_tokens"]),
        finish_reason=str(body["finish_reason"]),
        stats=GenerationStats(**stats) if isinstance(stats, dict) else None,
    )


def error_message(error: ProviderError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "code": error.code,
            "retryable": error.retryable,
            "status": error.status,
        }
    }


def parse_error(body: dict[str, Any]) -> ProviderError:
    return ProviderError(
        str(body.get("message") or "the local model failed"),
        code=str(body.get("code") or "provider_error"),
        retryable=bool(body.get("retryable")),
        status=body.get("status") if isinstance(body.get("status"), int) else None,
    )
