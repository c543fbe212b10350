"""The provider registry: provider names to the objects that stream their answers."""

from __future__ import annotations

from collections.abc import Iterator

from streamforge.chains.providers.base import Provider
from streamforge.chains.providers.simulated import SimulatedProvider
from streamforge.config.settings import Settings
from streamforge.errors import ValidationFailed


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
    registry = ProviderRegistry(default=settings.llm.provider)
    simulated = settings.llm.simulated
    registry.register(
        SimulatedProvider(
            delay=settings.streaming.simulated_delay,
            answer=simulated.answer,
            min_words=simulated.min_words,
        )
    )
    return registry
