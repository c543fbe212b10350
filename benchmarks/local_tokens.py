"""Tokens per second of the local model: raw llama-cpp-python versus ``LocalProvider.stream``.

Both sides use one ``Llama`` (the provider's engine's, so model, memory and threads are the
same), the same chat prompt, temperature 0 and the same ``max_tokens``. The prompt asks for a
long story so that every round runs to ``max_tokens``; at temperature 0 both sides decode the
same tokens, which the benchmark checks by comparing the texts.

Two raw baselines:

* ``chat``: ``Llama.create_chat_completion(stream=True)``, the documented streaming API.
* ``tokens``: the bare ``Llama.generate`` token loop, no detokenizing: the ceiling.

Rounds alternate raw and provider so that drift on a shared machine hits both alike; medians
are reported, and the median of the per-round ratios (each round's sides ran back to
back). A rate is completion tokens over the time from the call to the last token
(prompt evaluation included); ``decode`` is the rate between the first and the last token.

Run from the repository root::

    python benchmarks/local_tokens.py --rounds 7 --max-tokens 128

It prints a table, then one JSON line with the same numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import llama_cpp
from llama_cpp.llama_types import ChatCompletionRequestMessage

from streamforge.chains.providers.base import ChatTurn, GenerationRequest
from streamforge.chains.providers.local.engine import LocalLlamaEngine
from streamforge.chains.providers.local.provider import LocalProvider

PROMPT = "Write a long story about a dragon."
TARGET_RATIO = 0.95


@dataclass(frozen=True, slots=True)
class Measurement:
    tokens: int
    seconds: float  # from the call to the last token
    first_token: float  # from the call to the first token
    text: str

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def decode_rate(self) -> float:
        span = self.seconds - self.first_token
        return (self.tokens - 1) / span if span > 0 and self.tokens > 1 else 0.0


def load_engine(
    model_path: str | None = None, *, n_threads: int = 2, n_ctx: int = 2048
) -> LocalLlamaEngine:
    engine = LocalLlamaEngine(model_path, n_ctx=n_ctx, n_threads=n_threads, queue_depth=0)
    engine.load()
    return engine


def chat_messages(prompt: str = PROMPT) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def raw_tokens_per_second(
    llm: llama_cpp.Llama, messages: Sequence[dict[str, str]], *, max_tokens: int
) -> Measurement:
    """``create_chat_completion(stream=True)``: one content chunk per generated token."""
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    stream = llm.create_chat_completion(
        messages=cast("list[ChatCompletionRequestMessage]", list(messages)),
        stream=True,
        max_tokens=max_tokens,
        temperature=0.0,
    )
    for chunk in cast("Iterator[dict[str, Any]]", stream):
        content = chunk["choices"][0]["delta"].get("content")
        if isinstance(content, str) and content:
            if first is None:
                first = time.perf_counter()
            parts.append(content)
    ended = time.perf_counter()
    return Measurement(len(parts), ended - started, (first or ended) - started, "".join(parts))


def raw_generate_tokens_per_second(
    engine: LocalLlamaEngine, messages: Sequence[dict[str, str]], *, max_tokens: int
) -> Measurement:
    """The bare ``Llama.generate`` loop on the same prompt tokens: decoding and nothing else."""
    llm = engine.llm
    prompt = engine.prompt_tokens(messages)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    started = time.perf_counter()
    first: float | None = None
    tokens: list[int] = []
    generator = llm.generate(prompt, temp=0.0)
    try:
        for token in generator:
            if first is None:
                first = time.perf_counter()
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            tokens.append(token)
            if len(tokens) >= max_tokens:
                break
    finally:
        generator.close()
    ended = time.perf_counter()
    text = llm.detokenize(tokens).decode(errors="replace")
    return Measurement(len(tokens), ended - started, (first or ended) - started, text)


async def provider_tokens_per_second(
    provider: LocalProvider, prompt: str = PROMPT, *, max_tokens: int
) -> Measurement:
    """``LocalProvider.stream``: tokens counted by the usage chunk the stream ends with."""
    request = GenerationRequest(
        messages=[ChatTurn("user", prompt)], temperature=0.0, max_tokens=max_tokens
    )
    started = time.perf_counter()
    first: float | None = None
    last = started
    parts: list[str] = []
    tokens = 0
    async for chunk in provider.stream(request):
        if chunk.text:
            last = time.perf_counter()
            if first is None:
                first = last
            parts.append(chunk.text)
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return Measurement(tokens, last - started, (first or last) - started, "".join(parts))


def _median(values: Sequence[Measurement], key: Callable[[Measurement], float]) -> float:
    return statistics.median(key(m) for m in values)


def _summary(values: Sequence[Measurement]) -> dict[str, Any]:
    return {
        "tokens": statistics.median(m.tokens for m in values),
        "tokens_per_s": round(_median(values, lambda m: m.rate), 2),
        "decode_tokens_per_s": round(_median(values, lambda m: m.decode_rate), 2),
        "first_token_ms": round(_median(values, lambda m: m.first_token) * 1000, 2),
        "min_tokens_per_s": round(min(m.rate for m in values), 2),
        "max_tokens_per_s": round(max(m.rate for m in values), 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    engine = load_engine(args.model_path, n_threads=args.threads, n_ctx=args.n_ctx)
    provider = LocalProvider(engine, default_max_tokens=args.max_tokens)
    messages = chat_messages(args.prompt)
    results: dict[str, list[Measurement]] = {"chat": [], "tokens": [], "provider": []}
    try:
        for _ in range(args.warmup):
            raw_tokens_per_second(engine.llm, messages, max_tokens=args.max_tokens)
            await provider_tokens_per_second(provider, args.prompt, max_tokens=args.max_tokens)
        for index in range(args.rounds):
            # Alternate which side goes first, so neither always follows the other.
            order = ["chat", "tokens", "provider"]
            if index % 2:
                order.reverse()
            for side in order:
                if side == "chat":
                    m = raw_tokens_per_second(engine.llm, messages, max_tokens=args.max_tokens)
                elif side == "tokens":
                    m = raw_generate_tokens_per_second(engine, messages, max_tokens=args.max_tokens)
                else:
                    m = await provider_tokens_per_second(
                        provider, args.prompt, max_tokens=args.max_tokens
                    )
                results[side].append(m)
    finally:
        await provider.aclose()

    texts = {side: values[0].text for side, values in results.items()}
    counts = {side: sorted({m.tokens for m in values}) for side, values in results.items()}
    summary = {side: _summary(values) for side, values in results.items()}
    provider_rate = summary["provider"]["tokens_per_s"]
    # Each round's sides ran back to back: their ratio cancels slow drift in machine load.
    paired = [p.rate / c.rate for p, c in zip(results["provider"], results["chat"], strict=True)]
    return {
        "benchmark": "local_tokens",
        "model": engine.model_path.rsplit("/", 1)[-1],
        "n_threads": args.threads,
        "n_ctx": args.n_ctx,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "same_text": texts["chat"] == texts["provider"] == texts["tokens"],
        "token_counts": counts,
        "raw_chat": summary["chat"],
        "raw_tokens": summary["tokens"],
        "provider": summary["provider"],
        "ratio": round(provider_rate / summary["chat"]["tokens_per_s"], 4),
        "ratio_vs_token_loop": round(provider_rate / summary["tokens"]["tokens_per_s"], 4),
        "paired_ratio": round(statistics.median(paired), 4),
        "paired_ratio_range": [round(min(paired), 4), round(max(paired), 4)],
        "target_ratio": TARGET_RATIO,
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"model {report['model']}, n_threads={report['n_threads']}, "
        f"max_tokens={report['max_tokens']}, {report['rounds']} rounds (medians)"
    )
    header = f"{'path':<34}{'tokens':>8}{'tok/s':>10}{'decode tok/s':>14}{'first ms':>10}"
    print(header)
    print("-" * len(header))
    rows = [
        ("raw create_chat_completion", report["raw_chat"]),
        ("raw Llama.generate token loop", report["raw_tokens"]),
        ("LocalProvider.stream", report["provider"]),
    ]
    for label, row in rows:
        print(
            f"{label:<34}{row['tokens']:>8}{row['tokens_per_s']:>10.1f}"
            f"{row['decode_tokens_per_s']:>14.1f}{row['first_token_ms']:>10.1f}"
        )
    verdict = "meets" if report["ratio"] >= report["target_ratio"] else "misses"
    print(
        f"provider / raw chat completion: {report['ratio']:.3f} "
        f"({verdict} the {report['target_ratio']} target); "
        f"provider / token loop: {report['ratio_vs_token_loop']:.3f}; "
        f"median of per-round ratios: {report['paired_ratio']:.3f} "
        f"(range {report['paired_ratio_range'][0]:.3f}-{report['paired_ratio_range'][1]:.3f}); "
        f"same text on every path: {report['same_text']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--model-path", default=None, help="a GGUF file; default: SmolLM2")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    print_table(report)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
