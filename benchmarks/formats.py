"""Wire formats side by side: one StreamForge worker's pass-through in each format it speaks.

Starts what ``passthrough.py`` starts: the loopback OpenAI server of ``tests.vendors``
(``--tokens N --fast``) and one StreamForge uvicorn worker whose provider is
``openai_compatible``, pointed at it. The same lean client (``passthrough.py``'s) then streams
the same answer in every format the registry (``streaming/formats.py``) has an endpoint for:

* ``sse``: the plain format, ``POST /chat``;
* ``openai``: ``POST /v1/chat/completions`` (``stream: true``);
* ``anthropic``: ``POST /v1/messages`` (``stream: true``);
* ``ai_sdk``: ``POST /ai-sdk/chat``, the AI SDK's UI message stream.

and counts each format's content events (plain: events without an ``event:`` field; OpenAI:
chunks with content; Anthropic: ``content_block_delta``; AI SDK: ``text-delta`` parts), a
stream that does not deliver all N or does not end as its format ends being an error.

``/chat`` and ``/ai-sdk/chat`` keep sessions: each of their clients continues a session of its
own (plain: created with ``POST /sessions`` when the client starts; AI SDK: a chat id per
client), so both store the same turns and replay the same history, and their difference is the
encoder's. ``/v1`` is stateless (nothing stored), so its ratios to the plain format include
the sessions' storage as well as the encoder.

Per round every format gets a throughput run (``--clients`` concurrent clients for
``--duration`` seconds) and a time-to-first-token run (one client, ``--ttft-streams``
streams), the order rotating each round; medians over ``--rounds`` are reported, each
format's throughput as a ratio to the plain format's (target: at least 0.85) and its time to
first token as the difference. Besides, every encoder alone (in this process, no server)
encodes a stream of N deltas, delivered as the response delivers them: ``encode_us_per_chunk``.

Run from the repository root::

    python benchmarks/formats.py --rounds 3 --clients 16 --tokens 256

It prints a table and then one JSON line with the same numbers.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from _client import (
    HOST,
    free_port,
    load_average,
    post_request,
    stop_server,
    wait_until_healthy,
)
from passthrough import (
    MAX_TOKENS,
    OPENAI_SSE,
    Framing,
    Results,
    Target,
    _ms,
    add_load_arguments,
    check_load_arguments,
    compare,
    run_rounds,
    start_streamforge,
    start_upstream,
    summarize,
)
from streamforge.streaming.events import EventType, StreamEvent
from streamforge.streaming.formats import FORMATS, StreamContext

TARGET_RATIO = 0.85
BASE = "sse"
PROVIDER = "openai_compatible"
QUESTION = "Hello"


# --- counting each format's content events ----------------------------------------------------


def count_plain(blocks: list[bytes]) -> tuple[int, bool]:
    """Text deltas (events with an id and no ``event:`` field); whether ``done`` came."""
    count = 0
    done = False
    for block in blocks:
        if not block.startswith(b"id: "):
            continue  # retry:, a ping, or an interrupt's error (no id)
        if b"\nevent: " not in block:
            count += 1
        elif b"\nevent: done\n" in block:
            done = True
    return count, done


def count_anthropic(blocks: list[bytes]) -> tuple[int, bool]:
    count = 0
    done = False
    for block in blocks:
        if block.startswith(b"event: content_block_delta\n"):
            count += 1
        elif block.startswith(b"event: message_stop\n"):
            done = True
    return count, done


def count_ai_sdk(blocks: list[bytes]) -> tuple[int, bool]:
    count = 0
    done = False
    for block in blocks:
        if b'data: {"type":"text-delta"' in block:
            count += 1
        elif block == b"data: [DONE]":
            done = True
    return count, done


FRAMINGS = {
    "sse": Framing(b"\n\n", count_plain),
    "openai": OPENAI_SSE,
    "anthropic": Framing(b"\n\n", count_anthropic),
    "ai_sdk": Framing(b"\n\n", count_ai_sdk),
}


# --- what each client sends -------------------------------------------------------------------


def create_session(port: int) -> str:
    """A session of its own for one client of the plain format (a blocking call, made when
    the client starts, before any of its streams is timed)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        connection.request(
            "POST", "/sessions", body=b"{}", headers={"content-type": "application/json"}
        )
        response = connection.getresponse()
        body = response.read()
        if response.status != 201:
            raise RuntimeError(f"POST /sessions: {response.status} {body[:200]!r}")
        session_id: str = json.loads(body)["id"]
        return session_id
    finally:
        connection.close()


@dataclass
class FormatTarget(Target):
    """One format's endpoint; ``request`` is called once per client, so each client of a
    format that keeps sessions gets a session of its own."""

    format: str = BASE
    clients_started: itertools.count[int] = field(default_factory=itertools.count)

    def request(self, *, keep_alive: bool) -> bytes:
        body = json.dumps(self.body(), separators=(",", ":")).encode()
        return post_request(self.port, self.path, body, keep_alive=keep_alive)

    def body(self) -> dict[str, Any]:
        client = next(self.clients_started)
        if self.format == "sse":
            return {
                "message": QUESTION,
                "session_id": create_session(self.port),
                "max_tokens": MAX_TOKENS,
            }
        if self.format == "ai_sdk":
            return {
                "id": f"formats-bench-{client}",
                "messages": [
                    {"id": "u1", "role": "user", "parts": [{"type": "text", "text": QUESTION}]}
                ],
                "trigger": "submit-message",
                "max_tokens": MAX_TOKENS,
            }
        messages = [{"role": "user", "content": QUESTION}]
        return {"model": PROVIDER, "messages": messages, "stream": True, "max_tokens": MAX_TOKENS}


