"""Refresh-token rotation on PostgreSQL: replays, concurrent refreshes, the reuse interval, and the
states of session, user and upstream link that end a family (SECURITY.md 12, RFC 9700 §4.14.2)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from broker.app import create_app
from shared.clock import FrozenClock
from shared.crypto.keyring import Keyring
from shared.db.base import table
from shared.models import AuditAction, AuthSession, OAuth2Token, RefreshToken, User
from shared.runtime import Runtime, build_runtime
from sqlalchemy import func, select, update

from tests.conftest import BROKER_ISSUER, broker_settings
from tests.support.flows import login, refresh

pytestmark = pytest.mark.integration

SESSIONS = table(AuthSession)
TOKENS = table(RefreshToken)


@pytest.fixture
def broker_with(database_url: str, upstream_idp: str, keyring: Keyring) -> Callable[..., Any]:
    """``async with broker_with(**settings) as (client, runtime)``: a broker with overrides."""

    @asynccontextmanager
    async def start(
        clock: FrozenClock | None = None, **overrides: object
    ) -> AsyncIterator[tuple[httpx2.AsyncClient, Runtime]]:
        settings = broker_settings(database_url, upstream_idp, keyring, **overrides)
        runtime = build_runtime(settings, clock=clock)
        await runtime.start()
        transport = httpx2.ASGITransport(app=create_app(runtime))
        try:
            async with httpx2.AsyncClient(transport=transport, base_url=BROKER_ISSUER) as client:
                yield client, runtime
        finally:
            await runtime.stop()

    return start


def _sid(access_token: str) -> uuid.UUID:
    """The session id in an access token (read unverified: the broker minted it in this test)."""
    payload = access_token.split(".")[1]
    return uuid.UUID(
        json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"]
    )


async def _family(runtime: Runtime, session_id: uuid.UUID) -> tuple[bool, int, int]:
    """(revoked, live tokens, used tokens) of a session."""
    async with runtime.engine.connect() as connection:
        revoked = await connection.scalar(
            select(SESSIONS.c.revoked_at).where(SESSIONS.c.id == session_id)
        )
        used = (
            await connection.execute(
                select(TOKENS.c.used_at).where(TOKENS.c.session_id == session_id)
            )
        ).all()
    live = sum(1 for row in used if row.used_at is None)
    return revoked is not None, live, len(used) - live


async def _audits(runtime: Runtime, action: str, session_id: uuid.UUID) -> int:
    audit = table(AuditAction)
    async with runtime.engine.connect() as connection:
        count = await connection.scalar(
            select(func.count())
            .select_from(audit)
            .where(audit.c.action == action, audit.c.data["sid"].as_string() == str(session_id))
        )
    return int(count or 0)


async def test_a_replayed_token_revokes_the_family_and_kills_its_successor(broker, runtime, idp):
    tokens = await login(broker)
    rotated = await refresh(broker, tokens["refresh_token"])
    assert rotated.status_code == 200
    replay = await refresh(broker, tokens["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    session_id = _sid(tokens["access_token"])
    assert await _audits(runtime, "refresh_token.reuse_detected", session_id) == 1
    # The newer token dies with the family (RFC 9700 §4.14.2), and so does its access token.
    successor = await refresh(broker, rotated.json()["refresh_token"])
    assert successor.json()["error"] == "invalid_grant"
    info = await broker.get(
        "/userinfo", headers={"Authorization": f"Bearer {rotated.json()['access_token']}"}
    )
    assert info.status_code == 401


async def test_twenty_concurrent_refreshes_in_strict_mode_leave_no_live_family(broker_with, idp):
    async with broker_with() as (broker, runtime):  # the default: refresh_reuse_interval = 0
        tokens = await login(broker)
        responses = await asyncio.gather(
            *(refresh(broker, tokens["refresh_token"]) for _ in range(20))
        )
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200] + [400] * 19  # never a 500
        assert {r.json()["error"] for r in responses if r.status_code == 400} == {"invalid_grant"}
        revoked, live, used = await _family(runtime, _sid(tokens["access_token"]))
        # One rotation happened, the replays revoked the family: nothing of it is usable.
        assert (revoked, live, used) == (True, 1, 1)
        winner = next(r for r in responses if r.status_code == 200).json()
        assert (await refresh(broker, winner["refresh_token"])).status_code == 400


async def test_twenty_concurrent_refreshes_within_the_reuse_interval_share_one_successor(
    broker_with, idp
):
    async with broker_with(refresh_reuse_interval=5) as (broker, runtime):
        tokens = await login(broker)
        responses = await asyncio.gather(
            *(refresh(broker, tokens["refresh_token"]) for _ in range(20))
        )
        assert [response.status_code for response in responses] == [200] * 20
        successors = {response.json()["refresh_token"] for response in responses}
        assert len(successors) == 1  # the same successor, each with its own access token
        assert len({response.json()["access_token"] for response in responses}) == 20
        session_id = _sid(tokens["access_token"])
        assert await _family(runtime, session_id) == (False, 1, 1)  # one family, one live token
        assert await _audits(runtime, "refresh_token.rotated", session_id) == 1
        (successor,) = successors
        onward = await refresh(broker, successor)
        assert onward.status_code == 200
        # Once the successor has been used, the old token is a replay, even inside the interval.
        late = await refresh(broker, tokens["refresh_token"])
        assert late.json()["error"] == "invalid_grant"
        assert (await _family(runtime, session_id))[0] is True


async def test_a_replay_after_the_reuse_interval_revokes(broker_with, idp):
    clock = FrozenClock(dt.datetime.now(dt.UTC))  # the upstream's ID tokens use real time
    async with broker_with(clock=clock, refresh_reuse_interval=2) as (broker, runtime):
        tokens = await login(broker)
        first = await refresh(broker, tokens["refresh_token"])
        clock.advance(1)
        again = await refresh(broker, tokens["refresh_token"])
        assert again.json()["refresh_token"] == first.json()["refresh_token"]
        clock.advance(1.5)
        replay = await refresh(broker, tokens["refresh_token"])
        assert replay.json()["error"] == "invalid_grant"
        session_id = _sid(tokens["access_token"])
        assert await _family(runtime, session_id) == (True, 1, 1)
        assert await _audits(runtime, "refresh_token.reuse_detected", session_id) == 1


async def test_the_json_refresh_endpoint_shares_the_rotation(broker, runtime, idp):
    tokens = await login(broker)
    rotated = await broker.post(
        "/auth/oauth2/refresh", json={"refresh_token": tokens["refresh_token"], "client_id": "web"}
    )
    assert rotated.status_code == 200
    replay = await refresh(broker, tokens["refresh_token"])
    assert replay.json()["error"] == "invalid_grant"
    assert await _family(runtime, _sid(tokens["access_token"])) == (True, 1, 1)


async def _set_link_state(runtime: Runtime, session_id: uuid.UUID, state: str) -> None:
    links = table(OAuth2Token)
    async with runtime.engine.begin() as connection:
        profile_id = await connection.scalar(
            select(SESSIONS.c.profile_id).where(SESSIONS.c.id == session_id)
        )
        assert profile_id is not None
        changed = await connection.execute(
            update(links).where(links.c.profile_id == profile_id).values(state=state)
        )
        assert changed.rowcount == 1


@pytest.mark.parametrize(
    ("state", "description"),
    [
        ("revoked", "the sign-in with the identity provider was revoked"),
        ("needs_reauth", "upstream_reauth_required"),
    ],
)
@pytest.mark.parametrize("narrowing", [False, True])  # the hot path and the portable path
async def test_an_upstream_link_that_is_revoked_or_needs_reauth_stops_refreshes(
    broker, runtime, idp, state, description, narrowing
):
    tokens = await login(broker)
    session_id = _sid(tokens["access_token"])
    await _set_link_state(runtime, session_id, state)
    data = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    data |= {"client_id": "web", "scope": "openid"} if narrowing else {"client_id": "web"}
    response = await broker.post("/token", data=data)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": description}
    # Nothing rotated, nothing revoked: once the link is healthy the same token works.
    await _set_link_state(runtime, session_id, "ok")
    assert (await refresh(broker, tokens["refresh_token"])).status_code == 200


async def test_a_disabled_user_or_a_revoked_session_cannot_refresh(broker, runtime, idp):
    tokens = await login(broker)
    users = table(User)
    async with runtime.engine.begin() as connection:
        user_id = await connection.scalar(
            select(SESSIONS.c.user_id).where(SESSIONS.c.id == _sid(tokens["access_token"]))
        )
        await connection.execute(
            update(users).where(users.c.id == user_id).values(status="disabled")
        )
    disabled = await refresh(broker, tokens["refresh_token"])
    assert disabled.json()["error"] == "invalid_grant"
    async with runtime.engine.begin() as connection:
        await connection.execute(update(users).where(users.c.id == user_id).values(status="active"))
        await connection.execute(
            update(SESSIONS)
            .where(SESSIONS.c.id == _sid(tokens["access_token"]))
            .values(revoked_at=func.now())
        )
    revoked = await refresh(broker, tokens["refresh_token"])
    assert revoked.json() == {
        "error": "invalid_grant",
        "error_description": "the refresh token has been revoked",
    }
