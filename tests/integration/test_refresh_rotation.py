"""Refresh-token rotation on PostgreSQL: replays, concurrent refreshes, the reuse interval, and the
states of session, user and upstream link that end a family (docs/security.md "Refresh-token
rotation and reuse", RFC 9700 §4.14.2)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from redis.asyncio import Redis
from shared.clock import FrozenClock
from shared.db.base import table
from shared.db.tables import AUDIT_TABLE as AUDIT
from shared.db.tables import LINKS, SESSIONS
from shared.db.tables import REFRESH_TOKENS as TOKENS
from shared.models import AuditAction, OAuth2Token, User
from shared.runtime import Runtime
from shared.upstream_tokens import unseal_upstream_token
from sqlalchemy import func, select, update

from tests.support.flows import login, refresh
from tests.support.jwts import session_of

pytestmark = pytest.mark.integration


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


async def _tokens(runtime: Runtime, session_id: uuid.UUID) -> list[tuple[Any, ...]]:
    """(hash, created, expires, used) of each refresh token of a session, oldest first."""
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(
            select(TOKENS.c.token_hash, TOKENS.c.created_at, TOKENS.c.expires_at, TOKENS.c.used_at)
            .where(TOKENS.c.session_id == session_id)
            .order_by(TOKENS.c.created_at)
        )
        return [tuple(row) for row in rows]


async def _audit_rows(runtime: Runtime, action: str, session_id: uuid.UUID) -> list[Any]:
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(
            select(AUDIT.c.actor, AUDIT.c.subject, AUDIT.c.client_id, AUDIT.c.data)
            .where(AUDIT.c.action == action, AUDIT.c.data["sid"].as_string() == str(session_id))
            .order_by(AUDIT.c.id)
        )
        return list(rows)


async def _user_of(runtime: Runtime, session_id: uuid.UUID) -> str:
    async with runtime.engine.connect() as connection:
        return str(
            await connection.scalar(select(SESSIONS.c.user_id).where(SESSIONS.c.id == session_id))
        )


def _refresh_form(token: str, narrowing: bool) -> dict[str, str]:
    """A refresh on the hot path, or (narrowing the scope) on the transaction path."""
    data = {"grant_type": "refresh_token", "refresh_token": token, "client_id": "web"}
    return data | ({"scope": "openid email"} if narrowing else {})


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
    # The client moved on (its successor was used): the old token, presented again, can only
    # be a copy someone else kept, whatever the reuse interval says.
    onward = await refresh(broker, rotated.json()["refresh_token"])
    assert onward.status_code == 200
    replay = await refresh(broker, tokens["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    session_id = session_of(tokens["access_token"])
    assert await _audits(runtime, "refresh_token.reuse_detected", session_id) == 1
    assert await _audits(runtime, "refresh_token.retried", session_id) == 0
    # The newest token dies with the family (RFC 9700 §4.14.2), and so does its access token.
    successor = await refresh(broker, onward.json()["refresh_token"])
    assert successor.json()["error"] == "invalid_grant"
    info = await broker.get(
        "/userinfo", headers={"Authorization": f"Bearer {onward.json()['access_token']}"}
    )
    assert info.status_code == 401


@pytest.mark.parametrize("reuse_response", ["family", "user_and_upstream"])
async def test_twenty_concurrent_refreshes_in_strict_mode_leave_no_live_family(
    broker_with, idp, reuse_response
):
    # Strict mode (refresh_reuse_interval = 0): every presentation after the first is a replay.
    # Whatever the replays revoke, they take their locks in one order: no deadlock, no 500.
    async with broker_with(refresh_reuse_interval=0, reuse_response=reuse_response) as (
        broker,
        runtime,
    ):
        tokens = await login(broker)
        responses = await asyncio.gather(
            *(refresh(broker, tokens["refresh_token"]) for _ in range(20))
        )
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200] + [400] * 19  # never a 500
        assert {r.json()["error"] for r in responses if r.status_code == 400} == {"invalid_grant"}
        revoked, live, used = await _family(runtime, session_of(tokens["access_token"]))
        # One rotation happened, the replays revoked the family: nothing of it is usable.
        assert (revoked, live, used) == (True, 1, 1)
        winner = next(r for r in responses if r.status_code == 200).json()
        assert (await refresh(broker, winner["refresh_token"])).status_code == 400


async def test_twenty_concurrent_refreshes_within_the_reuse_interval_share_one_successor(
    broker_with, idp
):
    async with broker_with() as (broker, runtime):  # the default interval
        tokens = await login(broker)
        responses = await asyncio.gather(
            *(refresh(broker, tokens["refresh_token"]) for _ in range(20))
        )
        assert [response.status_code for response in responses] == [200] * 20
        successors = {response.json()["refresh_token"] for response in responses}
        assert len(successors) == 1  # the same successor, each with its own access token
        assert len({response.json()["access_token"] for response in responses}) == 20
        session_id = session_of(tokens["access_token"])
        assert await _family(runtime, session_id) == (False, 1, 1)  # one family, one live token
        assert await _audits(runtime, "refresh_token.rotated", session_id) == 1
        assert await _audits(runtime, "refresh_token.retried", session_id) == 19
        (successor,) = successors
        onward = await refresh(broker, successor)
        assert onward.status_code == 200
        # Once the successor has been used, the old token is a replay, even inside the interval.
        late = await refresh(broker, tokens["refresh_token"])
        assert late.json()["error"] == "invalid_grant"
        assert (await _family(runtime, session_id))[0] is True


@pytest.mark.parametrize("narrowing", [False, True], ids=["hot-path", "transaction"])
async def test_a_lost_response_is_retried_with_the_same_successor_within_the_window(
    broker_with, idp, narrowing
):
    clock = FrozenClock(dt.datetime.now(dt.UTC))  # the upstream's ID tokens use real time
    async with broker_with(clock=clock) as (broker, runtime):  # the default window, 60 s
        assert runtime.hot_path is not None
        tokens = await login(broker)
        session_id = session_of(tokens["access_token"])
        form = _refresh_form(tokens["refresh_token"], narrowing)
        lost = await broker.post("/token", data=form)  # committed; the client never saw it
        assert lost.status_code == 200, lost.text
        rotated = await _tokens(runtime, session_id)
        retries = []
        for seconds in (0.25, 10, 36.75):  # the client retries with backoff, up to 47 s later
            clock.advance(seconds)
            retries.append(await broker.post("/token", data=form))
        assert [retry.status_code for retry in retries] == [200, 200, 200]
        # The same successor each time, still the family's one unused token, same expiry.
        assert {retry.json()["refresh_token"] for retry in retries} == {
            lost.json()["refresh_token"]
        }
        assert await _tokens(runtime, session_id) == rotated
        assert await _family(runtime, session_id) == (False, 1, 1)
        assert await _audits(runtime, "refresh_token.rotated", session_id) == 1
        retried = await _audit_rows(runtime, "refresh_token.retried", session_id)
        user_id = await _user_of(runtime, session_id)
        assert [(row.actor, row.subject, row.client_id) for row in retried] == [
            ("client:web", user_id, "web")
        ] * 3
        assert [row.data["seconds_after_rotation"] for row in retried] == [0.25, 10.25, 47.0]
        assert await _audits(runtime, "refresh_token.reuse_detected", session_id) == 0
        # Each retry's access token works, and so does the successor, once.
        info = await broker.get(
            "/userinfo", headers={"Authorization": f"Bearer {retries[-1].json()['access_token']}"}
        )
        assert info.status_code == 200
        onward = await refresh(broker, lost.json()["refresh_token"])
        assert onward.status_code == 200
        assert await _family(runtime, session_id) == (False, 1, 2)


@pytest.mark.parametrize("narrowing", [False, True], ids=["hot-path", "transaction"])
async def test_once_the_successor_was_used_a_retry_within_the_window_is_a_replay(
    broker_with, idp, narrowing
):
    async with broker_with() as (broker, runtime):  # the default window
        tokens = await login(broker)
        session_id = session_of(tokens["access_token"])
        form = _refresh_form(tokens["refresh_token"], narrowing)
        rotated = await broker.post("/token", data=form)
        assert (await broker.post("/token", data=form)).status_code == 200  # a retry, fine
        onward = await refresh(broker, rotated.json()["refresh_token"])  # the client moved on
        assert onward.status_code == 200
        replay = await broker.post("/token", data=form)  # seconds later: a copy, not a retry
        assert replay.json() == {
            "error": "invalid_grant",
            "error_description": "the refresh token was already used; the session is revoked",
        }
        assert await _family(runtime, session_id) == (True, 1, 2)
        assert await _audits(runtime, "refresh_token.retried", session_id) == 1
        (alarm,) = await _audit_rows(runtime, "refresh_token.reuse_detected", session_id)
        assert alarm.data["revoked_sessions"] == [str(session_id)]
        assert (await refresh(broker, onward.json()["refresh_token"])).status_code == 400


@pytest.mark.parametrize("narrowing", [False, True], ids=["hot-path", "transaction"])
async def test_a_retry_after_the_window_is_a_replay_and_revokes(broker_with, idp, narrowing):
    clock = FrozenClock(dt.datetime.now(dt.UTC))  # the upstream's ID tokens use real time
    async with broker_with(clock=clock) as (broker, runtime):  # the default window, 60 s
        tokens = await login(broker)
        form = _refresh_form(tokens["refresh_token"], narrowing)
        first = await broker.post("/token", data=form)
        clock.advance(60)
        again = await broker.post("/token", data=form)
        assert again.json()["refresh_token"] == first.json()["refresh_token"]
        clock.advance(1)
        replay = await broker.post("/token", data=form)
        assert replay.json()["error"] == "invalid_grant"
        session_id = session_of(tokens["access_token"])
        assert await _family(runtime, session_id) == (True, 1, 1)
        assert await _audits(runtime, "refresh_token.retried", session_id) == 1
        assert await _audits(runtime, "refresh_token.reuse_detected", session_id) == 1
        # The successor nobody used dies with the family.
        assert (await refresh(broker, first.json()["refresh_token"])).status_code == 400


async def test_strict_mode_makes_any_second_presentation_a_replay(broker_with, idp):
    async with broker_with(refresh_reuse_interval=0) as (broker, runtime):
        tokens = await login(broker)
        assert (await refresh(broker, tokens["refresh_token"])).status_code == 200
        replay = await refresh(broker, tokens["refresh_token"])
        assert replay.json()["error"] == "invalid_grant"
        session_id = session_of(tokens["access_token"])
        assert await _family(runtime, session_id) == (True, 1, 1)
        assert await _audits(runtime, "refresh_token.retried", session_id) == 0
        assert await _audits(runtime, "refresh_token.reuse_detected", session_id) == 1


async def test_the_json_refresh_endpoint_shares_the_rotation(broker, runtime, idp):
    tokens = await login(broker)
    rotated = await broker.post(
        "/auth/oauth2/refresh", json={"refresh_token": tokens["refresh_token"], "client_id": "web"}
    )
    assert rotated.status_code == 200
    onward = await broker.post(
        "/auth/oauth2/refresh",
        json={"refresh_token": rotated.json()["refresh_token"], "client_id": "web"},
    )
    assert onward.status_code == 200
    replay = await refresh(broker, tokens["refresh_token"])  # after its successor was used
    assert replay.json()["error"] == "invalid_grant"
    assert await _family(runtime, session_of(tokens["access_token"])) == (True, 1, 2)


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
    session_id = session_of(tokens["access_token"])
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
            select(SESSIONS.c.user_id).where(SESSIONS.c.id == session_of(tokens["access_token"]))
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
            .where(SESSIONS.c.id == session_of(tokens["access_token"]))
            .values(revoked_at=func.now())
        )
    revoked = await refresh(broker, tokens["refresh_token"])
    assert revoked.json() == {
        "error": "invalid_grant",
        "error_description": "the refresh token has been revoked",
    }


# --------------------------------------------------------------------------- reuse response


@dataclass
class Reuse:
    """A user with two sessions (two devices), another user's session, and what the first
    session's replay revoked, as the broker, the stream and the upstream saw it."""

    broker: httpx2.AsyncClient
    runtime: Runtime
    user: dict[str, Any]  # the upstream user behind `first` and `second`
    first: dict[str, Any]
    second: dict[str, Any]
    bystander: dict[str, Any]
    link: Any  # the user's upstream link (oauth2_tokens) before the replay
    upstream_refresh_token: str
    audit: dict[str, Any]  # refresh_token.reuse_detected
    published: list[str]  # session ids on the revocation stream
    upstream_revocations: list[dict[str, Any]]

    async def refreshes(self, tokens: dict[str, Any]) -> bool:
        return (await refresh(self.broker, tokens["refresh_token"])).status_code == 200

    async def link_state(self) -> Any:
        async with self.runtime.engine.connect() as connection:
            return (await connection.execute(select(LINKS).where(LINKS.c.id == self.link.id))).one()


