"""Every wire format, read back by a client parser that nobody here wrote.

The test enumerates ``streaming.formats.FORMATS`` (a format added there is picked up here and
fails until it has a reader below) and replays one recorded stream through each encoder:
session, sources, text deltas with every kind of line break and multi-byte characters (emoji,
CJK, combining marks), an error, usage and done, the text deltas normalised as generation
normalises them before logging. The bytes are fed to the format's own client in small pieces
(splitting characters and lines as a network may):

- plain SSE: the ``httpx-sse`` client and the page's ``SSEParser`` (``ui/sse.js``, by Node);
- OpenAI: the ``openai`` SDK's ``chat.completions.create(stream=True)``;
- Anthropic: the ``anthropic`` SDK's ``messages.stream``;
- AI SDK: the ``ai`` package's ``parseJsonEventStream`` and ``readUIMessageStream`` (Node,
  ``tests/js/ui_stream_parse.mjs``), with the ids from ``eventsource-parser``, its SSE parser.

The SDKs reach the bytes through their HTTP package's in-process transport (httpx, httpx2):
the response they parse is exactly what the encoder wrote.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import httpx2
import httpx_sse
import openai
import pytest

from streamforge.streaming.events import EventType, LineBreakNormaliser, StreamEvent
from streamforge.streaming.formats import FORMATS, StreamContext
from tests.test_ai_sdk import JS, node  # noqa: F401  (the fixture that runs npm ci)

PIECE = 5  # bytes per read: splits emoji, CJK and the lines between reads

# What the provider sent, split where a network may split it: a CRLF across two deltas, a
# lone CR, a CRLF inside a delta, emoji (one with a zero-width joiner), CJK, combining marks,
# and characters JSON escapes.
PROVIDER_DELTAS = [
    "First line\n",
    "second line\r",
    "\nthird line\r\n",
    "a lone\rcarriage return",
    " 🦀 and 👩‍🚀, ",
    "中文字符と日本語",
    " e\u0301 n\u0303 a\u0308\u0301",
    ' "quoted" \\ back\tslash\n',
    "end 😀.",
]
CITATIONS = [
    {
        "index": 1,
        "document_id": "doc-1",
        "document_name": "bees.md",
        "collection_id": "col-1",
        "chunk_id": "chunk-7",
        "score": 0.91,
        "start": 0,
        "end": 120,
        "page": None,
        "snippet": "Bees dance to 🐝 tell the hive",
    },
    {
        "index": 2,
        "document_id": "doc-2",
        "document_name": "路由.pdf",
        "collection_id": "col-1",
        "chunk_id": "chunk-2",
        "score": 0.5,
        "start": 10,
        "end": 90,
        "page": 3,
        "snippet": "A router\nforwards",
    },
]
USAGE = {"prompt_tokens": 21, "completion_tokens": 34, "total_tokens": 55}
ERROR = {"code": "provider_error", "message": "upstream closed: 接続が切れた", "retryable": True}
MODEL = "simulated/echo"


def _normalised(deltas: list[str]) -> list[str]:
    normaliser = LineBreakNormaliser()
    return [text for text in (normaliser.feed(delta) for delta in deltas) if text]


DELTAS = _normalised(PROVIDER_DELTAS)
TEXT = "".join(DELTAS)


def recording(ending: str) -> list[StreamEvent]:
    """The recorded stream: ``failed`` as logged when the provider fails after the text
    (error, usage, done), ``completed`` the same answer ending well."""
    kinds: list[tuple[EventType, Any]] = [
        (
            EventType.SESSION,
            {
                "session_id": "s-1",
                "stream_id": "st-1",
                "user_message_id": "m-1",
                "assistant_message_id": "m-2",
                "provider": "simulated",
                "model": MODEL,
            },
        ),
        (EventType.SOURCES, {"sources": CITATIONS}),
        *((EventType.MESSAGE, delta) for delta in DELTAS),
    ]
    failed = ending == "failed"
    if failed:
        kinds.append((EventType.ERROR, ERROR))
    kinds.append((EventType.USAGE, USAGE))
    kinds.append(
        (
            EventType.DONE,
            {
                "finish_reason": "error" if failed else "stop",
                "status": "failed" if failed else "completed",
                "provider": "simulated",
                "model": MODEL,
                "usage": USAGE,
                "timings": {"total_ms": 12.5, "ttft_ms": 1.25},
            },
        )
    )
    return [StreamEvent(index, kind, data) for index, (kind, data) in enumerate(kinds, start=1)]


def encode(name: str, events: list[StreamEvent], *, head: bool = True) -> bytes:
    """What ``EventStreamResponse`` sends: the head, every event, the tail once done."""
    encoder = FORMATS[name].build(
        StreamContext("st-1", model=MODEL, retry_ms=2500, include_usage=True, created=1700000000)
    )
    body = (encoder.head() if head else b"") + encoder.encode(events)
    if events and events[-1].is_terminal:
        body += encoder.tail()
    return body


def pieces(body: bytes) -> Iterator[bytes]:
    for offset in range(0, len(body), PIECE):
        yield body[offset : offset + PIECE]


@dataclass
class Reading:
    """What a client made of a stream, in common terms."""

    text: str
    documents: list[str] | None  # the sources' document names; None: the format has none
    sources_before_text: bool
    usage: dict[str, int] | None  # prompt and completion tokens
    error: str | None
    ids: list[int] | None  # the SSE ids as the client keeps them; None: the format has none


def _sse_stream(body: bytes) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream; charset=utf-8"}, content=pieces(body)
    )


def read_plain(body: bytes, node_bin: str) -> Reading:
    # httpx-sse dispatches the block that only sets ``retry:`` as an event with no data; the
    # WHATWG rules (and the page's parser) dispatch nothing for it.
    events = [
        event
        for event in httpx_sse.EventSource(_sse_stream(body)).iter_sse()
        if not (event.retry is not None and event.data == "" and event.event == "message")
    ]
    # The page's own parser must see exactly the same events.
    page = _run_node(node_bin, "sse_parse.mjs", body)["events"]
    assert [(e["type"], e["data"], e["id"]) for e in page] == [
        (e.event, e.data, e.id) for e in events
    ]
    text, documents, usage, error = "", None, None, None
    before = False
    for event in events:
        if event.event == "message":
            text += event.data
        elif event.event == "sources":
            documents = [s["document_name"] for s in event.json()["sources"]]
            before = text == ""
        elif event.event == "usage":
            usage = {k: event.json()[k] for k in ("prompt_tokens", "completion_tokens")}
        elif event.event == "error":
            error = event.json()["message"]
    return Reading(text, documents, before, usage, error, [int(e.id) for e in events])


def _sdk_client(factory: Callable[..., Any], http: Any, body: bytes) -> Any:
    """The SDK with its own HTTP package's in-process transport answering ``body``."""

    def answer(request: Any) -> Any:
        return http.Response(
            200,
            headers={"content-type": "text/event-stream; charset=utf-8"},
            content=pieces(body),
        )

    client = http.Client(transport=http.MockTransport(answer))
    return factory(
        api_key="k", base_url="http://streamforge.test/v1", http_client=client, max_retries=0
    )


