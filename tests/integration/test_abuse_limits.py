"""Abuse limits (docs/security.md "Abuse limits"): failed client authentications and login
starts are counted per source address, in Redis and in-process alike; the right secret from
another address keeps working; the window's end lets everyone in again; a Redis outage throttles
nothing."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import structlog
from broker.app import create_app
from shared.clock import FrozenClock
from shared.crypto.keyring import Keyring
from shared.db.tables import AUDIT_TABLE, LOGIN_STATES
from shared.runtime import Runtime, build_runtime
from shared.settings import Settings
from sqlalchemy import func, select

from tests.conftest import BROKER_ISSUER, WEB_REDIRECT, broker_settings
from tests.support.flows import pkce_pair
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

BACKEND_SECRET = "backend-secret-at-least-32-characters"
WINDOW = 300
# 2030-01-01T00:00:00Z is a multiple of WINDOW: the tests start 100 s into a window.
START = dt.datetime(2030, 1, 1, 0, 1, 40, tzinfo=dt.UTC)
# Addresses unique within the run: the run's database keeps every test's audit rows.
_hosts = itertools.count(1)


def fresh_address() -> str:
    n = next(_hosts)
    return f"203.0.{113 + n // 250}.{n % 250 + 1}"


@pytest.fixture(params=["redis", "in_process"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Where the counters live: Redis under a prefix of this test's own, or this process."""
    if request.param == "in_process":
        return {}
    return {
        "redis_url": request.getfixturevalue("redis_url"),
        "abuse_key_prefix": f"test-limits:{uuid.uuid4().hex}",
    }


@asynccontextmanager
async def running(settings: Settings, clock: FrozenClock) -> AsyncIterator[Runtime]:
    runtime = build_runtime(settings, clock=clock)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


@asynccontextmanager
async def browser_at(runtime: Runtime, address: str) -> AsyncIterator[httpx2.AsyncClient]:
    """A client of the in-process app whose requests come from ``address``."""
    transport = httpx2.ASGITransport(app=create_app(runtime), client=(address, 41000))
    async with httpx2.AsyncClient(transport=transport, base_url=BROKER_ISSUER) as client:
        yield client


async def token_request(client: httpx2.AsyncClient, client_id: str, secret: str) -> httpx2.Response:
    return await client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": "not-a-refresh-token"},
        auth=(client_id, secret),
    )


def authenticated(response: httpx2.Response) -> bool:
    """The client got past authentication: the bogus refresh token is what was refused."""
    return response.status_code == 400 and response.json()["error"] == "invalid_grant"


def assert_throttled(response: httpx2.Response) -> int:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "temporarily_unavailable"
    assert "www-authenticate" not in response.headers  # not a verdict on the credentials
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= WINDOW
    return retry_after


async def throttle_audits(runtime: Runtime, ip: str) -> list[Any]:
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(
            select(AUDIT_TABLE).where(
                AUDIT_TABLE.c.action == "client.auth_throttled", AUDIT_TABLE.c.ip == ip
            )
        )
        return list(rows)


