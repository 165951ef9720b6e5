"""Fixtures shared by every tier: the run's PostgreSQL database, Redis, settings, the app."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from broker.app import create_app
from shared.client_tls import client_tls_context
from shared.clock import SystemClock
from shared.crypto.keyring import Keyring
from shared.db.migrate import upgrade_to_head
from shared.runtime import Runtime, build_runtime
from shared.settings import Settings, make_settings

from tests.support.databases import (
    ServiceUnavailable,
    fresh_database,
    postgres_server_url,
    redis_server_url,
)
from tests.support.processes import free_port, run_process
from tests.support.properties import register_profiles

# Hypothesis: the bounded ``ci`` profile, or HYPOTHESIS_PROFILE=fuzz for a long run.
register_profiles(os.environ.get("HYPOTHESIS_PROFILE"))

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A PostgreSQL database for this run, built with ``alembic upgrade head``, then dropped."""
    try:
        with postgres_server_url() as server, fresh_database(server) as url:
            upgrade_to_head(url)
            yield url
    except ServiceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    try:
        with redis_server_url() as url:
            yield url
    except ServiceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


def _stand_in(module: str, ready_path: str, *extra: str) -> Iterator[str]:
    """Run ``python -m standins.<module>`` on a free port until the session ends."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with run_process(
        [sys.executable, "-m", f"standins.{module}", "--port", str(port), *extra],
        ready_url=f"{url}{ready_path}",
        cwd=str(ROOT),
    ):
        yield url


@pytest.fixture(scope="session")
def upstream_idp() -> Iterator[str]:
    """A real OpenID Provider process on 127.0.0.1 (standins/oidc.py)."""
    yield from _stand_in("oidc", "/.well-known/openid-configuration")


@pytest.fixture(scope="session")
def github_upstream() -> Iterator[str]:
    """github.com and its API played by standins/github.py."""
    yield from _stand_in("github", "/api/v3/meta")


@pytest.fixture(scope="session")
def microsoft_upstream() -> Iterator[str]:
    """Microsoft Entra ID v2.0 and a bit of Graph: standins/microsoft.py."""
    yield from _stand_in("microsoft", "/common/v2.0/.well-known/openid-configuration")


@pytest.fixture(scope="session")
def google_upstream() -> Iterator[str]:
    """The OpenID Provider stand-in in its Google flavour."""
    yield from _stand_in("oidc", "/.well-known/openid-configuration", "--google")


@pytest.fixture
async def idp(upstream_idp: str) -> AsyncIterator[httpx2.AsyncClient]:
    """A client for the upstream's control API, reset before each test."""
    async with httpx2.AsyncClient(base_url=upstream_idp, verify=client_tls_context()) as client:
        await client.post("/_control/reset")
        yield client


BROKER_ISSUER = "http://127.0.0.1:8000"
WEB_REDIRECT = "http://127.0.0.1:3000/callback"


@pytest.fixture(scope="session")
def keyring() -> Keyring:
    """One keyring per run: the run's database holds keys sealed with it."""
    return Keyring.generate("test1")


def corp_provider(upstream: str, **overrides: Any) -> dict[str, Any]:
    """``corp``, the upstream OIDC double as a provider (``overrides`` add or replace)."""
    return {
        "id": "corp",
        "type": "oidc",
        "display_name": "Corp SSO",
        "issuer": upstream,
        "client_id": "broker",
        "client_secret": "broker-secret",
        "scopes": ["openid", "email", "profile", "offline_access"],
        "discovery_ttl": 0,
        **overrides,
    }


def broker_settings(
    database_url: str, upstream: str, keyring: Keyring, **overrides: object
) -> Settings:
    """Two providers (the upstream OIDC double and dev) and four clients."""
    values: dict[str, object] = {
        "issuer": BROKER_ISSUER,
        "keyring": keyring,
        "database_url": database_url,
        # Small pools: several brokers live at once in a test run, and PostgreSQL allows 100
        # connections (a runtime opens up to 3 x this). Concurrency tests still queue on them.
        "db_pool_size": 6,
        # Tests run the jobs they are about; no background timer refreshes tokens under them.
        "periodic_jobs": False,
        "providers": [corp_provider(upstream), {"id": "dev", "type": "dev"}],
        "clients": [
            {
                "id": "web",
                "redirect_uris": [WEB_REDIRECT, "http://127.0.0.1:3000/other"],
                "post_logout_redirect_uris": ["http://127.0.0.1:3000/signed-out"],
            },
            {
                # The admin console: the one test client allowed to ask for the admin scope.
                "id": "console",
                "redirect_uris": ["http://127.0.0.1:3000/console"],
                "scopes": ["openid", "email", "profile", "offline_access", "admin"],
            },
            {
                "id": "backend",
                "secret": "backend-secret-at-least-32-characters",
                "redirect_uris": ["http://127.0.0.1:4000/cb"],
                "audience": ["https://api.internal"],
            },
            {
                "id": "es-client",
                "secret": "es-secret-at-least-32-characters-long",
                "redirect_uris": ["http://127.0.0.1:5000/cb"],
                "id_token_signed_response_alg": "ES256",
            },
        ],
    }
    values.update(overrides)
    return make_settings(**values)


@pytest.fixture
async def runtime(database_url: str, upstream_idp: str, keyring: Keyring) -> AsyncIterator[Runtime]:
    runtime = build_runtime(
        broker_settings(database_url, upstream_idp, keyring), clock=SystemClock()
    )
    await runtime.start()
    yield runtime
    await runtime.stop()


@pytest.fixture
async def broker(runtime: Runtime) -> AsyncIterator[httpx2.AsyncClient]:
    """The broker app in-process (the runtime is started by the fixture above)."""
    app = create_app(runtime)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url=BROKER_ISSUER) as client:
        yield client
