"""Loopback HTTP servers that speak the real streaming wire formats of OpenAI, Anthropic and
Ollama, so the official SDKs and LangChain partner packages run against them end to end.

    async with OpenAIServer() as server:          # in the test's own event loop
        server.enqueue(Behaviour.failing(429), Behaviour(cut_after=3))
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        ...
        assert server.last_chat.json["model"] == "gpt-4o-mini"

    with OllamaServer() as server:                # in a background thread (sync clients)
        ...
"""

from __future__ import annotations

from tests.vendors._core import (
    DEFAULT_TOKENS,
    ApiError,
    Behaviour,
    ConnectionCut,
    RecordedRequest,
    VendorServer,
    aclose_chat_model,
)
from tests.vendors.anthropic_server import AnthropicServer
from tests.vendors.ollama_server import OllamaServer
from tests.vendors.openai_server import OpenAIServer

SERVERS: dict[str, type[VendorServer]] = {
    "openai": OpenAIServer,
    "openai_compatible": OpenAIServer,
    "anthropic": AnthropicServer,
    "ollama": OllamaServer,
}

__all__ = [
    "DEFAULT_TOKENS",
    "SERVERS",
    "AnthropicServer",
    "ApiError",
    "Behaviour",
    "ConnectionCut",
    "OllamaServer",
    "OpenAIServer",
    "RecordedRequest",
    "VendorServer",
    "aclose_chat_model",
]
