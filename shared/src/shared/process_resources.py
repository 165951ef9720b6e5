"""What every process of the broker builds from its settings, in one place, and tears down in one.

The broker, the sync worker, the tests that run job bodies and the benchmarks all need the
same things: the outbound HTTP client, the database engine, the upstream providers over that
client, the revocation publisher, a Redis client when Redis is configured, the store of the
signing keys (the broker signs tokens with it, the worker Logout Tokens), and the job bodies'
dependencies over all of these. ``ProcessResources.build`` makes them without I/O;
``aclose`` closes them in the reverse order of their use (providers before the HTTP client they
share, the engine last).

Given the process's tracer provider (tracing on: ``shared.tracing.install``), the engine, the
HTTP client and the providers' token calls make spans from it; without one, none of them holds
anything of tracing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
from opentelemetry.trace import Tracer, TracerProvider
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.client_tls import client_tls_context
from shared.clock import Clock, SystemClock
from shared.db.database import create_engine
from shared.jobs.base import JobDeps, JobQueue
from shared.jobs.provider_slots import ProviderSlots
from shared.providers.base import Provider
from shared.providers.factory import ProviderDeps, build_providers
from shared.revocations import RevocationPublisher, build_revocation_publisher
from shared.settings import Settings
from shared.signing_keys import KeyStore
from shared.tracing import http_client as http_tracing
from shared.tracing.database import trace_engine
from shared.tracing.spans import tracer_of

USER_AGENT = "oidc-broker/0.1"


def build_http_client(tracer: Tracer | None = None) -> httpx2.AsyncClient:
    """The outbound HTTP client of a process (upstream calls): no redirects followed; a span
    per request when given a ``tracer``."""
    options: dict[str, Any] = {
        "timeout": httpx2.Timeout(10.0),
        "follow_redirects": False,
        "headers": {"User-Agent": USER_AGENT},
        "verify": client_tls_context(),
    }
    if tracer is None:
        return httpx2.AsyncClient(**options)
    return http_tracing.TracedAsyncClient(tracer=tracer, **options)


@dataclass
class ProcessResources:
    settings: Settings
    clock: Clock
    http: httpx2.AsyncClient
    engine: AsyncEngine
    providers: dict[str, Provider]
    revocations: RevocationPublisher
    # A client for the job bodies that talk to Redis (the audit relay) and the worker's health
    # checks; None without Redis. It connects on first use.
    redis: Redis | None
    # The signing keys, empty until loaded: the broker's key maintenance keeps them current,
    # the jobs that sign reload them from the database before they do.
    keys: KeyStore
    # The process's tracer provider when tracing is on (docs/configuration.md "Tracing").
    tracer_provider: TracerProvider | None = None

    def tracer(self, name: str) -> Tracer | None:
        """A tracer for one component, or None when tracing is off."""
        return tracer_of(self.tracer_provider, name)

    @classmethod
    def build(
        cls,
        settings: Settings,
        clock: Clock | None = None,
        *,
        pool_size: int | None = None,
        redis_url: str | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> ProcessResources:
        """Everything, constructed without I/O. ``pool_size`` overrides the settings' pool
        (tests and benchmarks keep theirs small); ``redis_url`` names a Redis for the job
        bodies when the settings do not; ``tracer_provider`` turns spans on."""
        clock = clock or SystemClock()
        http_tracer = tracer_of(tracer_provider, http_tracing.TRACER_NAME)
        http = build_http_client(http_tracer)
        engine = create_engine(settings.database_url, pool_size=pool_size or settings.db_pool_size)
        if tracer_provider is not None:
            trace_engine(engine, tracer_provider)
        redis_url = redis_url or settings.redis_url
        return cls(
            settings=settings,
            clock=clock,
            http=http,
            engine=engine,
            providers=build_providers(
                ProviderDeps(
                    settings=settings,
                    http=http,
                    clock=clock,
                    keyring=settings.keyring,
                    tracer=http_tracer,
                )
            ),
            revocations=build_revocation_publisher(settings.redis_url, settings.revocation_stream),
            redis=(
                Redis.from_url(
                    redis_url,
                    socket_timeout=5,
                    socket_connect_timeout=2,
                    health_check_interval=10,
                )
                if redis_url
                else None
            ),
            tracer_provider=tracer_provider,
            keys=KeyStore(settings.keyring, clock, settings.signing_algorithms),
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def opened(
        cls, settings: Settings, clock: Clock | None = None, **options: Any
    ) -> AsyncIterator[ProcessResources]:
        """``build`` for a block (tests, benchmarks): closed when it ends."""
        resources = cls.build(settings, clock, **options)
        try:
            yield resources
        finally:
            await resources.aclose()

    def job_deps(self, *, queue: JobQueue | None = None, **fields: Any) -> JobDeps:
        """The job bodies' dependencies over these resources (``queue``: where follow-up jobs
        go; ``fields``: anything ``JobDeps`` takes, overriding these, such as a seeded
        ``rng``)."""
        values: dict[str, Any] = {
            "settings": self.settings,
            "engine": self.engine,
            "http": self.http,
            "clock": self.clock,
            "providers": self.providers,
            "queue": queue,
            "redis": self.redis,
            "revocations": self.revocations,
            "slots": ProviderSlots.from_settings(self.settings),
            "keys": self.keys,
        }
        return JobDeps(**{**values, **fields})

    async def aclose(self) -> None:
        await self.revocations.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        for provider in self.providers.values():
            await provider.aclose()
        await self.http.aclose()
        await self.engine.dispose()