async def _corp_user(idp: httpx2.AsyncClient) -> dict[str, Any]:
    subject = uuid.uuid4().hex
    user = {"sub": subject, "email": f"{subject}@corp.example", "email_verified": True}
    await idp.post("/_control/user", json=user)
    return user


@pytest.fixture
def replay_with(broker_with, idp, redis_url):
    """``async with replay_with(policy, narrowing) as reuse``: sign in, rotate the first
    session's refresh token twice (the client moved on), replay the first one (on the hot path,
    or the transaction path when the replay narrows the scope), and collect what it revoked."""

    @asynccontextmanager
    async def run(policy: str, narrowing: bool = False) -> AsyncIterator[Reuse]:
        stream = f"test:revocations:{uuid.uuid4().hex}"
        overrides = {"reuse_response": policy, "redis_url": redis_url, "revocation_stream": stream}
        redis: Redis = Redis.from_url(redis_url)
        try:
            async with broker_with(**overrides) as (broker, runtime):
                user = await _corp_user(idp)
                first, second = await login(broker), await login(broker)  # two devices
                await _corp_user(idp)
                bystander = await login(broker)
                async with runtime.engine.connect() as connection:
                    link = (
                        await connection.execute(
                            select(LINKS)
                            .join(SESSIONS, SESSIONS.c.profile_id == LINKS.c.profile_id)
                            .where(SESSIONS.c.id == session_of(first["access_token"]))
                        )
                    ).one()
                upstream_refresh = unseal_upstream_token(
                    runtime.settings.keyring, link.id, "refresh_token", link.refresh_token_enc
                )
                assert upstream_refresh
                rotated = await refresh(broker, first["refresh_token"])
                assert rotated.status_code == 200
                onward = await refresh(broker, rotated.json()["refresh_token"])
                assert onward.status_code == 200
                data = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
                data |= {"client_id": "web"} | ({"scope": "openid"} if narrowing else {})
                replay = await broker.post("/token", data=data)
                assert replay.status_code == 400
                assert replay.json()["error"] == "invalid_grant"
                async with runtime.engine.connect() as connection:
                    (audit,) = (
                        await connection.execute(
                            select(AUDIT.c.data).where(
                                AUDIT.c.action == "refresh_token.reuse_detected",
                                AUDIT.c.data["sid"].as_string()
                                == str(session_of(first["access_token"])),
                            )
                        )
                    ).scalars()
                published = [fields[b"sid"].decode() for _, fields in await redis.xrange(stream)]
                revocations = (await idp.get("/_control/revocations")).json()["revocations"]
                yield Reuse(
                    broker, runtime, user, first, second, bystander, link, upstream_refresh,
                    audit, published, revocations,
                )  # fmt: skip
        finally:
            await redis.delete(stream)
            await redis.aclose()

    return run