async def test_a_brute_force_on_a_client_secret_is_throttled_but_not_its_servers(
    database_url: str, upstream_idp: str, keyring: Keyring, store: dict[str, Any]
) -> None:
    settings = broker_settings(
        database_url, upstream_idp, keyring, client_auth_failure_limit=10, **store
    )
    attacker, server = fresh_address(), fresh_address()
    async with (
        running(settings, FrozenClock(START)) as runtime,
        browser_at(runtime, attacker) as guesser,
        browser_at(runtime, server) as servers,
    ):
        statuses = []
        for attempt in range(500):
            response = await token_request(guesser, "backend", f"guess-{attempt}")
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert assert_throttled(response) == WINDOW - 100
        assert statuses[:10] == [401] * 10
        assert statuses[10:] == [429] * 490
        # Throttled means the secret is not even looked at: the right one gets the same 429.
        assert_throttled(await token_request(guesser, "backend", BACKEND_SECRET))

        # The client's own servers, elsewhere, are untouched (every endpoint).
        assert authenticated(await token_request(servers, "backend", BACKEND_SECRET))
        introspection = await servers.post(
            "/introspect", data={"token": "x"}, auth=("backend", BACKEND_SECRET)
        )
        assert introspection.json() == {"active": False}
        revocation = await servers.post(
            "/revoke", data={"token": "x"}, auth=("backend", BACKEND_SECRET)
        )
        assert revocation.status_code == 200
        # Another client from the attacker's address is another pair.
        es_client = await token_request(
            guesser, "es-client", "es-secret-at-least-32-characters-long"
        )
        assert authenticated(es_client)

        # One audit row for the whole attack, not one per refused request.
        (audit,) = await throttle_audits(runtime, attacker)
        assert audit.client_id == "backend"
        assert audit.actor == "anonymous"
        assert audit.data["scope"] == "client_address"
        assert audit.data["until"] == "2030-01-01T00:05:00Z"


async def test_every_client_authenticating_endpoint_counts_failures(
    database_url: str, upstream_idp: str, keyring: Keyring, store: dict[str, Any]
) -> None:
    settings = broker_settings(
        database_url, upstream_idp, keyring, client_auth_failure_limit=4, **store
    )
    attacker = fresh_address()
    wrong = ("backend", "wrong-secret")
    async with (
        running(settings, FrozenClock(START)) as runtime,
        browser_at(runtime, attacker) as guesser,
    ):
        failures = [
            await guesser.post("/token", data={"grant_type": "refresh_token"}, auth=wrong),
            await guesser.post("/introspect", data={"token": "x"}, auth=wrong),
            await guesser.post("/revoke", data={"token": "x"}, auth=wrong),
            await guesser.post(
                "/auth/oauth2/refresh",
                json={"refresh_token": "x", "client_id": "backend", "client_secret": "wrong"},
            ),
        ]
        assert [response.status_code for response in failures] == [401] * 4
        assert_throttled(await guesser.post("/introspect", data={"token": "x"}, auth=wrong))
        assert_throttled(
            await guesser.post(
                "/auth/oauth2/refresh",
                json={"refresh_token": "x"},
                auth=("backend", BACKEND_SECRET),
            )
        )


async def test_a_throttled_client_address_is_let_in_when_the_window_ends(
    database_url: str, upstream_idp: str, keyring: Keyring, store: dict[str, Any]
) -> None:
    settings = broker_settings(
        database_url, upstream_idp, keyring, client_auth_failure_limit=3, **store
    )
    clock = FrozenClock(START)
    address = fresh_address()
    async with running(settings, clock) as runtime, browser_at(runtime, address) as client:
        for _ in range(3):
            assert (await token_request(client, "backend", "wrong")).status_code == 401
        retry_after = assert_throttled(await token_request(client, "backend", BACKEND_SECRET))
        clock.advance(retry_after - 1)
        assert_throttled(await token_request(client, "backend", BACKEND_SECRET))
        clock.advance(1)  # Retry-After said when: the next window starts from zero
        assert authenticated(await token_request(client, "backend", BACKEND_SECRET))
        assert (await token_request(client, "backend", "wrong")).status_code == 401


