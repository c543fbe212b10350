"""The model that answered is recorded for every provider: in the ``session`` event, in the
``done`` event and on the stored reply, also when the provider used its default model.

The simulated provider and the local model (SmolLM2 in the model process) run for real; the
hosted providers talk to the loopback vendor servers of ``tests/vendors``, configured with a
key (or a URL) and no model at all.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from tests.conftest import AppFactory, live_server
from tests.sse_client import read_chat
from tests.test_config import DEFAULT_MODELS
from tests.vendors import SERVERS, Behaviour

HOSTED = sorted(DEFAULT_MODELS)


async def recorded_models(app_factory: AppFactory, llm: dict[str, Any]) -> dict[str, Any]:
    app = app_factory(llm=llm)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        stream = await read_chat(
            client, {"message": "Which model are you?", "max_tokens": 8}, timeout=120
        )
        assert stream.status == 200 and stream.done["status"] == "completed", stream.events
        session_id = stream.session["session_id"]
        items = (await client.get(f"/sessions/{session_id}/messages")).json()["items"]
    reply = next(item for item in items if item["role"] == "assistant")
    return {
        "session": stream.session["model"],
        "done": stream.done["model"],
        "stored": reply["model"],
        "provider": reply["provider"],
    }


async def test_simulated_records_its_model(app_factory: AppFactory) -> None:
    models = await recorded_models(app_factory, {"provider": "simulated"})
    assert models["provider"] == "simulated"
    assert models["session"] == models["done"] == models["stored"] == "simulated"


async def test_the_local_model_records_its_model(app_factory: AppFactory) -> None:
    models = await recorded_models(app_factory, {"provider": "local"})
    assert models["provider"] == "local"
    assert isinstance(models["session"], str) and models["session"]
    assert models["session"] == models["done"] == models["stored"]


@pytest.mark.parametrize("provider", HOSTED)
async def test_a_hosted_provider_records_its_default_model(
    app_factory: AppFactory, provider: str
) -> None:
    async with AsyncExitStack() as stack:
        vendor = await stack.enter_async_context(
            SERVERS[provider](Behaviour(headers={"Connection": "close"}))
        )
        settings: dict[str, Any] = {"base_url": vendor.base_url}
        if provider in ("openai", "anthropic"):
            settings["api_key"] = "test"
        models = await recorded_models(app_factory, {"provider": provider, provider: settings})
        assert vendor.last_chat.json["model"] == DEFAULT_MODELS[provider]
    assert models["provider"] == provider
    assert models["session"] == models["done"] == models["stored"] == DEFAULT_MODELS[provider]
