"""Server-Sent Events, parsed by the WHATWG rules, for ``streamforge chat``.

Lines are split on CR, LF and CRLF only, on bytes: httpx's iter_lines() splits like
str.splitlines(), also on U+2028, U+0085, form feeds and the like, which would break a text
delta that contains one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class Event:
    event: str
    data: str


def event_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        start = 0
        while True:
            lf, cr = buffer.find(b"\n", start), buffer.find(b"\r", start)
            if cr == -1 or (lf != -1 and lf < cr):
                if lf == -1:
                    break
                end, after = lf, lf + 1
            elif cr + 1 == len(buffer):
                break  # a CR at the end of what has arrived: it may be a CRLF's first half
            else:
                end = cr
                after = cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
            yield buffer[start:end].decode("utf-8", errors="replace")
            start = after
        buffer = buffer[start:]
    if buffer:
        yield buffer.rstrip(b"\r").decode("utf-8", errors="replace")


def parse_events(chunks: Iterable[bytes]) -> Iterator[Event]:
    data: list[str] = []
    name = ""
    for line in event_lines(chunks):
        if not line:
            if data:
                yield Event(name or "message", "\n".join(data))
            data, name = [], ""
            continue
        if line.startswith(":"):
            continue  # a comment: ": ping"
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    # An event without its closing blank line is incomplete: it is not dispatched.
