"""Pass-through overhead: an OpenAI-compatible upstream through StreamForge versus direct.

Starts two processes: the loopback OpenAI server of ``tests.vendors`` (``--tokens N --fast``:
N small content chunks, pre-encoded and sent back to back) and one StreamForge uvicorn worker
whose provider is ``openai_compatible``, pointed at that server. The same lean client then
streams ``POST /v1/chat/completions`` (``stream: true``) from the upstream directly and from
StreamForge (``model: "openai_compatible"``), and counts the ``data:`` chunks that carry
content (not the role chunk, the finish chunk or ``[DONE]``); a stream that does not deliver
all N is an error.

Two measurements, each a ratio taken within one run:

* throughput: ``--clients`` concurrent clients stream back to back for ``--duration``
  seconds (after ``--warmup``); chunks/s through StreamForge / chunks/s direct.
* time to first token added: one client, ``--ttft-streams`` streams one after another;
  p50 time from sending the request to the first content chunk, through StreamForge minus
  direct.

Direct and through-StreamForge runs alternate for ``--rounds`` rounds (the first side swaps
each round) and medians are reported. Clients keep their connections open between streams,
as the SDKs do (``--fresh-connections`` opens one per stream). CPU is read from /proc for each
process over each throughput window.

Run from the repository root::

    python benchmarks/passthrough.py --rounds 3 --clients 16 --tokens 256

It prints a table and then one JSON line with the same numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from _client import (
    HOST,
    ROOT,
    StreamError,
    free_port,
    load_average,
    percentile,
    post_request,
    process_cpu_seconds,
    read_chunk,
    read_head,
    skip_body,
    start_process,
    stop_server,
    uvicorn_command,
    wait_until_healthy,
)

TARGET_RATIO = 0.3
TARGET_TTFT_ADDED_MS = 5.0
DRAIN_TIMEOUT = 10.0
UPSTREAM_MODEL = "upstream-model"
# Well above --tokens, so that no side cuts the answer short.
MAX_TOKENS = 1024

_CONTENT = b'"content":"'
_EMPTY_CONTENT = b'"content":""'


@dataclass
class Stats:
    """Shared by a run's clients; counters only move while ``measuring`` is set."""

    measuring: bool = False
    stopping: bool = False
    streams: int = 0
    chunks: int = 0
    errors: int = 0
    ttft: list[float] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        if self.measuring:
            self.errors += 1
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


# --- the client ------------------------------------------------------------------------------


def count_content(blocks: list[bytes]) -> tuple[int, bool]:
    """Content chunks among OpenAI's SSE blocks, and whether ``data: [DONE]`` was one of them."""
    count = 0
    done = False
    for block in blocks:
        if not block.startswith(b"data:"):
            continue  # a comment (ping) or an empty block
        if block.startswith(b"[DONE]", 5) or block.startswith(b"[DONE]", 6):
            done = True
        elif _CONTENT in block and _EMPTY_CONTENT not in block:
            count += 1
    return count, done


@dataclass(frozen=True)
class Framing:
    """How a stream's body divides into events, and what ``count`` finds among them: content
    chunks, and whether the stream's last event was seen."""

    separator: bytes
    count: Callable[[list[bytes]], tuple[int, bool]]


OPENAI_SSE = Framing(b"\n\n", count_content)


