"""Whether each upstream answers, from a cached probe of the endpoints a sign-in needs.

What a probe reads is each provider's ``probe_steps``: discovery, then the JWKS it names
(OpenID providers: ``oidc``, ``google``, ``microsoft``); GitHub's REST API ``/meta`` (GitHub has
no discovery or JWKS); nothing for ``dev``, which the broker serves itself. A step runs only
once the step before it answered; the result says which step failed and why.

``GET /auth/oauth2/providers`` is public and polled by sign-in pages, and the admin listing
shows the same results, so neither may wait on an upstream or let callers drive requests to
one: a provider is probed at most once per ``ttl`` seconds, concurrent callers share that
probe, and a probe still running after ``timeout`` seconds (all its steps together) stops and
counts as unreachable.
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
class CheckResult:
    """One step of a probe: ``reachable`` None when it did not run (a step before it failed,
    or the probe ran out of time first)."""

    name: str
    reachable: bool | None
    error: str | None = None


@dataclass(frozen=True)
class ProbeResult:
    reachable: bool
    checked_at: dt.datetime
    reason: str | None = None
    checks: tuple[CheckResult, ...] = ()


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
        steps = provider.probe_steps()
        done: list[CheckResult] = []
        try:
            async with asyncio.timeout(self._timeout):
                for step in steps:
                    try:
                        await step.read()
                    except ProviderError as exc:
                        done.append(CheckResult(step.name, False, str(exc)))
                        break
                    done.append(CheckResult(step.name, True))
        except TimeoutError:
            name = steps[len(done)].name  # the step the deadline interrupted
            done.append(CheckResult(name, False, f"{name}: timed out"))
        checks = (*done, *(CheckResult(step.name, None) for step in steps[len(done) :]))
        failed = next((check for check in checks if check.reachable is False), None)
        result = ProbeResult(
            reachable=failed is None,
            checked_at=self._clock.now(),
            reason=failed.error if failed is not None else None,
            checks=checks,
        )
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
