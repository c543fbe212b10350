"""Anthropic's Messages API wire format of the internal event stream.

A stream is a series of named SSE events, each with a JSON ``data:`` line that repeats the
name as ``type``: ``message_start`` (the message, empty), ``content_block_start`` (one text
block), a ``content_block_delta`` with a ``text_delta`` per delta, ``content_block_stop``,
``message_delta`` (the stop reason and the usage), ``message_stop``. Heartbeats are ``ping``
events, as Anthropic sends them. A generation that fails, is cancelled or interrupted ends with
an ``error`` event in Anthropic's error shape instead of ``message_delta``: the ``anthropic``
SDK raises on it, so partial text is never taken for a whole answer.

Anthropic names no event ids and has no resume: neither is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from streamforge.streaming.events import EventType, StreamEvent
from streamforge.streaming.openai import Conclusion, conclude

_MESSAGE = EventType.MESSAGE
_ERROR = EventType.ERROR
_DONE = EventType.DONE

StopReason = Literal["end_turn", "max_tokens", "stop_sequence"]

# Anthropic's error types by HTTP status; what it has no status for is an ``api_error``.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# A stream's error codes (``errors.py``, ``services/generation.py``) as Anthropic's types.
_STREAM_ERROR_TYPES = {
    "provider_busy": "overloaded_error",
    "provider_rate_limited": "rate_limit_error",
    "provider_timeout": "timeout_error",
    "rate_limited": "rate_limit_error",
    "unavailable": "overloaded_error",
    "event_log_unavailable": "overloaded_error",
    "shutdown": "overloaded_error",
}


def error_type(status: int | None = None, code: str | None = None) -> str:
    """Anthropic's name for an error: from StreamForge's code when it has one, else from the
    HTTP status."""
    if code is not None and code in _STREAM_ERROR_TYPES:
        return _STREAM_ERROR_TYPES[code]
    if status is not None:
        return ERROR_TYPES.get(status, "api_error")
    return "api_error"


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def stream_error_body(error: dict[str, Any]) -> dict[str, Any]:
    """An ``error`` event's (or a failed non-streamed answer's) body for a stream's error."""
    code = str(error.get("code") or "provider_error")
    return error_body(error_type(code=code), str(error.get("message") or "generation failed"))


def _event(name: bytes, data: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


PING = _event(b"ping", b'{"type":"ping"}')


def stop_reason(conclusion: Conclusion, done: dict[str, Any]) -> StopReason:
    if done.get("stop_sequence") is not None:
        return "stop_sequence"
    return "max_tokens" if conclusion.finish_reason == "length" else "end_turn"


def usage_of(conclusion: Conclusion) -> dict[str, int]:
    return {
        "input_tokens": int(conclusion.usage.get("prompt_tokens", 0)),
        "output_tokens": int(conclusion.usage.get("completion_tokens", 0)),
    }


class AnthropicEventEncoder:
    """Encodes one stream's events as the Messages API's streamed events."""

    __slots__ = ("_error", "deltas", "limit", "message_id", "model")

    def __init__(self, message_id: str, model: str, *, limit: int | None = None) -> None:
        self.message_id = message_id
        self.model = model
        self.limit = limit
        self.deltas = 0
        self._error: dict[str, Any] | None = None

    def head(self) -> bytes:
        message = {
            "type": "message_start",
            "message": {
                "id": self.message_id,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": self.model,
                "stop_reason": None,
                "stop_sequence": None,
                # The prompt is counted once generation has run: message_delta carries it.
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        }
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        return _event(b"message_start", orjson.dumps(message)) + _event(
            b"content_block_start", orjson.dumps(block)
        )

    def encode(self, events: list[StreamEvent]) -> bytes:
        parts: list[bytes] = []
        append = parts.append
        dumps = orjson.dumps
        for event in events:
            kind = event.type
            if kind is _MESSAGE:
                append(
                    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                    b'"delta":{"type":"text_delta","text":%b}}\n\n' % dumps(event.data)
                )
                self.deltas += 1
            elif kind is _ERROR:
                self._error = event.data
            elif kind is _DONE:
                append(self._end(event.data))
        return b"".join(parts)

    def _end(self, done: dict[str, Any]) -> bytes:
        conclusion = conclude(done, self._error, self.deltas, self.limit)
        if conclusion.error is not None:
            return self.interrupt(conclusion.error)
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": stop_reason(conclusion, done),
                "stop_sequence": done.get("stop_sequence"),
            },
            "usage": usage_of(conclusion),
        }
        return (
            _event(b"content_block_stop", b'{"type":"content_block_stop","index":0}')
            + _event(b"message_delta", orjson.dumps(delta))
            + _event(b"message_stop", b'{"type":"message_stop"}')
        )

    def tail(self) -> bytes:
        return b""

    def ping(self) -> bytes:
        return PING

    def interrupt(self, error: dict[str, Any]) -> bytes:
        return _event(b"error", orjson.dumps(stream_error_body(error)))


@dataclass(frozen=True, slots=True)
class Answer:
    """A finished stream as one Message's parts."""

    text: str
    conclusion: Conclusion
    stop_reason: StopReason
    stop_sequence: str | None


def collect_answer(events: list[StreamEvent], limit: int | None) -> Answer:
    """The whole answer of a finished stream, for a non-streamed response."""
    texts: list[str] = []
    error: dict[str, Any] | None = None
    done: dict[str, Any] = {}
    for event in events:
        if event.type is _MESSAGE:
            texts.append(event.data)
        elif event.type is _ERROR:
            error = event.data
        elif event.type is _DONE:
            done = event.data
    conclusion = conclude(done, error, len(texts), limit)
    return Answer(
        "".join(texts), conclusion, stop_reason(conclusion, done), done.get("stop_sequence")
    )
