"""The objects a process shares: built from settings without I/O, started in the lifespan.

Nothing is created at import time; entry points call ``load_settings`` once, build a ``Runtime``
and pass narrow pieces of it down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx2
from opentelemetry.trace import TracerProvider
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.clock import Clock
from shared.db.hot_path import HotPathPool, create_hot_path_pool
from shared.jobs.queue import ArqJobQueue, InProcessJobQueue, build_job_queue
from shared.jobs.schedule import PeriodicScheduler, periodic_jobs
from shared.key_rotation import KeyMaintainer, KeySchedule
from shared.process_resources import ProcessResources
from shared.providers.base import Provider
from shared.providers.health import ProviderHealth
from shared.refresh_rotation.groups import RotationGroups
from shared.refresh_rotation.policy import RotationPolicy
from shared.revocations import RevocationPublisher
from shared.settings import Settings
from shared.signing_keys import KeyStore
from shared.tracing import database as database_tracing
from shared.tracing import jobs as job_tracing
from shared.window_counters import (
    LocalWindowCounters,
    RedisWindowCounters,
    build_window_counters,
)


@dataclass
class Runtime:
    """The broker's process: the shared ``ProcessResources`` plus what only the broker runs
    (signing keys and their maintenance, the rotation policy, the job queue and timer, the
    abuse counters, the refresh hot path and its rotation groups)."""

    resources: ProcessResources
    provider_health: ProviderHealth
    keys: KeyStore
    key_maintainer: KeyMaintainer
    jobs: ArqJobQueue | InProcessJobQueue
    rotation: RotationPolicy
    # The abuse limits' counters: Redis when configured, else this process's (fail open).
    abuse_counters: RedisWindowCounters | LocalWindowCounters
    # PostgreSQL only: raw psycopg connections for one-statement hot paths (refresh rotation).
    hot_path: HotPathPool | None = None
    # On the hot path, unless BROKER_REFRESH_GROUP_COMMIT=0: concurrent rotations share a commit.
    rotation_groups: RotationGroups | None = None
    # The embedded default (no Redis): the periodic jobs run in this process.
    scheduler: PeriodicScheduler | None = None
    started: bool = field(default=False)
    stopping: bool = field(default=False)

    @property
    def settings(self) -> Settings:
        return self.resources.settings

    @property
    def engine(self) -> AsyncEngine:
        return self.resources.engine

    @property
    def http(self) -> httpx2.AsyncClient:
        return self.resources.http

    @property
    def clock(self) -> Clock:
        return self.resources.clock

    @property
    def providers(self) -> dict[str, Provider]:
        return self.resources.providers

    @property
    def revocations(self) -> RevocationPublisher:
        return self.resources.revocations

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
        await self.abuse_counters.aclose()
        if self.rotation_groups is not None:
            await self.rotation_groups.close()
        if self.hot_path is not None:
            await self.hot_path.close()
        await self.resources.aclose()


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Runtime:
    """The broker's process, without I/O; ``tracer_provider`` (tracing on) gives every
    component its spans."""
    resources = ProcessResources.build(settings, clock, tracer_provider=tracer_provider)
    clock = resources.clock
    # Redis-backed when BROKER_REDIS_URL is set (the sync workers run the jobs and the timer),
    # else the jobs and their timer run in this process.
    jobs = build_job_queue(
        settings, resources.job_deps(), tracer=resources.tracer(job_tracing.TRACER_NAME)
    )
    scheduler = None
    if isinstance(jobs, InProcessJobQueue) and settings.periodic_jobs:
        scheduler = PeriodicScheduler(jobs, periodic_jobs(settings), clock, namespace="local")
    keys = resources.keys
    rotation = RotationPolicy.build(
        settings.keyring,
        refresh_ttl=settings.refresh_token_ttl,
        reuse_interval=settings.refresh_reuse_interval,
        reuse_response=settings.reuse_response,
    )
    hot_path = create_hot_path_pool(
        settings.database_url,
        max_size=settings.db_pool_size,
        tracer=resources.tracer(database_tracing.HOT_PATH_TRACER),
    )
    return Runtime(
        resources=resources,
        hot_path=hot_path,
        rotation_groups=(
            RotationGroups(hot_path, rotation, max_size=settings.refresh_group_max)
            if hot_path is not None and settings.refresh_group_commit
            else None
        ),
        provider_health=ProviderHealth(resources.providers, clock),
        keys=keys,
        key_maintainer=KeyMaintainer(
            resources.engine,
            keys,
            settings.keyring,
            KeySchedule.from_settings(settings),
            clock,
            settings.key_reload_interval,
        ),
        rotation=rotation,
        abuse_counters=build_window_counters(settings.redis_url, clock),
        jobs=jobs,
        scheduler=scheduler,
    )