PATHS = {
    "sse": "/chat",
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "ai_sdk": "/ai-sdk/chat",
}


# --- the encoders alone -----------------------------------------------------------------------


def encode_cost(name: str, tokens: int, streams: int = 200, batch: int = 8) -> float:
    """Microseconds per content chunk for ``name``'s encoder alone: a stream of ``tokens``
    deltas (as the upstream sends them), encoded ``batch`` events per call as the response
    encodes what has been logged since its last send."""
    deltas = [StreamEvent(i, EventType.MESSAGE, f" token{i}") for i in range(2, tokens + 2)]
    usage = {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": tokens + 3}
    events = [
        StreamEvent(1, EventType.SESSION, {"session_id": "s", "assistant_message_id": "m"}),
        *deltas,
        StreamEvent(tokens + 2, EventType.USAGE, usage),
        StreamEvent(tokens + 3, EventType.DONE, {"finish_reason": "stop", "usage": usage}),
    ]
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    wire = FORMATS[name]
    started = time.perf_counter()
    for index in range(streams):
        encoder = wire.build(StreamContext(f"st{index}", model=PROVIDER, limit=MAX_TOKENS))
        encoder.head()
        for events_batch in batches:
            encoder.encode(events_batch)
        encoder.tail()
    return 1e6 * (time.perf_counter() - started) / (streams * tokens)


# --- the run ----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    missing = set(FORMATS) - set(PATHS)
    if missing:
        raise RuntimeError(f"no endpoint known here for the formats {sorted(missing)}")
    upstream_port, streamforge_port = free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="streamforge-bench-")
    upstream = start_upstream(upstream_port, args.tokens)
    streamforge = None
    try:
        await wait_until_healthy(upstream, upstream_port, "/v1/models")
        streamforge = start_streamforge(streamforge_port, upstream_port, data_dir)
        await wait_until_healthy(streamforge, streamforge_port)
        pids = {"streamforge": streamforge.pid, "upstream": upstream.pid}
        targets: list[Target] = [
            FormatTarget(
                name,
                streamforge_port,
                PROVIDER,
                pids,
                path=PATHS[name],
                framing=FRAMINGS[name],
                format=name,
            )
            for name in sorted(FORMATS, key=lambda n: (n != BASE, n))
        ]
        load_before = load_average()

        def on_round(index: int, rates: Results, ttfts: Results) -> None:
            line = ", ".join(
                f"{name} {rates[name][-1]['chunks_per_s']:,.0f}/s "
                f"TTFT {_ms(ttfts[name][-1]['ttft_p50_ms'])}"
                for name in rates
            )
            print(f"round {index + 1}: {line}", file=sys.stderr, flush=True)

        rates, ttfts = await run_rounds(args, targets, on_round)
        load_after = load_average()
    finally:
        if streamforge is not None:
            stop_server(streamforge)
        stop_server(upstream)
        shutil.rmtree(data_dir, ignore_errors=True)
    summary = {name: summarize(rates[name], ttfts[name]) for name in rates}
    versus = {name: compare(rates, ttfts, summary, name, BASE) for name in summary if name != BASE}
    encode_us = {name: round(encode_cost(name, args.tokens), 3) for name in summary}
    return {
        "benchmark": "formats",
        "tokens": args.tokens,
        "clients": args.clients,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "ttft_streams": args.ttft_streams,
        "keep_alive": not args.fresh_connections,
        "load_before": [round(v, 2) for v in load_before] if load_before else None,
        "load_after": [round(v, 2) for v in load_after] if load_after else None,
        "formats": summary,
        "versus_plain": versus,
        "encode_us_per_chunk": encode_us,
        "target_ratio": TARGET_RATIO,
        "ratio_met": {name: v["ratio"] >= TARGET_RATIO for name, v in versus.items()},
    }


def print_table(report: dict[str, Any]) -> None:
    print()
    print(
        f"  {report['tokens']} content chunks per stream, {report['clients']} clients for "
        f"throughput, {report['rounds']} rounds (medians), one StreamForge worker, "
        f"provider {PROVIDER}"
    )
    header = (
        f"  {'':<11}{'chunks/s':>11}{'vs plain':>10}{'TTFT p50':>11}{'added':>11}"
        f"{'encode':>13}{'errors':>8}  CPU"
    )
    print(header)
    print("  " + "-" * (len(header) + 30))
    for name, side in report["formats"].items():
        versus = report["versus_plain"].get(name)
        ratio = f"{versus['ratio']:.3f}" if versus else ""
        added = f"{versus['ttft_added_p50_ms']:.2f} ms" if versus else ""
        cpu = ", ".join(
            f"{process} {value:.0f} %"
            for process, value in side["cpu_pct"].items()
            if value is not None
        )
        print(
            f"  {name:<11}{side['chunks_per_s']:>11,.0f}{ratio:>10}"
            f"{side['ttft_p50_ms']:>8.2f} ms{added:>11}"
            f"{report['encode_us_per_chunk'][name]:>8.2f} us/c{side['errors']:>8}  {cpu}"
        )
    print()
    for name, met in report["ratio_met"].items():
        versus = report["versus_plain"][name]
        print(
            f"  {name}: throughput {versus['ratio']:.3f} of plain (per round "
            f"{versus['paired_ratio_range'][0]:.3f}-{versus['paired_ratio_range'][1]:.3f}); "
            f"target >= {report['target_ratio']}: {'met' if met else 'NOT met'}"
        )
    print()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    check_load_arguments(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    from _client import run_async

    args = parse_args(argv)
    try:
        report = run_async(run(args))
    except RuntimeError as exc:
        print(f"formats: {exc}", file=sys.stderr)
        return 1
    print_table(report)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