async def test_guesses_spread_over_addresses_hold_off_the_failing_ones_only(
    database_url: str, upstream_idp: str, keyring: Keyring, store: dict[str, Any]
) -> None:
    settings = broker_settings(
        database_url,
        upstream_idp,
        keyring,
        client_auth_failure_limit=10,
        client_auth_client_failure_limit=20,
        **store,
    )
    botnet = [fresh_address() for _ in range(10)]
    async with running(settings, FrozenClock(START)) as runtime:
        for address in botnet:  # two guesses each: 20 in all, the client's budget
            async with browser_at(runtime, address) as bot:
                for _ in range(2):
                    assert (await token_request(bot, "backend", "guess")).status_code == 401
        for address in botnet:  # each address now waits for the next window
            async with browser_at(runtime, address) as bot:
                assert_throttled(await token_request(bot, "backend", "guess"))
        # A fresh address is still heard: the right secret works, a wrong one fails once.
        async with browser_at(runtime, fresh_address()) as server:
            assert authenticated(await token_request(server, "backend", BACKEND_SECRET))
        async with browser_at(runtime, newcomer := fresh_address()) as bot:
            assert (await token_request(bot, "backend", "guess")).status_code == 401
            assert_throttled(await token_request(bot, "backend", "guess"))
        (audit,) = await throttle_audits(runtime, botnet[-1])  # the failure that reached it
        assert audit.data["scope"] == "client" and audit.client_id == "backend"
        assert await throttle_audits(runtime, newcomer) == []


async def test_one_address_guessing_across_client_ids_is_throttled(
    database_url: str, upstream_idp: str, keyring: Keyring, store: dict[str, Any]
) -> None:
    settings = broker_settings(
        database_url, upstream_idp, keyring, client_auth_address_failure_limit=6, **store
    )
    attacker = fresh_address()
    async with running(settings, FrozenClock(START)) as runtime:
        async with browser_at(runtime, attacker) as guesser:
            for client_id in ("backend", "es-client", "nobody", "no-one", "who", "what"):
                assert (await token_request(guesser, client_id, "guess")).status_code == 401
            assert_throttled(
                await token_request(guesser, "es-client", "es-secret-at-least-32-characters-long")
            )
            malformed = await guesser.post(
                "/token", data={"grant_type": "x"}, headers={"Authorization": "Basic %%%"}
            )
            assert_throttled(malformed)
        async with browser_at(runtime, fresh_address()) as server:
            assert authenticated(await token_request(server, "backend", BACKEND_SECRET))
        (audit,) = await throttle_audits(runtime, attacker)
        assert audit.data["scope"] == "address" and audit.client_id is None


def authorize_params(marker: str, n: int) -> dict[str, str]:
    _verifier, challenge = pkce_pair()
    return {
        "response_type": "code",
        "client_id": "web",
        "redirect_uri": WEB_REDIRECT,
        "scope": "openid",
        "state": f"{marker}-{n}",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "provider": "dev",
    }


async def login_states(runtime: Runtime, marker: str) -> int:
    async with runtime.engine.connect() as connection:
        count = await connection.scalar(
            select(func.count())
            .select_from(LOGIN_STATES)
            .where(LOGIN_STATES.c.client_state.startswith(f"{marker}-"))
        )
        return int(count or 0)


async def test_a_login_start_flood_from_one_address_stops_filling_login_states(
    database_url: str, upstream_idp: str, keyring: Keyring, store: dict[str, Any]
) -> None:
    settings = broker_settings(database_url, upstream_idp, keyring, login_start_limit=20, **store)
    clock = FrozenClock(START)
    marker = uuid.uuid4().hex
    flooder, neighbour = fresh_address(), fresh_address()
    async with (
        running(settings, clock) as runtime,
        browser_at(runtime, flooder) as flood,
        browser_at(runtime, neighbour) as other,
    ):
        statuses = []
        for n in range(60):
            response = await flood.get("/authorize", params=authorize_params(marker, n))
            statuses.append(response.status_code)
        assert statuses == [302] * 20 + [429] * 40
        assert await login_states(runtime, marker) == 20
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["retry-after"] == str(WINDOW - 100)
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        # The provider's own login path and a form POST to /authorize are the same door.
        assert (
            await flood.get("/auth/oauth2/dev/login", params=authorize_params(marker, 60))
        ).status_code == 429
        assert (
            await flood.post("/authorize", data=authorize_params(marker, 61))
        ).status_code == 429
        assert await login_states(runtime, marker) == 20

        # Another address starts logins as usual.
        started = await other.get("/authorize", params=authorize_params(marker, 62))
        assert started.status_code == 302
        assert await login_states(runtime, marker) == 21

        # The next window lets the flooding address start again.
        clock.advance(WINDOW - 100)
        again = await flood.get("/authorize", params=authorize_params(marker, 63))
        assert again.status_code == 302


