"""``GET /metrics``: Prometheus text whose counters move as streams run, end, are cancelled,
resumed and left, and as searches run."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AppFactory, live_server
from tests.polling import eventually
from tests.test_resume import LONG, SLOW, resume, started


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


async def test_metrics_move_as_the_server_works(app_factory: AppFactory) -> None:
    app = app_factory(streaming=SLOW, llm=LONG)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        before = await scrape(client)
        assert before["streamforge_active_streams"] == 0
        assert before["streamforge_queue_depth"] == 0
        for name in ("disconnects", "resumes", "cancels"):
            assert before[f"streamforge_{name}_total"] == 0

        # A stream that completes, resumed once afterwards.
        stream_id, reading = await started(client, {"message": "one"}, 5)
        during = await scrape(client)
        assert during["streamforge_active_streams"] == 1
        await reading
        assert (await resume(client, stream_id, "2")).status == 200
        # A stream that is cancelled.
        cancelled_id, cancelled = await started(client, {"message": "two"}, 5)
        await client.post(f"/chat/streams/{cancelled_id}/cancel")
        await cancelled
        # A client that leaves.
        async with client.stream("POST", "/chat", json={"message": "three"}) as response:
            async for _ in response.aiter_bytes():
                break
        await eventually(lambda: server.components.streams.active == 0, timeout=5, interval=0.02)
        # A search.
        await client.post("/collections", json={"name": "kb"})
        await client.post("/search", json={"query": "anything", "mode": "text"})

        after = await scrape(client)
        assert after["streamforge_active_streams"] == 0
        assert after["streamforge_streams_total{status=completed}"] == 1
        assert after["streamforge_streams_total{status=cancelled}"] == 1
        assert after["streamforge_streams_total{status=interrupted}"] == 1
        assert after["streamforge_cancels_total"] == 1
        assert after["streamforge_resumes_total"] == 1
        assert after["streamforge_disconnects_total"] == 1
        # The client that left may have gone before the first token.
        assert after["streamforge_time_to_first_token_seconds_count{provider=simulated}"] >= 2
        assert after["streamforge_tokens_per_second_count{provider=simulated}"] >= 1
        assert after["streamforge_retrieval_seconds_count{mode=text}"] == 1
