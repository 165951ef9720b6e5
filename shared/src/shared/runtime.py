"""The objects a process shares: built from settings without I/O, started in the lifespan.

Nothing is created at import time; entry points call ``load_settings`` once, build a ``Runtime``
and pass narrow pieces of it down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx2
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.clock import Clock, SystemClock
from shared.db.database import create_engine
from shared.db.hot_path import HotPathPool, create_hot_path_pool
from shared.jobs.base import JobDeps
from shared.jobs.provider_slots import ProviderSlots
from shared.jobs.queue import ArqJobQueue, InProcessJobQueue, build_job_queue
from shared.jobs.schedule import PeriodicScheduler, periodic_jobs
from shared.key_rotation import KeyMaintainer, KeySchedule
from shared.providers.base import Provider
from shared.providers.factory import ProviderDeps, build_providers
from shared.providers.health import ProviderHealth
from shared.refresh_rotation import RotationPolicy
from shared.revocations import RevocationPublisher, build_revocation_publisher
from shared.settings import Settings
from shared.signing_keys import KeyStore
from shared.window_counters import (
    LocalWindowCounters,
    RedisWindowCounters,
    build_window_counters,
)

USER_AGENT = "oidc-broker/0.1"


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    http: httpx2.AsyncClient
    clock: Clock
    providers: dict[str, Provider]
    provider_health: ProviderHealth
    keys: KeyStore
    key_maintainer: KeyMaintainer
    jobs: ArqJobQueue | InProcessJobQueue
    rotation: RotationPolicy
    revocations: RevocationPublisher
    # The abuse limits' counters: Redis when configured, else this process's (fail open).
    abuse_counters: RedisWindowCounters | LocalWindowCounters
    # PostgreSQL only: raw psycopg connections for one-statement hot paths (refresh rotation).
    hot_path: HotPathPool | None = None
    # The embedded default (no Redis): the periodic jobs run in this process.
    scheduler: PeriodicScheduler | None = None
    started: bool = field(default=False)
    stopping: bool = field(default=False)

    async def start(self) -> None:
        """Bring the signing keys up to date and load them, open the hot path, start timers."""
        await self.key_maintainer.run_once()
        if self.hot_path is not None:
            await self.hot_path.open()
        self.key_maintainer.start()
        if self.scheduler is not None:
            self.scheduler.start()
        self.started = True

    async def stop(self) -> None:
        self.stopping = True
        await self.key_maintainer.stop()
        if self.scheduler is not None:
            await self.scheduler.stop()
        await self.jobs.aclose()
        await self.revocations.aclose()
        await self.abuse_counters.aclose()
        if self.hot_path is not None:
            await self.hot_path.close()
        for provider in self.providers.values():
            await provider.aclose()
        await self.http.aclose()
        await self.engine.dispose()


def build_http_client() -> httpx2.AsyncClient:
    """The outbound HTTP client of a process (upstream calls): no redirects followed."""
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(10.0),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


def build_runtime(settings: Settings, *, clock: Clock | None = None) -> Runtime:
    clock = clock or SystemClock()
    http = build_http_client()
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    keys = KeyStore(settings.keyring, clock, settings.signing_algorithms)
    providers = build_providers(
        ProviderDeps(settings=settings, http=http, clock=clock, keyring=settings.keyring)
    )
    revocations = build_revocation_publisher(settings.redis_url, settings.revocation_stream)
    job_deps = JobDeps(
        settings=settings,
        engine=engine,
        http=http,
        clock=clock,
        providers=providers,
        revocations=revocations,
        slots=ProviderSlots.from_settings(settings),
    )
    # Redis-backed when BROKER_REDIS_URL is set (the sync workers run the jobs and the timer),
    # else the jobs and their timer run in this process.
    jobs = build_job_queue(settings, job_deps)
    scheduler = None
    if isinstance(jobs, InProcessJobQueue) and settings.periodic_jobs:
        scheduler = PeriodicScheduler(jobs, periodic_jobs(settings), clock, namespace="local")
    return Runtime(
        settings=settings,
        engine=engine,
        hot_path=create_hot_path_pool(settings.database_url, max_size=settings.db_pool_size),
        http=http,
        clock=clock,
        providers=providers,
        provider_health=ProviderHealth(providers, clock),
        keys=keys,
        key_maintainer=KeyMaintainer(
            engine,
            keys,
            settings.keyring,
            KeySchedule.from_settings(settings),
            clock,
            settings.key_reload_interval,
        ),
        rotation=RotationPolicy.build(
            settings.keyring,
            refresh_ttl=settings.refresh_token_ttl,
            reuse_interval=settings.refresh_reuse_interval,
            reuse_response=settings.reuse_response,
        ),
        revocations=revocations,
        abuse_counters=build_window_counters(settings.redis_url, clock),
        jobs=jobs,
        scheduler=scheduler,
    )
