"""The internal event stream: one model that every wire encoder reads.

A stream is a sequence of events with strictly increasing integer ids starting at 1. Text
deltas are ``message`` events carrying a string; the other types carry a JSON object. The
first event of a chat stream is ``session`` and the last one is ``done``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

# The largest event id: a signed 64-bit integer, which every log can store (a Redis entry id
# takes up to 2**64 - 1). A Last-Event-ID above it names no event of any stream.
MAX_EVENT_ID = 2**63 - 1


class EventType(enum.StrEnum):
    MESSAGE = "message"
    SESSION = "session"
    SOURCES = "sources"
    USAGE = "usage"
    ERROR = "error"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class StreamEvent:
    id: int
    type: EventType
    data: Any  # str for MESSAGE, a JSON-serialisable dict otherwise

    @property
    def is_terminal(self) -> bool:
        return self.type is EventType.DONE


class LineBreakNormaliser:
    """Turns ``\\r\\n`` and lone ``\\r`` into ``\\n`` across delta boundaries.

    The SSE format treats CR, LF and CRLF alike as line ends, so a carriage return cannot
    survive the wire. Normalising before the text is logged and stored keeps what the client
    reassembles, what a resumed client reads and what the database holds identical.
    """

    __slots__ = ("_pending_cr",)

    def __init__(self) -> None:
        self._pending_cr = False

    def feed(self, text: str) -> str:
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = text.endswith("\r")
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text