def read_openai(body: bytes, node_bin: str) -> Reading:
    client = _sdk_client(openai.OpenAI, httpx, body)
    text, documents, usage, error = "", None, None, None
    before = False
    try:
        for chunk in client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        ):
            extra = chunk.model_extra or {}
            if "sources" in extra:
                documents = [s["document_name"] for s in extra["sources"]]
                before = text == ""
            for choice in chunk.choices:
                text += choice.delta.content or ""
            if chunk.usage is not None:
                usage = {
                    "prompt_tokens": chunk.usage.prompt_tokens,
                    "completion_tokens": chunk.usage.completion_tokens,
                }
    except openai.APIError as exc:
        error = exc.message
    return Reading(text, documents, before, usage, error, None)


def read_anthropic(body: bytes, node_bin: str) -> Reading:
    client = _sdk_client(anthropic.Anthropic, httpx2, body)
    text, usage, error = "", None, None
    try:
        with client.messages.stream(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            for delta in stream.text_stream:
                text += delta
            final = stream.get_final_message()
        assert final.stop_reason == "end_turn"
        assert [block.text for block in final.content if block.type == "text"] == [text]
        usage = {
            "prompt_tokens": final.usage.input_tokens,
            "completion_tokens": final.usage.output_tokens,
        }
    except anthropic.APIStatusError as exc:
        error = exc.body["error"]["message"] if isinstance(exc.body, dict) else exc.message
    return Reading(text, None, False, usage, error, None)


def read_ai_sdk(body: bytes, node_bin: str) -> Reading:
    out = _run_node(node_bin, "ui_stream_parse.mjs", body)
    assert out["invalid"] == [], out["invalid"]
    message = out["message"] or {"parts": [], "metadata": {}}
    parts = message["parts"]
    kinds = [part["type"] for part in parts]
    text = "".join(part["text"] for part in parts if part["type"] == "text")
    documents = [part["title"] for part in parts if part["type"] == "source-document"] or None
    before = "source-document" in kinds and (
        "text" not in kinds or kinds.index("source-document") < kinds.index("text")
    )
    usage_data = (message.get("metadata") or {}).get("usage")
    usage = (
        {k: usage_data[k] for k in ("prompt_tokens", "completion_tokens")} if usage_data else None
    )
    errors = out["errors"]
    assert len(errors) <= 1, errors
    events = out["events"]
    if events and events[-1]["data"] == "[DONE]":
        events = events[:-1]
    ids: list[int] = []
    for event in events:  # several parts of one event share its id
        if not ids or ids[-1] != int(event["id"]):
            ids.append(int(event["id"]))
    return Reading(text, documents, before, usage, errors[0] if errors else None, ids)


def _run_node(node_bin: str, script: str, body: bytes) -> dict[str, Any]:
    done = subprocess.run(
        [node_bin, str(JS / script), str(PIECE)],
        input=body,
        cwd=JS,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = json.loads(done.stdout)
    return result


READERS: dict[str, Callable[[bytes, str], Reading]] = {
    "sse": read_plain,
    "openai": read_openai,
    "anthropic": read_anthropic,
    "ai_sdk": read_ai_sdk,
}


@dataclass(frozen=True)
class Says:
    """What the format's own documentation says a client gets."""

    sources: bool  # citations are on the wire
    usage_when_failed: bool  # usage still arrives after an error


SAYS = {
    "sse": Says(sources=True, usage_when_failed=True),
    # The error chunk replaces the finish reason and the usage chunk.
    "openai": Says(sources=True, usage_when_failed=False),
    # Anthropic's events have no citations of retrieval; the error event replaces
    # message_delta, which carries the usage.
    "anthropic": Says(sources=False, usage_when_failed=False),
    "ai_sdk": Says(sources=True, usage_when_failed=True),
}


def test_every_format_has_a_reader() -> None:
    assert set(FORMATS) == set(READERS) == set(SAYS), (
        "a wire format in streaming/formats.py needs its client parser here"
    )


@pytest.mark.parametrize("ending", ["failed", "completed"])
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_formats_client_reads_the_recorded_stream(
    name: str,
    ending: str,
    node: str,  # noqa: F811
) -> None:
    events = recording(ending)
    reading = READERS[name](encode(name, events), node)
    says = SAYS[name]
    assert reading.text == TEXT
    if says.sources:
        assert reading.documents == ["bees.md", "路由.pdf"]
        assert reading.sources_before_text
    else:
        assert reading.documents is None
    failed = ending == "failed"
    assert reading.error == (ERROR["message"] if failed else None)
    expected_usage = {k: USAGE[k] for k in ("prompt_tokens", "completion_tokens")}
    if failed and not says.usage_when_failed:
        assert reading.usage is None
    else:
        assert reading.usage == expected_usage
    if FORMATS[name].event_ids:
        # Every event keeps the log's id: Last-Event-ID names exactly what the client has.
        assert reading.ids == [event.id for event in events]
    else:
        assert reading.ids is None


@pytest.mark.parametrize("name", sorted(n for n, wire in FORMATS.items() if wire.event_ids))
def test_a_cut_stream_resumes_from_the_last_event_id(
    name: str,
    node: str,  # noqa: F811
) -> None:
    events = recording("completed")
    cut = next(i for i, e in enumerate(events) if e.type is EventType.MESSAGE) + 4
    first = READERS[name](encode(name, events[:cut]), node)
    assert first.ids is not None
    last_event_id = first.ids[-1]
    # What the resume endpoints send: a fresh encoder, the events after Last-Event-ID.
    rest = READERS[name](encode(name, [e for e in events if e.id > last_event_id]), node)
    assert first.text + rest.text == TEXT
    assert rest.ids == [event.id for event in events if event.id > last_event_id]
    assert rest.usage == {k: USAGE[k] for k in ("prompt_tokens", "completion_tokens")}
