"""Job dependencies for tests that run job bodies in the test process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from shared.clock import Clock, SystemClock
from shared.db.database import create_engine
from shared.jobs.base import JobDeps
from shared.jobs.provider_slots import ProviderSlots
from shared.providers.factory import ProviderDeps, build_providers
from shared.runtime import build_http_client
from shared.settings import Settings, make_settings


@asynccontextmanager
async def job_deps(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    redis_url: str | None = None,
    **fields: Any,
) -> AsyncIterator[JobDeps]:
    """Real engine, HTTP client and providers for ``settings``; closed afterwards."""
    settings = settings or make_settings()
    clock = clock or SystemClock()
    http = build_http_client()
    engine = create_engine(settings.database_url, pool_size=4)
    redis: Redis | None = Redis.from_url(redis_url) if redis_url else None
    providers = build_providers(
        ProviderDeps(settings=settings, http=http, clock=clock, keyring=settings.keyring)
    )
    deps = JobDeps(
        settings=settings,
        engine=engine,
        http=http,
        clock=clock,
        providers=providers,
        redis=redis,
        slots=ProviderSlots.from_settings(settings),
        **fields,
    )
    try:
        yield deps
    finally:
        if redis is not None:
            await redis.aclose()
        for provider in providers.values():
            await provider.aclose()
        await http.aclose()
        await engine.dispose()
