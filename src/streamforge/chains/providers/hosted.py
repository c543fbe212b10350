"""The hosted providers, each an official LangChain partner package.

Imported lazily: a deployment that never talks to Anthropic does not need its package, and a
missing one fails with a message naming what to install.
"""

from __future__ import annotations

import importlib
from typing import Any

from streamforge.chains.providers.base import GenerationRequest
from streamforge.chains.providers.langchain import LangChainProvider
from streamforge.config.settings import AnthropicSettings, OllamaSettings, OpenAISettings
from streamforge.errors import ConfigurationError


def _import(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"the {module.split('_', 1)[1]} provider needs the package {package!r}: "
            f"pip install {package}"
        ) from exc


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def openai_provider(settings: OpenAISettings) -> LangChainProvider:
    module = _import("langchain_openai", "langchain-openai")
    model = module.ChatOpenAI(
        model=settings.model,
        api_key=settings.api_key or "not-set",
        base_url=settings.base_url,
        timeout=settings.timeout,
        max_retries=0,  # StreamForge retries and falls back itself
        stream_usage=True,
    )

    def options(request: GenerationRequest) -> dict[str, Any]:
        return _drop_none(
            {
                "model": request.model or settings.model,
                "temperature": request.temperature,
                "max_completion_tokens": request.max_tokens or settings.max_tokens,
                "stop": request.stop or None,
            }
        )

    return LangChainProvider(
        "openai",
        model,
        default_model=settings.model,
        call_options=options,
        context_window=settings.context_window,
        default_max_tokens=settings.max_tokens,
    )


def anthropic_provider(settings: AnthropicSettings) -> LangChainProvider:
    module = _import("langchain_anthropic", "langchain-anthropic")
    kwargs: dict[str, Any] = {
        "model": settings.model,
        "api_key": settings.api_key or "not-set",
        "max_retries": 0,
        "default_request_timeout": settings.timeout,
        "max_tokens": settings.max_tokens,
    }
    if settings.base_url:
        kwargs["base_url"] = settings.base_url
    model = module.ChatAnthropic(**kwargs)

    def options(request: GenerationRequest) -> dict[str, Any]:
        return _drop_none(
            {
                "model": request.model or settings.model,
                "temperature": request.temperature,
                "max_tokens": request.max_tokens or settings.max_tokens,
                "stop": request.stop or None,
            }
        )

    return LangChainProvider(
        "anthropic",
        model,
        default_model=settings.model,
        call_options=options,
        context_window=settings.context_window,
        default_max_tokens=settings.max_tokens,
    )


def ollama_provider(settings: OllamaSettings) -> LangChainProvider:
    module = _import("langchain_ollama", "langchain-ollama")
    model = module.ChatOllama(
        model=settings.model,
        base_url=settings.base_url,
        client_kwargs={"timeout": settings.timeout},
    )

    def options(request: GenerationRequest) -> dict[str, Any]:
        return {
            "model": request.model or settings.model,
            "options": _drop_none(
                {
                    "temperature": request.temperature,
                    "num_predict": request.max_tokens or settings.max_tokens,
                    "stop": request.stop or None,
                }
            ),
        }

    return LangChainProvider(
        "ollama",
        model,
        default_model=settings.model,
        call_options=options,
        context_window=settings.context_window,
        default_max_tokens=settings.max_tokens,
    )
