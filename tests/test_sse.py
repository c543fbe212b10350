"""The SSE encoder against a standard parser: what goes in comes out."""

from __future__ import annotations

import re

from httpx_sse._decoders import SSEDecoder
from hypothesis import given
from hypothesis import strategies as st

from streamforge.streaming import sse
from streamforge.streaming.events import EventType, LineBreakNormaliser, StreamEvent


def decode(raw: bytes) -> list[tuple[str, str, str]]:
    decoder = SSEDecoder()
    events = []
    # The SSE standard ends lines at CR, LF or CRLF, and nowhere else (not at U+2028).
    for line in re.split(r"\r\n|\r|\n", raw.decode("utf-8")):
        event = decoder.decode(line)
        if event is not None and event.data:
            events.append((event.id, event.event, event.data))
    return events


text_deltas = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    min_size=1,
).filter(lambda text: any(ch not in "\r" for ch in text))


@given(st.lists(text_deltas, min_size=1, max_size=20))
def test_normalised_deltas_round_trip_byte_for_byte(deltas: list[str]) -> None:
    normaliser = LineBreakNormaliser()
    normalised = [normaliser.feed(delta) for delta in deltas]
    events = [
        StreamEvent(i + 1, EventType.MESSAGE, text) for i, text in enumerate(normalised) if text
    ]
    decoded = decode(sse.encode_many(events))
    assert [data for _, _, data in decoded] == [event.data for event in events]
    assert [int(event_id) for event_id, _, _ in decoded] == [event.id for event in events]
    joined = "".join(deltas)
    # Every line break survives as "\n"; nothing else changes.
    assert "".join(normalised) == joined.replace("\r\n", "\n").replace("\r", "\n")


def test_crlf_split_across_deltas_is_one_line_break() -> None:
    normaliser = LineBreakNormaliser()
    assert [normaliser.feed(part) for part in ["a\r", "\nb", "\r", "\r\n", "c"]] == [
        "a\n",
        "b",
        "\n",
        "\n",
        "c",
    ]


def test_typed_events_are_json_with_their_name() -> None:
    raw = sse.encode(StreamEvent(7, EventType.DONE, {"finish_reason": "stop", "text": "a\nb"}))
    assert raw == b'id: 7\nevent: done\ndata: {"finish_reason":"stop","text":"a\\nb"}\n\n'


def test_message_lines_keep_leading_spaces_and_trailing_newlines() -> None:
    raw = sse.encode(StreamEvent(3, EventType.MESSAGE, " lead\n\ntrail\n"))
    assert raw == b"id: 3\ndata:  lead\ndata: \ndata: trail\ndata: \n\n"
    assert decode(raw) == [("3", "message", " lead\n\ntrail\n")]


async def test_event_log_expires_oldest_finished_streams_first() -> None:
    from streamforge.streaming.log import InProcessEventLog

    log = InProcessEventLog(retention=600, max_finished=2)
    for index in range(4):
        buffer = log.create(f"s{index}")
        buffer.append(EventType.DONE, {})
    running = log.create("running")
    # Two finished streams are kept (the newest), and a running one is never dropped.
    assert [key for key in ("s0", "s1", "s2", "s3") if log.get(key)] == ["s2", "s3"]
    assert log.get("running") is running
    expired = InProcessEventLog(retention=0, max_finished=100)
    expired.create("a").append(EventType.DONE, {})
    expired.create("b")
    assert expired.get("a") is None and expired.get("b") is not None