def _sids(*tokens: dict[str, Any]) -> list[str]:
    return sorted(str(session_of(t["access_token"])) for t in tokens)


async def test_reuse_response_family_revokes_only_the_replayed_session(replay_with):
    async with replay_with("family") as reuse:
        assert reuse.audit["policy"] == "family"
        assert reuse.audit["revoked_sessions"] == _sids(reuse.first)
        assert reuse.audit["revoked_links"] == []
        assert reuse.published == _sids(reuse.first)
        assert await reuse.refreshes(reuse.second)  # the user's other device goes on
        assert await reuse.refreshes(reuse.bystander)
        assert (await reuse.link_state()).state == "ok"
        assert reuse.upstream_revocations == []


async def test_reuse_response_user_revokes_every_session_of_the_user(replay_with):
    async with replay_with("user") as reuse:
        assert reuse.audit["policy"] == "user"
        assert sorted(reuse.audit["revoked_sessions"]) == _sids(reuse.first, reuse.second)
        assert reuse.audit["revoked_links"] == []
        assert sorted(reuse.published) == _sids(reuse.first, reuse.second)
        assert not await reuse.refreshes(reuse.second)
        info = await reuse.broker.get(
            "/userinfo", headers={"Authorization": f"Bearer {reuse.second['access_token']}"}
        )
        assert info.status_code == 401
        assert await reuse.refreshes(reuse.bystander)  # another user is untouched
        assert (await reuse.link_state()).state == "ok"  # the upstream grant stays
        assert reuse.upstream_revocations == []


