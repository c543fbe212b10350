"""The OpenAI chat-completions wire format of the internal event stream.

A stream is a series of ``chat.completion.chunk`` objects as ``data:`` lines: the assistant
role first, one chunk per text delta, a chunk with the finish reason, with
``stream_options.include_usage`` a chunk with the usage and no choices, then ``data: [DONE]``.
No ``id:``, ``event:`` or ``retry:`` fields: the openai SDK parses every SSE event that has any
field as JSON, so only ``data:`` lines and comments (``: ping``) are safe to send.

A failed, cancelled or interrupted generation ends with ``data: {"error": {...}}`` instead of a
finish reason: the SDK raises ``APIError`` on such a chunk, so partial text is never mistaken
for a complete answer.

This is the gateway's hot path: the JSON around a delta is the same for every chunk of a
stream, so it is built once and each delta's JSON string is spliced in. A delta with nothing
to escape (most of them) is spliced in as its UTF-8 bytes, which is what orjson would write:
orjson's own output buffer makes it costly for the short strings a delta is, when many are
kept until one send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from streamforge.streaming.events import EventType, StreamEvent
from streamforge.streaming.sse import PING

DONE_LINE = b"data: [DONE]\n\n"

_MESSAGE = EventType.MESSAGE
# The characters JSON escapes; any other text is written as its UTF-8 bytes, as orjson does.
_ESCAPED = re.compile(r'[\x00-\x1f"\\]').search
_ERROR = EventType.ERROR
_DONE = EventType.DONE
_SOURCES = EventType.SOURCES


@dataclass(frozen=True, slots=True)
class Conclusion:
    """How a generation ended, in OpenAI's terms: a finish reason, or an error."""

    finish_reason: Literal["stop", "length"] | None
    error: dict[str, Any] | None
    usage: dict[str, int]


def conclude(
    done: dict[str, Any], error: dict[str, Any] | None, deltas: int, limit: int | None
) -> Conclusion:
    usage: dict[str, int] = done.get("usage") or {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }
    reason = done.get("finish_reason")
    if reason == "stop":
        # Every delta carries at least one token, so this many deltas means the answer was cut
        # at the limit. (Usage cannot tell: when the provider reports none it is an estimate.)
        cut = limit is not None and deltas >= limit
        return Conclusion("length" if cut else "stop", None, usage)
    if error is None:
        error = {
            "code": str(reason or "interrupted"),
            "message": f"generation {reason or 'interrupted'} before it finished",
        }
    return Conclusion(None, error, usage)


def error_chunk(error: dict[str, Any]) -> bytes:
    body = {
        "error": {
            "message": error.get("message") or "generation failed",
            "type": "server_error",
            "param": None,
            "code": error.get("code"),
        }
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


class OpenAIChunkEncoder:
    """Encodes one stream's events as ``chat.completion.chunk`` objects."""

    __slots__ = (
        "_close",
        "_close_text",
        "_error",
        "_head",
        "_open",
        "_open_text",
        "_usage_null",
        "deltas",
        "include_usage",
        "limit",
    )

    def __init__(
        self,
        completion_id: str,
        model: str,
        created: int,
        *,
        include_usage: bool = False,
        limit: int | None = None,
    ) -> None:
        self.include_usage = include_usage
        self.limit = limit
        self.deltas = 0
        self._error: dict[str, Any] | None = None
        self._head = (
            b'data: {"id":%b,"object":"chat.completion.chunk","created":%d,"model":%b,'
            % (
                orjson.dumps(completion_id),
                created,
                orjson.dumps(model),
            )
            + b'"system_fingerprint":null,"choices":'
        )
        # OpenAI sends "usage": null on every chunk but the last when usage was asked for.
        self._usage_null = b',"usage":null' if include_usage else b""
        self._open = self._head + b'[{"index":0,"delta":{"content":'
        self._close = b'},"logprobs":null,"finish_reason":null}]' + self._usage_null + b"}\n\n"
        # The same around a delta's text written without its quotes.
        self._open_text = self._open + b'"'
        self._close_text = b'"' + self._close

    def head(self) -> bytes:
        return (
            self._head
            + b'[{"index":0,"delta":{"role":"assistant","content":""},'
            + b'"logprobs":null,"finish_reason":null}]'
            + self._usage_null
            + b"}\n\n"
        )

    def encode(self, events: list[StreamEvent]) -> bytes:
        parts: list[bytes] = []
        append = parts.append
        opening, closing, dumps = self._open_text, self._close_text, orjson.dumps
        escaped = _ESCAPED
        for event in events:
            kind = event.type
            if kind is _MESSAGE:
                text = event.data
                if type(text) is str and escaped(text) is None:
                    try:
                        # Exactly orjson's output, without the quotes.
                        encoded = text.encode()
                    except UnicodeEncodeError:  # a lone surrogate: orjson raises for it
                        encoded = dumps(text)[1:-1]
                else:
                    encoded = dumps(text)
                    if encoded[:1] != b'"':  # not a string: write the value as it is
                        append(self._open)
                        append(encoded)
                        append(self._close)
                        self.deltas += 1
                        continue
                    encoded = encoded[1:-1]
                append(opening)
                append(encoded)
                append(closing)
                self.deltas += 1
            elif kind is _ERROR:
                self._error = event.data
            elif kind is _DONE:
                append(self._end(event.data))
            elif kind is _SOURCES:
                # StreamForge's citations, on a chunk with no choices (as OpenAI's usage chunk).
                append(
                    b'%b[],"sources":%b%b}\n\n'
                    % (self._head, dumps(event.data["sources"]), self._usage_null)
                )
        return b"".join(parts)

    def _end(self, done: dict[str, Any]) -> bytes:
        conclusion = conclude(done, self._error, self.deltas, self.limit)
        if conclusion.error is not None:
            return error_chunk(conclusion.error)
        finish = b'%b[{"index":0,"delta":{},"logprobs":null,"finish_reason":"%b"}]%b}\n\n' % (
            self._head,
            (conclusion.finish_reason or "stop").encode("ascii"),
            self._usage_null,
        )
        if not self.include_usage:
            return finish
        return finish + b'%b[],"usage":%b}\n\n' % (self._head, orjson.dumps(conclusion.usage))

    def tail(self) -> bytes:
        return DONE_LINE

    def ping(self) -> bytes:
        return PING

    def interrupt(self, error: dict[str, Any]) -> bytes:
        return error_chunk(error) + DONE_LINE


@dataclass(frozen=True, slots=True)
class Collected:
    text: str
    conclusion: Conclusion
    sources: list[dict[str, Any]] | None = None


def collect(events: list[StreamEvent], limit: int | None) -> Collected:
    """The whole answer of a finished stream, for a non-streaming response."""
    texts: list[str] = []
    error: dict[str, Any] | None = None
    done: dict[str, Any] = {}
    sources: list[dict[str, Any]] | None = None
    for event in events:
        if event.type is _MESSAGE:
            texts.append(event.data)
        elif event.type is _SOURCES:
            sources = event.data["sources"]
        elif event.type is _ERROR:
            error = event.data
        elif event.type is _DONE:
            done = event.data
    return Collected("".join(texts), conclude(done, error, len(texts), limit), sources)