@dataclass
class Target:
    """One side of the comparison: where the client connects, what it sends and reads."""

    name: str
    port: int
    model: str
    pids: dict[str, int]  # processes whose CPU is reported for this side
    path: str = "/v1/chat/completions"
    payload: dict[str, Any] | None = None  # the JSON body; None: OpenAI's chat completion
    framing: Framing = OPENAI_SSE

    def request(self, *, keep_alive: bool) -> bytes:
        payload = self.payload or {
            "model": self.model,
            "messages": [{"role": "user", "content": "Hello"}],
            "stream": True,
            "max_tokens": MAX_TOKENS,
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        return post_request(self.port, self.path, body, keep_alive=keep_alive)


async def run_stream(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    expected: int,
    on_chunks: Callable[[int], None],
    framing: Framing = OPENAI_SSE,
) -> tuple[float, bool]:
    """One stream: (seconds to the first content chunk, the server keeps the connection)."""
    sent = time.perf_counter()
    writer.write(request)
    status, headers = await read_head(reader)
    keep_alive = headers.get(b"connection", b"").lower() != b"close"
    if status != 200:
        await skip_body(reader, headers)
        raise StreamError(f"status {status}")
    if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
        raise StreamError("response is not chunked")
    first: float | None = None
    total = 0
    done = False
    pending = b""
    while True:
        data = await read_chunk(reader)
        if not data:
            break
        pending += data
        if framing.separator not in pending:
            continue
        *blocks, pending = pending.split(framing.separator)
        count, ended = framing.count(blocks)
        done = done or ended
        if count:
            if first is None:
                first = time.perf_counter() - sent
            total += count
            on_chunks(count)
    if not done:
        raise StreamError("stream ended without its last event")
    if total != expected or first is None:
        raise StreamError(f"{total} content chunks, not {expected}")
    return first, keep_alive


async def client(
    target: Target, stats: Stats, expected: int, keep_alive: bool, limit: int | None = None
) -> None:
    """Streams back to back until ``stats.stopping`` (or ``limit`` counted streams)."""
    request = target.request(keep_alive=keep_alive)
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    def on_chunks(count: int) -> None:
        if stats.measuring:
            stats.chunks += count

    streams = 0
    try:
        while not stats.stopping and (limit is None or streams < limit):
            counted = stats.measuring
            streams += 1
            try:
                if connection is None:
                    connection = await asyncio.open_connection(HOST, target.port)
                reader, writer = connection
                first, reuse = await run_stream(
                    reader, writer, request, expected, on_chunks, target.framing
                )
                if counted and stats.measuring:
                    stats.streams += 1
                    stats.ttft.append(first)
            except StreamError as exc:
                stats.error(str(exc))
                reuse = False
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                stats.error(type(exc).__name__)
                reuse = False
                await asyncio.sleep(0.01)  # do not spin on a refused connection
            if not (keep_alive and reuse) and connection is not None:
                connection[1].close()
                connection = None
    finally:
        if connection is not None:
            connection[1].close()


def _cpu(pids: dict[str, int]) -> dict[str, float | None]:
    return {name: process_cpu_seconds(pid) for name, pid in pids.items()}


async def throughput(
    target: Target, clients: int, warmup: float, duration: float, expected: int, keep_alive: bool
) -> dict[str, Any]:
    stats = Stats()
    tasks = [
        asyncio.create_task(client(target, stats, expected, keep_alive)) for _ in range(clients)
    ]
    try:
        await asyncio.sleep(warmup)
        cpu_start = _cpu(target.pids)
        client_cpu_start = time.process_time()
        started = time.perf_counter()
        stats.measuring = True
        await asyncio.sleep(duration)
        stats.measuring = False
        elapsed = time.perf_counter() - started
        cpu_end = _cpu(target.pids)
        client_cpu = time.process_time() - client_cpu_start
        # Let the streams in flight finish (uncounted) rather than cut them off.
        stats.stopping = True
        await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    cpu: dict[str, float | None] = {}
    for name in target.pids:
        start, end = cpu_start[name], cpu_end[name]
        cpu[name] = (
            round(100 * (end - start) / elapsed, 1)
            if start is not None and end is not None
            else None
        )
    cpu["client"] = round(100 * client_cpu / elapsed, 1)
    return {
        "chunks_per_s": stats.chunks / elapsed,
        "streams": stats.streams,
        "errors": stats.errors,
        "error_kinds": stats.error_kinds,
        "cpu_pct": cpu,
    }


async def first_token(
    target: Target, streams: int, warmup: int, expected: int, keep_alive: bool
) -> dict[str, Any]:
    """One client, ``streams`` streams one after another: time to the first content chunk."""
    stats = Stats()
    await client(target, stats, expected, keep_alive, limit=warmup)
    stats = Stats(measuring=True)
    await client(target, stats, expected, keep_alive, limit=streams)
    p50 = percentile(stats.ttft, 0.50)
    p90 = percentile(stats.ttft, 0.90)
    return {
        "ttft_p50_ms": p50 * 1000 if p50 is not None else None,
        "ttft_p90_ms": p90 * 1000 if p90 is not None else None,
        "errors": stats.errors,
        "error_kinds": stats.error_kinds,
    }


# --- the run ---------------------------------------------------------------------------------


def start_upstream(port: int, tokens: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "tests.vendors",
        "openai",
        "--port",
        str(port),
        "--tokens",
        str(tokens),
        "--fast",
    ]
    return start_process(command, cwd=ROOT, quiet=True)  # it prints its base URL


def start_streamforge(port: int, upstream_port: int, data_dir: str) -> subprocess.Popen[bytes]:
    env = {
        "STREAMFORGE_DATA_DIR": data_dir,
        "STREAMFORGE_LLM__PROVIDER": "openai_compatible",
        "STREAMFORGE_LLM__OPENAI_COMPATIBLE__BASE_URL": f"http://{HOST}:{upstream_port}/v1",
        "STREAMFORGE_LLM__OPENAI_COMPATIBLE__MODEL": UPSTREAM_MODEL,
        "STREAMFORGE_LLM__OPENAI_COMPATIBLE__MAX_TOKENS": str(MAX_TOKENS),
    }
    # Its own directory, so that no .env file is read.
    return start_process(uvicorn_command("streamforge.main:app", port), env=env, cwd=data_dir)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _errors(results: list[dict[str, Any]]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for result in results:
        for kind, count in result["error_kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + count
    return kinds


Results = dict[str, list[dict[str, Any]]]  # each side's result of every round, by its name


async def run_rounds(
    args: argparse.Namespace,
    targets: list[Target],
    on_round: Callable[[int, Results, Results], None],
) -> tuple[Results, Results]:
    """``args.rounds`` rounds of every target: throughput runs, then time-to-first-token runs.
    Which target goes first rotates each round (with two, they swap). After each round,
    ``on_round(index, rates, ttfts)``; RuntimeError if a run received no content at all (a
    slow side may complete no stream within a short throughput window: its chunks count)."""
    keep_alive = not args.fresh_connections
    rates: Results = {target.name: [] for target in targets}
    ttfts: Results = {target.name: [] for target in targets}
    for index in range(args.rounds):
        shift = index % len(targets)
        order = targets[shift:] + targets[:shift]
        for target in order:
            rates[target.name].append(
                await throughput(
                    target, args.clients, args.warmup, args.duration, args.tokens, keep_alive
                )
            )
        for target in order:
            ttfts[target.name].append(
                await first_token(
                    target, args.ttft_streams, args.ttft_warmup, args.tokens, keep_alive
                )
            )
        on_round(index, rates, ttfts)
        for target in targets:
            rate, first = rates[target.name][-1], ttfts[target.name][-1]
            if not rate["chunks_per_s"] or first["ttft_p50_ms"] is None:
                kinds = _errors([rate, first])
                raise RuntimeError(f"{target.name}: no content received; errors: {kinds}")
    return rates, ttfts


def summarize(runs: list[dict[str, Any]], firsts: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's rounds: medians of its throughput and time-to-first-token runs."""
    cpu: dict[str, float | None] = {}
    for process in runs[0]["cpu_pct"]:
        values = [r["cpu_pct"][process] for r in runs if r["cpu_pct"][process] is not None]
        cpu[process] = round(_median(values), 1) if values else None
    rate = _median([r["chunks_per_s"] for r in runs])
    per_chunk = {
        process: round(10_000 * value / rate, 2) if value is not None and rate else None
        for process, value in cpu.items()
    }
    return {
        "chunks_per_s": round(rate, 1),
        "chunks_per_s_rounds": [round(r["chunks_per_s"], 1) for r in runs],
        "streams": sum(r["streams"] for r in runs),
        "ttft_p50_ms": round(_median([f["ttft_p50_ms"] for f in firsts]), 3),
        "ttft_p50_ms_rounds": [round(f["ttft_p50_ms"], 3) for f in firsts],
        "ttft_p90_ms": round(_median([f["ttft_p90_ms"] for f in firsts]), 3),
        "cpu_pct": cpu,
        "cpu_us_per_chunk": per_chunk,
        "errors": sum(r["errors"] for r in runs) + sum(f["errors"] for f in firsts),
        "error_kinds": _errors(runs + firsts),
    }


def compare(
    rates: Results, ttfts: Results, summary: dict[str, Any], side: str, base: str
) -> dict[str, Any]:
    """``side`` against ``base``: throughput ratio and time to first token added, from the
    medians and (``paired_``) as the median of each round's own comparison."""
    paired = [
        s["chunks_per_s"] / b["chunks_per_s"] for s, b in zip(rates[side], rates[base], strict=True)
    ]
    paired_added = [
        s["ttft_p50_ms"] - b["ttft_p50_ms"] for s, b in zip(ttfts[side], ttfts[base], strict=True)
    ]
    ratio = summary[side]["chunks_per_s"] / summary[base]["chunks_per_s"]
    return {
        "ratio": round(ratio, 4),
        "paired_ratio": round(_median(paired), 4),
        "paired_ratio_range": [round(min(paired), 4), round(max(paired), 4)],
        "ttft_added_p50_ms": round(summary[side]["ttft_p50_ms"] - summary[base]["ttft_p50_ms"], 3),
        "paired_ttft_added_p50_ms": round(_median(paired_added), 3),
    }


async def measure(args: argparse.Namespace, direct: Target, via: Target) -> dict[str, Any]:
    def on_round(index: int, rates: Results, ttfts: Results) -> None:
        d, s = rates["direct"][-1], rates["streamforge"][-1]
        td, ts = ttfts["direct"][-1], ttfts["streamforge"][-1]
        print(
            f"round {index + 1}: direct {d['chunks_per_s']:,.0f} chunks/s, "
            f"StreamForge {s['chunks_per_s']:,.0f} chunks/s "
            f"(ratio {s['chunks_per_s'] / max(d['chunks_per_s'], 1e-9):.3f}); "
            f"TTFT p50 direct {_ms(td['ttft_p50_ms'])}, StreamForge {_ms(ts['ttft_p50_ms'])}; "
            f"errors {d['errors'] + td['errors']} direct, {s['errors'] + ts['errors']} via",
            file=sys.stderr,
            flush=True,
        )

    rates, ttfts = await run_rounds(args, [direct, via], on_round)
    summary = {name: summarize(rates[name], ttfts[name]) for name in ("direct", "streamforge")}
    comparison = compare(rates, ttfts, summary, "streamforge", "direct")
    return {
        **summary,
        **comparison,
        "target_ratio": TARGET_RATIO,
        "target_ttft_added_ms": TARGET_TTFT_ADDED_MS,
        "ratio_met": comparison["ratio"] >= TARGET_RATIO,
        "ttft_met": comparison["ttft_added_p50_ms"] <= TARGET_TTFT_ADDED_MS,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    upstream_port, streamforge_port = free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="streamforge-bench-")
    upstream = start_upstream(upstream_port, args.tokens)
    streamforge: subprocess.Popen[bytes] | None = None
    try:
        await wait_until_healthy(upstream, upstream_port, "/v1/models")
        streamforge = start_streamforge(streamforge_port, upstream_port, data_dir)
        await wait_until_healthy(streamforge, streamforge_port)
        direct = Target("direct", upstream_port, UPSTREAM_MODEL, {"upstream": upstream.pid})
        via = Target(
            "streamforge",
            streamforge_port,
            "openai_compatible",
            {"streamforge": streamforge.pid, "upstream": upstream.pid},
        )
        load_before = load_average()
        result = await measure(args, direct, via)
        return {
            "benchmark": "passthrough",
            "tokens": args.tokens,
            "clients": args.clients,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "ttft_streams": args.ttft_streams,
            "keep_alive": not args.fresh_connections,
            "load_before": [round(v, 2) for v in load_before] if load_before else None,
            **result,
        }
    finally:
        if streamforge is not None:
            stop_server(streamforge)
        stop_server(upstream)
        shutil.rmtree(data_dir, ignore_errors=True)


def print_table(report: dict[str, Any]) -> None:
    def cpu(side: dict[str, Any]) -> str:
        per_chunk = side["cpu_us_per_chunk"]
        return ", ".join(
            f"{name} {value:.0f} % ({per_chunk[name]:.1f} us/chunk)"
            for name, value in side["cpu_pct"].items()
            if value is not None
        )

    direct, via = report["direct"], report["streamforge"]
    print()
    print(
        f"  {report['tokens']} content chunks per stream, {report['clients']} clients for "
        f"throughput, {report['rounds']} rounds (medians), "
        f"{'keep-alive' if report['keep_alive'] else 'fresh'} connections"
    )
    header = f"  {'':<13}{'chunks/s':>11}{'TTFT p50':>11}{'TTFT p90':>11}{'errors':>8}  CPU"
    print(header)
    print("  " + "-" * (len(header) + 40))
    for label, side in (("direct", direct), ("StreamForge", via)):
        print(
            f"  {label:<13}{side['chunks_per_s']:>11,.0f}{side['ttft_p50_ms']:>8.2f} ms"
            f"{side['ttft_p90_ms']:>8.2f} ms{side['errors']:>8}  {cpu(side)}"
        )
    print()
    ratio_verdict = "met" if report["ratio_met"] else "NOT met"
    ttft_verdict = "met" if report["ttft_met"] else "NOT met"
    print(
        f"  throughput ratio {report['ratio']:.3f} (per-round median {report['paired_ratio']:.3f},"
        f" range {report['paired_ratio_range'][0]:.3f}-{report['paired_ratio_range'][1]:.3f});"
        f" target >= {report['target_ratio']}: {ratio_verdict}"
    )
    print(
        f"  TTFT added p50 {report['ttft_added_p50_ms']:.2f} ms "
        f"(per-round median {report['paired_ttft_added_p50_ms']:.2f} ms); "
        f"target <= {report['target_ttft_added_ms']} ms: {ttft_verdict}"
    )
    print()


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the load every side gets (``check_load_arguments`` checks them)."""
    parser.add_argument(
        "--tokens", type=int, default=256, help="content chunks per stream (%(default)s)"
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (%(default)s)")
    parser.add_argument("--duration", type=float, default=5.0, help="counted seconds (%(default)s)")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="uncounted seconds first (%(default)s)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every side (%(default)s)")
    parser.add_argument(
        "--ttft-streams", type=int, default=200, help="streams per TTFT run (%(default)s)"
    )
    parser.add_argument(
        "--ttft-warmup", type=int, default=20, help="uncounted streams first (%(default)s)"
    )
    parser.add_argument(
        "--fresh-connections", action="store_true", help="open a connection per stream"
    )


def check_load_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (
        args.tokens < 1
        or args.tokens >= MAX_TOKENS
        or args.clients < 1
        or args.duration <= 0
        or args.warmup < 0
        or args.rounds < 1
        or args.ttft_streams < 1
        or args.ttft_warmup < 0
    ):
        parser.error(f"--tokens must be 1-{MAX_TOKENS - 1}; counts >= 1; times > 0")


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
        print(f"passthrough: {exc}", file=sys.stderr)
        return 1
    print_table(report)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