async def test_invalid_authorization_requests_are_not_counted_as_login_starts(
    database_url: str, upstream_idp: str, keyring: Keyring
) -> None:
    settings = broker_settings(database_url, upstream_idp, keyring, login_start_limit=3)
    marker = uuid.uuid4().hex
    async with (
        running(settings, FrozenClock(START)) as runtime,
        browser_at(runtime, fresh_address()) as browser,
    ):
        for n in range(10):  # no PKCE: refused before any login state, so not counted
            params = authorize_params(marker, n)
            del params["code_challenge"], params["code_challenge_method"]
            refused = await browser.get("/authorize", params=params)
            assert (
                refused.status_code == 302
                and "error=invalid_request" in refused.headers["location"]
            )
        for n in range(10, 13):
            assert (
                await browser.get("/authorize", params=authorize_params(marker, n))
            ).status_code == 302
        assert await login_states(runtime, marker) == 3


async def test_a_redis_outage_throttles_nothing(
    database_url: str, upstream_idp: str, keyring: Keyring
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = broker_settings(
        database_url,
        upstream_idp,
        keyring,
        redis_url=dead_redis,
        client_auth_failure_limit=2,
        client_auth_address_failure_limit=2,
        login_start_limit=2,
    )
    marker = uuid.uuid4().hex
    with structlog.testing.capture_logs() as logs:
        async with (
            running(settings, FrozenClock(START)) as runtime,
            browser_at(runtime, fresh_address()) as client,
        ):
            for _ in range(10):
                assert (await token_request(client, "backend", "wrong")).status_code == 401
            assert authenticated(await token_request(client, "backend", BACKEND_SECRET))
            for n in range(10):
                started = await client.get("/authorize", params=authorize_params(marker, n))
                assert started.status_code == 302
    warnings = [entry for entry in logs if entry["event"] == "abuse_limits.store_unavailable"]
    # Once per pause (the frozen clock never ends it), not once per request.
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"


async def test_a_limit_of_zero_is_off(
    database_url: str, upstream_idp: str, keyring: Keyring
) -> None:
    settings = broker_settings(
        database_url,
        upstream_idp,
        keyring,
        client_auth_failure_limit=0,
        client_auth_address_failure_limit=0,
        client_auth_client_failure_limit=0,
        login_start_limit=0,
    )
    marker = uuid.uuid4().hex
    async with (
        running(settings, FrozenClock(START)) as runtime,
        browser_at(runtime, fresh_address()) as client,
    ):
        for _ in range(50):
            assert (await token_request(client, "backend", "wrong")).status_code == 401
        for n in range(50):
            started = await client.get("/authorize", params=authorize_params(marker, n))
            assert started.status_code == 302


async def test_ipv6_addresses_of_one_64_count_as_one_address(
    database_url: str, upstream_idp: str, keyring: Keyring
) -> None:
    settings = broker_settings(database_url, upstream_idp, keyring, client_auth_failure_limit=3)
    network = f"2001:db8:{next(_hosts):x}:1"
    async with running(settings, FrozenClock(START)) as runtime:
        for host in range(1, 4):  # a new address for every guess, all in one /64
            async with browser_at(runtime, f"{network}::{host}") as guesser:
                assert (await token_request(guesser, "backend", "guess")).status_code == 401
        async with browser_at(runtime, f"{network}:ffff:ffff:ffff:ffff") as guesser:
            assert_throttled(await token_request(guesser, "backend", BACKEND_SECRET))
        async with browser_at(runtime, f"2001:db8:{next(_hosts):x}:2::1") as server:
            assert authenticated(await token_request(server, "backend", BACKEND_SECRET))
        (audit,) = await throttle_audits(runtime, f"{network}::/64")
        assert audit.data["scope"] == "client_address"
