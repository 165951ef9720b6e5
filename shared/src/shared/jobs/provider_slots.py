"""Per-provider concurrency limits for upstream calls made by jobs, within one process.

A backlog of thousands of expiring tokens must not become thousands of concurrent requests to
one upstream: each provider gets ``refresh_concurrency`` slots per worker process (the provider
setting), so N worker processes make at most N * slots calls to it at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from shared.settings import Settings

DEFAULT_SLOTS = 4


class ProviderSlots:
    """Semaphores per provider id, created on first use (inside the running event loop)."""

    def __init__(self, limits: Mapping[str, int] | None = None) -> None:
        self._limits = dict(limits or {})
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderSlots:
        return cls(
            {
                provider.id: provider.refresh_concurrency
                for provider in settings.providers
                if hasattr(provider, "refresh_concurrency")
            }
        )

    def limit(self, provider_id: str) -> int:
        return self._limits.get(provider_id, DEFAULT_SLOTS)

    @asynccontextmanager
    async def slot(self, provider_id: str) -> AsyncIterator[None]:
        """Hold one of the provider's slots for the duration of the block."""
        semaphore = self._semaphores.get(provider_id)
        if semaphore is None:
            semaphore = self._semaphores[provider_id] = asyncio.Semaphore(self.limit(provider_id))
        async with semaphore:
            yield
