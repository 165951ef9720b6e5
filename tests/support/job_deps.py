"""Job dependencies for tests that run job bodies in the test process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from shared.clock import Clock
from shared.jobs.base import JobDeps
from shared.process_resources import ProcessResources
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
    async with ProcessResources.opened(
        settings, clock, pool_size=4, redis_url=redis_url
    ) as resources:
        yield resources.job_deps(**fields)
