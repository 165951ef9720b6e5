"""A broker configured with every provider type, each pointed at its local stand-in process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from broker.app import create_app
from opentelemetry.trace import TracerProvider
from shared.clock import SystemClock
from shared.crypto.keyring import Keyring
from shared.runtime import Runtime, build_runtime
from shared.settings import Settings, make_settings

BROKER_ISSUER = "http://127.0.0.1:8000"
TENANT_A = "11111111-1111-1111-1111-111111111111"
TENANT_B = "33333333-3333-3333-3333-333333333333"
CLIENT = {"client_id": "broker", "client_secret": "broker-secret"}


def provider_settings(
    database_url: str,
    keyring: Keyring,
    *,
    corp: str,
    github: str,
    microsoft: str,
    google: str | None = None,
) -> Settings:
    providers: list[dict[str, Any]] = [
        {
            "id": "corp",
            "type": "oidc",
            "issuer": corp,
            "scopes": ["openid", "email", "profile"],
            "discovery_ttl": 0,
            **CLIENT,
        },
        {"id": "dev", "type": "dev"},
        {
            "id": "github",
            "type": "github",
            "base_url": github,
            "api_url": f"{github}/api/v3",
            "link_by_email": True,
            **CLIENT,
        },
        {
            "id": "github-acme",
            "type": "github",
            "display_name": "GitHub (acme)",
            "base_url": github,
            "api_url": f"{github}/api/v3",
            "allowed_organizations": ["acme"],
            "allowed_teams": ["partners/reviewers"],
            **CLIENT,
        },
        {
            "id": "microsoft",
            "type": "microsoft",
            "tenant": "common",
            "allowed_tenants": [TENANT_A, TENANT_B],
            "authority": microsoft,
            "graph_url": f"{microsoft}/graph",
            "link_by_email": True,  # even so, an unproven email never links (nOAuth)
            **CLIENT,
        },
        {
            "id": "retired",
            "type": "oidc",
            "issuer": corp,
            "disabled": True,
            **CLIENT,
        },
    ]
    if google is not None:
        providers += [
            {
                "id": "google",
                "type": "google",
                "issuer": google,
                "offline_access": True,
                "link_by_email": True,
                "discovery_ttl": 0,
                **CLIENT,
            },
            {
                "id": "google-corp",
                "type": "google",
                "issuer": google,
                "allowed_domains": ["corp.example"],
                "discovery_ttl": 0,
                **CLIENT,
            },
        ]
    return make_settings(
        issuer=BROKER_ISSUER,
        keyring=keyring,
        database_url=database_url,
        db_pool_size=4,
        periodic_jobs=False,
        providers=providers,
        clients=[
            {
                "id": "web",
                "redirect_uris": ["http://127.0.0.1:3000/callback"],
                "post_logout_redirect_uris": ["http://127.0.0.1:3000/signed-out"],
            }
        ],
    )


@asynccontextmanager
async def running_broker(
    settings: Settings, *, tracer_provider: TracerProvider | None = None
) -> AsyncIterator[tuple[Runtime, httpx2.AsyncClient]]:
    """A broker app in-process over a started runtime (with spans from ``tracer_provider``)."""
    runtime = build_runtime(settings, clock=SystemClock(), tracer_provider=tracer_provider)
    async with serving(runtime) as client:
        yield runtime, client


@asynccontextmanager
async def serving(runtime: Runtime) -> AsyncIterator[httpx2.AsyncClient]:
    """The app over ``runtime``, started here and stopped afterwards."""
    await runtime.start()
    try:
        transport = httpx2.ASGITransport(app=create_app(runtime))
        async with httpx2.AsyncClient(transport=transport, base_url=BROKER_ISSUER) as client:
            yield client
    finally:
        await runtime.stop()


def unique_email(name: str = "user") -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}@example.com"
