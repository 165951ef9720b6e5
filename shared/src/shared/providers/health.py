"""Whether each upstream answers, from a cached probe (discovery, or GitHub's ``/meta``).

``GET /auth/oauth2/providers`` is public and polled by sign-in pages, so it must never wait on
an upstream or let callers drive requests to one: a provider is probed at most once per
``ttl`` seconds, concurrent callers share that probe, and a probe that takes longer than
``timeout`` counts as unreachable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from shared.clock import Clock
from shared.providers.base import Provider
from shared.providers.errors import ProviderError

log = structlog.get_logger("shared.providers.health")
PROBE_TTL = 60.0
PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class ProbeResult:
    reachable: bool
    checked_at: dt.datetime
    reason: str | None = None


class ProviderHealth:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        clock: Clock,
        *,
        ttl: float = PROBE_TTL,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self._providers = providers
        self._clock = clock
        self._ttl = ttl
        self._timeout = timeout
        self._results: dict[str, ProbeResult] = {}
        self._running: dict[str, asyncio.Task[ProbeResult]] = {}

    async def _probe(self, provider: Provider) -> ProbeResult:
        try:
            await asyncio.wait_for(provider.probe(), self._timeout)
        except TimeoutError:
            result = ProbeResult(False, self._clock.now(), "timed out")
        except ProviderError as exc:
            result = ProbeResult(False, self._clock.now(), str(exc))
        else:
            result = ProbeResult(True, self._clock.now())
        if not result.reachable:
            log.info("provider.unreachable", provider=provider.id, reason=result.reason)
        self._results[provider.id] = result
        return result

    def _fresh(self, provider_id: str) -> ProbeResult | None:
        result = self._results.get(provider_id)
        if result is None:
            return None
        age = (self._clock.now() - result.checked_at).total_seconds()
        return result if age < self._ttl else None

    async def status(self, provider_id: str) -> ProbeResult:
        cached = self._fresh(provider_id)
        if cached is not None:
            return cached
        task = self._running.get(provider_id)
        if task is None:
            task = asyncio.ensure_future(self._probe(self._providers[provider_id]))
            self._running[provider_id] = task
            task.add_done_callback(lambda _: self._running.pop(provider_id, None))
        return await asyncio.shield(task)

    async def statuses(self) -> dict[str, ProbeResult]:
        ids = list(self._providers)
        results = await asyncio.gather(*(self.status(provider_id) for provider_id in ids))
        return dict(zip(ids, results, strict=True))