@pytest.mark.parametrize("narrowing", [False, True])  # the hot path and the transaction path
async def test_reuse_response_user_and_upstream_also_revokes_the_upstream_grant(
    replay_with, idp, narrowing
):
    async with replay_with("user_and_upstream", narrowing) as reuse:
        assert reuse.audit["policy"] == "user_and_upstream"
        assert sorted(reuse.audit["revoked_sessions"]) == _sids(reuse.first, reuse.second)
        assert reuse.audit["revoked_links"] == [{"id": str(reuse.link.id), "provider": "corp"}]
        assert sorted(reuse.published) == _sids(reuse.first, reuse.second)
        assert not await reuse.refreshes(reuse.second)
        assert await reuse.refreshes(reuse.bystander)
        link = await reuse.link_state()
        assert link.state == "revoked" and link.refresh_token_enc is None
        # Revoked at the upstream after the commit (RFC 7009), and only this user's grant.
        assert [(r["token"], r["revoked"]) for r in reuse.upstream_revocations] == [
            (reuse.upstream_refresh_token, "refresh_token")
        ]
        async with reuse.runtime.engine.connect() as connection:
            upstream_audit = await connection.scalar(
                select(AUDIT.c.data).where(
                    AUDIT.c.action == "upstream_token.revoked",
                    AUDIT.c.subject == str(link.user_id),
                )
            )
        assert upstream_audit["reason"] == "refresh_token_reuse"
        # Signing in through the provider again stores a new grant.
        await idp.post("/_control/user", json=reuse.user)
        fresh = await login(reuse.broker)
        assert (await reuse.link_state()).state == "ok"
        assert await reuse.refreshes(fresh)
