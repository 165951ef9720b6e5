"""Delivering Logout Tokens to a real relying-party process that verifies them strictly against
the broker's JWKS (read over HTTP from a ``broker serve`` process on the same database): valid
tokens in the client's ID-token algorithm, retried with backoff while the relying party is down
and taken exactly once, given up after the bound, nothing lost while Redis is down, one sender
per delivery however many workers run. The job runs in the test process on a frozen clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from broker.app import create_app
from shared.auth_sessions import create_session, revoke_session
from shared.clock import FrozenClock
from shared.crypto.keyring import Keyring
from shared.db.tables import AUDIT_TABLE, USERS
from shared.jobs.backchannel_logout import (
    Attempt,
    BackchannelLogoutPayload,
    claim_due,
    deliver_backchannel_logouts,
    record_outcome,
)
from shared.jobs.base import JobDeps
from shared.runtime import build_runtime
from sqlalchemy import insert, select

from tests.conftest import broker_settings
from tests.support.backchannel import collect_past, deliveries_of, relying_party
from tests.support.job_deps import job_deps
from tests.support.processes import dev_broker_process, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RS_CLIENT, ES_CLIENT = "bcl-rp", "bcl-rp-es"
RETRY_BASE = 1.0


@pytest.fixture(scope="module")
def issuer(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, keyring: Keyring
) -> Iterator[str]:
    """A broker process on the run's database: it creates the signing keys and serves the
    JWKS the relying party verifies with."""
    directory = tmp_path_factory.mktemp("bcl-broker")
    with dev_broker_process(
        directory, database_url=database_url, keyring=keyring, cwd=str(ROOT)
    ) as (url, _process):
        yield url


@pytest.fixture(scope="module")
def rp_urls(issuer: str) -> Iterator[dict[str, str]]:
    """One relying party per client: RS256 (the default) and ES256 ID tokens."""
    with (
        relying_party(issuer, RS_CLIENT) as rs,
        relying_party(issuer, ES_CLIENT, alg="ES256") as es,
    ):
        yield {RS_CLIENT: rs, ES_CLIENT: es}


@pytest.fixture
async def rps(rp_urls: dict[str, str]) -> AsyncIterator[dict[str, httpx2.AsyncClient]]:
    clients = {}
    for client_id, url in rp_urls.items():
        clients[client_id] = httpx2.AsyncClient(base_url=url)
        await clients[client_id].post("/_control/reset")
    yield clients
    for client in clients.values():
        await client.aclose()


def settings_for(
    database_url: str, upstream: str, keyring: Keyring, issuer: str, rp_urls: dict[str, str],
    **overrides: Any,
) -> Any:  # fmt: skip
    clients = [
        {
            "id": RS_CLIENT,
            "redirect_uris": ["http://127.0.0.1:3000/bcl-rp"],
            "backchannel_logout_uri": f"{rp_urls[RS_CLIENT]}/backchannel-logout",
        },
        {
            "id": ES_CLIENT,
            "redirect_uris": ["http://127.0.0.1:3000/bcl-rp-es"],
            "id_token_signed_response_alg": "ES256",
            "backchannel_logout_uri": f"{rp_urls[ES_CLIENT]}/backchannel-logout",
            "backchannel_logout_session_required": True,
        },
    ]
    values: dict[str, Any] = {
        "issuer": issuer,
        "clients": clients,
        "backchannel_logout_retry_base": RETRY_BASE,
        **overrides,
    }
    return broker_settings(database_url, upstream, keyring, **values)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(dt.datetime.now(dt.UTC))


@pytest.fixture
async def deps(
    database_url: str,
    upstream_idp: str,
    keyring: Keyring,
    issuer: str,
    rp_urls: dict[str, str],
    clock: FrozenClock,
) -> AsyncIterator[JobDeps]:
    settings = settings_for(database_url, upstream_idp, keyring, issuer, rp_urls)
    async with job_deps(settings, clock=clock) as dependencies:
        yield dependencies


async def ended_sessions(deps: JobDeps, client_id: str, count: int = 1) -> list[uuid.UUID]:
    """``count`` sessions of a new user at ``client_id``, each revoked in its own transaction."""
    now = deps.clock.now()
    user_id = uuid.uuid4()
    session_ids = []
    async with deps.engine.begin() as connection:
        await connection.execute(
            insert(USERS).values(id=user_id, status="active", created_at=now, updated_at=now)
        )
        for _ in range(count):
            grant = await create_session(
                connection, user_id=user_id, client_id=client_id, provider="corp",
                profile_id=None, scope="openid", auth_time=now, now=now, refresh_ttl=600,
            )  # fmt: skip
            session_ids.append(grant.session_id)
    for session_id in session_ids:
        async with deps.engine.begin() as connection:
            await revoke_session(connection, session_id, now=now, reason="logout", actor="test")
    await collect_past(deps, *session_ids)
    return session_ids


async def run_job(deps: JobDeps) -> dict[str, Any]:
    return await deliver_backchannel_logouts(BackchannelLogoutPayload(), deps)


async def received(rp: httpx2.AsyncClient, *session_ids: uuid.UUID) -> list[dict[str, Any]]:
    """The tokens the relying party took for these sessions."""
    sids = {str(session_id) for session_id in session_ids}
    logouts = (await rp.get("/_control/logouts")).json()
    return [token for token in logouts["received"] if token["sid"] in sids]


async def audit_of(deps: JobDeps, session_id: uuid.UUID) -> list[Any]:
    async with deps.engine.connect() as connection:
        rows = await connection.execute(
            select(AUDIT_TABLE)
            .where(
                AUDIT_TABLE.c.action.like("backchannel_logout.%"),
                AUDIT_TABLE.c.data["sid"].as_string() == str(session_id),
            )
            .order_by(AUDIT_TABLE.c.id)
        )
        return list(rows.all())


def advance_to(clock: FrozenClock, when: dt.datetime) -> None:
    clock.advance((when - clock.now()).total_seconds())


@pytest.mark.parametrize(("client_id", "alg"), [(RS_CLIENT, "RS256"), (ES_CLIENT, "ES256")])
async def test_a_valid_logout_token_reaches_the_relying_party_and_is_audited(
    deps, rps, client_id, alg
):
    (session_id,) = await ended_sessions(deps, client_id)
    (row,) = await deliveries_of(deps, session_id)

    result = await run_job(deps)

    assert result["delivered"] >= 1
    (token,) = await received(rps[client_id], session_id)
    assert token["alg"] == alg  # the algorithm of the client's ID tokens
    assert token["aud"] == client_id and token["sub"] == str(row.user_id)
    assert token["jti"] == row.jti
    assert token["exp"] - token["iat"] == 120
    (delivered,) = await deliveries_of(deps, session_id)
    assert delivered.delivered_at is not None and delivered.next_attempt_at is None
    assert delivered.attempts == 1 and delivered.last_error is None
    (event,) = await audit_of(deps, session_id)
    assert event.action == "backchannel_logout.delivered"
    assert event.actor == "system:worker" and event.client_id == client_id
    assert event.data == {"sid": str(session_id), "jti": row.jti, "attempts": 1}
    # Nothing more to do for it.
    await run_job(deps)
    assert len(await received(rps[client_id], session_id)) == 1


async def test_a_relying_party_that_is_down_gets_it_retried_with_backoff_and_exactly_once(
    deps, rps, clock
):
    rp = rps[RS_CLIENT]
    await rp.post("/_control/outage", json={"mode": "unavailable"})
    (session_id,) = await ended_sessions(deps, RS_CLIENT)

    await run_job(deps)
    (first,) = await deliveries_of(deps, session_id)
    assert first.attempts == 1 and first.last_error == "HTTP 503"
    waited = (first.next_attempt_at - clock.now()).total_seconds()
    assert RETRY_BASE / 2 <= waited <= RETRY_BASE  # equal jitter: half fixed, half random

    await run_job(deps)  # not due yet: no attempt
    assert (await rp.get("/_control/logouts")).json()["refused_while_down"] == 1

    advance_to(clock, first.next_attempt_at)
    await run_job(deps)
    (second,) = await deliveries_of(deps, session_id)
    assert second.attempts == 2
    waited = (second.next_attempt_at - clock.now()).total_seconds()
    assert RETRY_BASE <= waited <= 2 * RETRY_BASE  # doubled

    await rp.post("/_control/outage", json={"mode": "none"})
    advance_to(clock, second.next_attempt_at)
    await run_job(deps)
    await run_job(deps)

    assert len(await received(rp, session_id)) == 1
    logouts = (await rp.get("/_control/logouts")).json()
    assert logouts["refused_while_down"] == 2 and logouts["rejected"] == []
    (done,) = await deliveries_of(deps, session_id)
    assert done.attempts == 3 and done.delivered_at is not None
    assert [event.data["attempts"] for event in await audit_of(deps, session_id)] == [3]


async def test_a_delivery_still_failing_after_the_bound_is_given_up_and_audited(
    database_url, upstream_idp, keyring, issuer, rp_urls, rps, clock
):
    settings = settings_for(
        database_url, upstream_idp, keyring, issuer, rp_urls,
        backchannel_logout_give_up_after=60, backchannel_logout_retry_max=40,
    )  # fmt: skip
    rp = rps[RS_CLIENT]
    await rp.post("/_control/outage", json={"mode": "unavailable"})
    async with job_deps(settings, clock=clock) as deps:
        (session_id,) = await ended_sessions(deps, RS_CLIENT)
        give_up_at = clock.now() + dt.timedelta(seconds=60)
        attempts = 0
        while (row := (await deliveries_of(deps, session_id))[0]).next_attempt_at is not None:
            assert row.next_attempt_at <= give_up_at  # the last try is at the bound, not past
            advance_to(clock, max(row.next_attempt_at, clock.now()))
            await run_job(deps)
            attempts += 1
            assert attempts < 20

        await run_job(deps)  # given up once, never tried again

    assert row.failed_at is not None and row.delivered_at is None
    assert row.failed_at >= give_up_at and row.last_error == "HTTP 503"
    (event,) = await audit_of(deps, session_id)
    assert event.action == "backchannel_logout.failed"
    assert event.data["attempts"] == row.attempts and event.data["last_error"] == "HTTP 503"
    assert await received(rp, session_id) == []
    assert (await rp.get("/_control/logouts")).json()["refused_while_down"] == row.attempts


async def test_a_worker_configured_without_the_clients_uri_leaves_it_to_a_later_try(
    database_url, upstream_idp, keyring, issuer, rps, deps, clock
):
    # During a rolling configuration change, a worker that does not know the URI yet.
    (session_id,) = await ended_sessions(deps, RS_CLIENT)
    unaware = broker_settings(database_url, upstream_idp, keyring, issuer=issuer)
    async with job_deps(unaware, clock=clock) as older:
        await run_job(older)

    (row,) = await deliveries_of(deps, session_id)
    assert row.attempts == 1 and row.failed_at is None and row.next_attempt_at is not None
    assert row.last_error == "the client registers no backchannel_logout_uri here"
    assert await audit_of(deps, session_id) == []
    advance_to(clock, row.next_attempt_at)
    await run_job(deps)
    assert len(await received(rps[RS_CLIENT], session_id)) == 1


async def test_a_revocation_while_redis_is_down_is_delivered(
    database_url, upstream_idp, keyring, issuer, rp_urls, rps
):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = settings_for(
        database_url, upstream_idp, keyring, issuer, rp_urls, redis_url=dead_redis
    )
    runtime = build_runtime(settings)
    await runtime.start()
    try:
        deps = runtime.resources.job_deps()
        now = runtime.clock.now()
        user_id = uuid.uuid4()
        async with runtime.engine.begin() as connection:
            await connection.execute(
                insert(USERS).values(id=user_id, status="active", created_at=now, updated_at=now)
            )
            grant = await create_session(
                connection, user_id=user_id, client_id=RS_CLIENT, provider="corp",
                profile_id=None, scope="openid", auth_time=now, now=now, refresh_ttl=600,
            )  # fmt: skip
        transport = httpx2.ASGITransport(app=create_app(runtime))
        async with httpx2.AsyncClient(transport=transport, base_url=issuer) as broker:
            revoked = await broker.post(
                "/revoke", data={"token": grant.refresh_token, "client_id": RS_CLIENT}
            )
        assert revoked.status_code == 200  # the revocation stream could not take it
        await collect_past(deps, grant.session_id)
        await run_job(deps)
    finally:
        await runtime.stop()

    assert len(await received(rps[RS_CLIENT], grant.session_id)) == 1


async def test_two_workers_deliver_each_token_once(deps, rps):
    session_ids = await ended_sessions(deps, RS_CLIENT, count=12)
    small = BackchannelLogoutPayload(batch_size=3)

    await asyncio.gather(*(deliver_backchannel_logouts(small, deps) for _ in range(2)))

    tokens = await received(rps[RS_CLIENT], *session_ids)
    assert sorted(token["sid"] for token in tokens) == sorted(map(str, session_ids))
    assert (await rps[RS_CLIENT].get("/_control/logouts")).json()["rejected"] == []
    assert {row.attempts for row in await deliveries_of(deps, *session_ids)} == {1}


async def test_a_worker_that_died_mid_attempt_leaves_the_delivery_to_the_next(deps, rps, clock):
    # Started in the past: the lapsed claim's retry signs at about the relying party's now.
    clock.advance(-70)
    (session_id,) = await ended_sessions(deps, RS_CLIENT)
    # A worker claims every due delivery, then dies before it records anything.
    stalled = [row for row in await claim_due(deps, 1000) if row.ended.session_id == session_id]
    assert len(stalled) == 1
    await run_job(deps)  # the claim holds: nobody else sends it meanwhile
    assert await received(rps[RS_CLIENT], session_id) == []

    (claimed,) = await deliveries_of(deps, session_id)
    advance_to(clock, claimed.next_attempt_at)  # the claim lapses
    await run_job(deps)
    # The stalled worker wakes up: its outcome is no longer the row's.
    assert await record_outcome(deps, stalled[0], Attempt(False, "HTTP 500")) == "lost"

    assert len(await received(rps[RS_CLIENT], session_id)) == 1
    (row,) = await deliveries_of(deps, session_id)
    assert row.attempts == 2 and row.delivered_at is not None and row.last_error is None
