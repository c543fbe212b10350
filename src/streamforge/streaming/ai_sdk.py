"""The AI SDK's UI message stream (``x-vercel-ai-ui-message-stream: v1``) of the internal
event stream: what ``useChat`` and the AI SDK's ``DefaultChatTransport`` read.

Each event becomes one or more typed JSON parts, each a ``data:`` line of its own SSE event
that keeps the event's ``id:`` (so a reconnect with ``Last-Event-ID`` works as on ``/chat``):

- ``session`` → ``start`` (``messageId`` is the stored assistant message's id,
  ``messageMetadata`` StreamForge's ids)
- ``sources`` → one ``source-document`` per retrieved passage (before any text)
- a text delta → ``text-start`` before the first one, then ``text-delta``
- ``error`` → ``error`` (``errorText``)
- ``usage`` → ``message-metadata`` (``{"usage": ...}``)
- ``done`` → ``abort`` when the reply was cancelled, then ``finish`` with the finish reason
  and the reply's status as metadata

(``text-end`` comes before the first of these that follows the text)

and the stream ends with ``data: [DONE]``. Heartbeats are ``: ping`` comments, which the AI
SDK's parser skips.
"""

from __future__ import annotations

from typing import Any

import orjson

from streamforge.streaming.events import EventType, StreamEvent
from streamforge.streaming.sse import PING, retry_field

HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
DONE_LINE = b"data: [DONE]\n\n"

# StreamForge's finish reasons in the AI SDK's terms (its ``FinishReason``).
FINISH_REASONS = {
    "stop": "stop",
    "error": "error",
    "interrupted": "interrupted",
    "cancelled": "other",
}

# The ids of StreamForge that the ``start`` part carries as message metadata.
_IDS = ("session_id", "stream_id", "user_message_id", "assistant_message_id", "provider", "model")


def source_document(citation: dict[str, Any]) -> dict[str, Any]:
    """One retrieved passage as a ``source-document`` part; the citation itself (document
    and chunk ids, page, score, snippet) rides along as provider metadata."""
    name = str(citation.get("document_name") or citation.get("document_id") or "")
    return {
        "type": "source-document",
        "sourceId": f"{citation.get('document_id')}#{citation.get('chunk_id')}",
        "mediaType": "text/plain",
        "title": name,
        "filename": name,
        "providerMetadata": {"streamforge": citation},
    }


class AiSdkEncoder:
    """Encodes one stream's events as UI message stream parts."""

    __slots__ = ("_text_open", "retry_ms", "text_id")

    def __init__(self, stream_id: str, retry_ms: int) -> None:
        self.retry_ms = retry_ms
        self.text_id = f"text-{stream_id}"
        self._text_open = False

    def head(self) -> bytes:
        return retry_field(self.retry_ms)

    def _parts(self, event: StreamEvent) -> list[dict[str, Any]]:
        kind, data = event.type, event.data
        if kind is EventType.MESSAGE:
            parts: list[dict[str, Any]] = []
            if not self._text_open:
                self._text_open = True
                parts.append({"type": "text-start", "id": self.text_id})
            parts.append({"type": "text-delta", "id": self.text_id, "delta": data})
            return parts
        # Whatever follows the text (an error, the usage, the end) ends the text part first.
        closing = self._close_text()
        if kind is EventType.SESSION:
            metadata = {key: data[key] for key in _IDS if key in data}
            return [
                *closing,
                {
                    "type": "start",
                    "messageId": data.get("assistant_message_id"),
                    "messageMetadata": metadata,
                },
            ]
        if kind is EventType.SOURCES:
            return [*closing, *(source_document(c) for c in data.get("sources") or ())]
        if kind is EventType.ERROR:
            message = data.get("message") or "generation failed"
            return [*closing, {"type": "error", "errorText": str(message)}]
        if kind is EventType.USAGE:
            return [*closing, {"type": "message-metadata", "messageMetadata": {"usage": data}}]
        if kind is EventType.DONE:
            return [*closing, *self._end(data)]
        return closing

    def _close_text(self) -> list[dict[str, Any]]:
        if not self._text_open:
            return []
        self._text_open = False
        return [{"type": "text-end", "id": self.text_id}]

    def _end(self, done: dict[str, Any]) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        reason = str(done.get("finish_reason") or "interrupted")
        if reason == "cancelled":
            parts.append({"type": "abort", "reason": "cancelled"})
        metadata: dict[str, Any] = {"status": done.get("status"), "finish_reason": reason}
        if done.get("usage") is not None:
            metadata["usage"] = done["usage"]
        parts.append(
            {
                "type": "finish",
                "finishReason": FINISH_REASONS.get(reason, "other"),
                "messageMetadata": metadata,
            }
        )
        return parts

    def encode(self, events: list[StreamEvent]) -> bytes:
        out: list[bytes] = []
        for event in events:
            prefix = b"id: %d\ndata: " % event.id
            for part in self._parts(event):
                out.append(prefix + orjson.dumps(part) + b"\n\n")
        return b"".join(out)

    def tail(self) -> bytes:
        return DONE_LINE

    def ping(self) -> bytes:
        return PING

    def interrupt(self, error: dict[str, object]) -> bytes:
        # No id: a reconnect asks again from the last event really received.
        message = str(error.get("message") or "the stream was interrupted")
        return b"data: " + orjson.dumps({"type": "error", "errorText": message}) + b"\n\n"
