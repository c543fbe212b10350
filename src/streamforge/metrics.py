"""Prometheus metrics of one app instance, served at ``GET /metrics``.

Each app has a registry of its own (several apps in one process, as in the tests, never
share counters). Streams are observed once, when their producer ends, from the ``done``
event they logged: time to first token, tokens per second and how they ended.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from streamforge.streaming.log import StreamBuffer

__all__ = ["CONTENT_TYPE", "Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_RATE_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.time_to_first_token = Histogram(
            "streamforge_time_to_first_token_seconds",
            "Time from the start of generation to its first token.",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokens_per_second = Histogram(
            "streamforge_tokens_per_second",
            "Completion tokens per second after the first token, per generation.",
            ["provider"],
            buckets=_RATE_BUCKETS,
            registry=registry,
        )
        self.streams = Counter(
            "streamforge_streams",
            "Finished streams, by how they ended.",
            ["status"],
            registry=registry,
        )
        self.active_streams = Gauge(
            "streamforge_active_streams", "Streams generating now.", registry=registry
        )
        self.disconnects = Counter(
            "streamforge_disconnects",
            "Clients that left before their stream ended.",
            registry=registry,
        )
        self.resumes = Counter(
            "streamforge_resumes", "Streams resumed with Last-Event-ID.", registry=registry
        )
        self.cancels = Counter(
            "streamforge_cancels", "Generations stopped on request.", registry=registry
        )
        self.queue_depth = Gauge(
            "streamforge_queue_depth",
            "Generations waiting for the local model.",
            registry=registry,
        )
        self.event_loop_tasks = Gauge(
            "streamforge_event_loop_tasks",
            "Tasks alive on the server's event loop (requests, producers, background work).",
            registry=registry,
        )
        # process_resident_memory_bytes, open fds and CPU time, where the platform has them.
        ProcessCollector(registry=registry)
        self.retrieval_latency = Histogram(
            "streamforge_retrieval_seconds",
            "Time to answer a search, embedding the query included.",
            ["mode"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    def watch(
        self,
        active: Callable[[], int],
        queued: Callable[[], int],
        tasks: Callable[[], int] | None = None,
    ) -> None:
        """Gauges read when scraped."""
        self.active_streams.set_function(lambda: float(active()))
        self.queue_depth.set_function(lambda: float(queued()))
        if tasks is not None:
            self.event_loop_tasks.set_function(lambda: float(tasks()))

    def stream_finished(self, buffer: StreamBuffer) -> None:
        done = buffer.done
        if done is None:
            return
        self.streams.labels(status=str(done.get("status", "unknown"))).inc()
        provider = str(done.get("provider", "unknown"))
        timings = done.get("timings") or {}
        ttft_ms, total_ms = timings.get("ttft_ms"), timings.get("total_ms")
        if ttft_ms is None or total_ms is None:
            return
        self.time_to_first_token.labels(provider=provider).observe(ttft_ms / 1000)
        tokens = (done.get("usage") or {}).get("completion_tokens") or 0
        decoding = (total_ms - ttft_ms) / 1000
        if tokens > 1 and decoding > 0:
            self.tokens_per_second.labels(provider=provider).observe((tokens - 1) / decoding)

    def render(self) -> bytes:
        return generate_latest(self.registry)
