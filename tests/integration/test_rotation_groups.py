"""Group commit of refresh rotations on real PostgreSQL: concurrent rotations share one
transaction, each keeps its own time, successor and audit row, and one request's failure —
a replay, a disabled user, a link that needs re-authentication, another client's token, the
same token twice, a statement error, a lost connection — is its own (docs/decisions.md "Group
commit of refresh rotations")."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import psycopg
import pytest
from broker.http.context import RequestMeta
from broker.http.errors import InvalidGrant
from broker.oauth.grants import RefreshTokenReused, refresh_grant
from shared.crypto.opaque import token_hash
from shared.db.hot_path import HotPathPool
from shared.db.tables import AUDIT_TABLE as AUDIT
from shared.db.tables import LINKS, SESSIONS, USERS
from shared.db.tables import REFRESH_TOKENS as TOKENS
from shared.refresh_rotation.groups import RotationGroups
from shared.refresh_rotation.hot_path import (
    HotPathRotation,
    rotate_group_on_hot_path,
    rotate_on_hot_path,
)
from shared.runtime import Runtime
from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import make_url

from tests.support.flows import login, refresh
from tests.support.jwts import session_of
from tests.support.tcp_proxy import cutting_proxy
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

META = RequestMeta(ip="192.0.2.7", user_agent=None)


async def _new_user_signs_in(broker: httpx2.AsyncClient, idp: httpx2.AsyncClient) -> Any:
    """A new upstream user signs in through `web`: its token response."""
    subject = uuid.uuid4().hex
    user = {"sub": subject, "email": f"{subject}@corp.example", "email_verified": True}
    await idp.post("/_control/user", json=user)
    return await login(broker)


def _sid(tokens: dict[str, Any]) -> uuid.UUID:
    """The session of a token response."""
    return session_of(tokens["access_token"])


async def _rotation_txids(runtime: Runtime, sessions: Sequence[uuid.UUID]) -> list[int]:
    """The transaction of each ``refresh_token.rotated`` row of these sessions."""
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(
            select(AUDIT.c.txid).where(
                AUDIT.c.action == "refresh_token.rotated",
                AUDIT.c.data["sid"].as_string().in_([str(sid) for sid in sessions]),
            )
        )
        return [row.txid for row in rows]


async def _token_row(runtime: Runtime, token: str) -> Any:
    async with runtime.engine.connect() as connection:
        return (
            await connection.execute(
                select(TOKENS.c.created_at, TOKENS.c.used_at, text("xmin::text AS xid")).where(
                    TOKENS.c.token_hash == token_hash(token)
                )
            )
        ).first()


def _rotation(runtime: Runtime, presented: str, now: dt.datetime, **fields: Any) -> HotPathRotation:
    return HotPathRotation.prepare(
        runtime.rotation, presented=presented, client_id="web", now=now, **fields
    )


async def test_concurrent_rotations_share_one_commit_and_each_keeps_its_own_time(
    broker, runtime, idp
):
    assert runtime.rotation_groups is not None  # on by default on PostgreSQL
    sessions = [await login(broker) for _ in range(5)]
    start = dt.datetime.now(dt.UTC)
    times = [start + dt.timedelta(milliseconds=7 * index) for index in range(5)]
    grants = await asyncio.gather(
        *(
            runtime.rotation_groups.rotate(
                presented=tokens["refresh_token"], client_id="web", now=now, ip=f"192.0.2.{i}"
            )
            for i, (tokens, now) in enumerate(zip(sessions, times, strict=True))
        )
    )
    assert [grant.session_id if grant else None for grant in grants] == [
        _sid(tokens) for tokens in sessions
    ]
    # One transaction (autocommit: one COMMIT) wrote every rotation of the group: its audit
    # rows carry one transaction id, and so do the tokens it marked used and the successors.
    assert len(set(await _rotation_txids(runtime, [_sid(t) for t in sessions]))) == 1
    xids = set()
    for tokens, grant, now in zip(sessions, grants, times, strict=True):
        assert grant is not None
        presented = await _token_row(runtime, tokens["refresh_token"])
        successor = await _token_row(runtime, grant.refresh_token)
        assert presented.used_at == now  # each request's own time
        assert (successor.created_at, successor.used_at) == (now, None)
        assert grant.refresh_expires_at == now + dt.timedelta(seconds=runtime.rotation.refresh_ttl)
        xids |= {presented.xid, successor.xid}
    assert len(xids) == 1
    async with runtime.engine.connect() as connection:
        audits = (
            await connection.execute(
                select(AUDIT.c.data["sid"].as_string(), AUDIT.c.occurred_at, AUDIT.c.ip).where(
                    AUDIT.c.action == "refresh_token.rotated",
                    AUDIT.c.occurred_at >= start,
                    AUDIT.c.data["sid"].as_string().in_([str(_sid(t)) for t in sessions]),
                )
            )
        ).all()
    assert sorted(audits) == sorted(
        (str(_sid(tokens)), now, f"192.0.2.{i}")
        for i, (tokens, now) in enumerate(zip(sessions, times, strict=True))
    )


async def test_a_lone_rotation_takes_the_single_statement(database_url, broker, runtime, idp):
    tokens = await login(broker)
    pool = HotPathPool(
        make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False),
        max_size=1,
    )
    await pool.open()
    try:
        groups = RotationGroups(pool, runtime.rotation, max_size=8)
        now = dt.datetime.now(dt.UTC)
        grant = await groups.rotate(presented=tokens["refresh_token"], client_id="web", now=now)
        assert grant is not None and grant.session_id == _sid(tokens)
        await groups.close()
        # The pool's one connection prepared what it ran: the single path's statement only.
        prepared = await pool.fetchall("SELECT statement FROM pg_prepared_statements", ())
    finally:
        await pool.close()
    (rotation,) = [statement for (statement,) in prepared if "UPDATE refresh_tokens" in statement]
    assert "unnest" not in rotation  # one request's parameters, no arrays


async def test_a_full_group_is_sent_as_it_is_and_the_next_rotation_starts_another(broker_with, idp):
    async with broker_with(refresh_group_max=2) as (broker, runtime):
        assert runtime.rotation_groups is not None and runtime.rotation_groups.max_size == 2
        sessions = [await login(broker) for _ in range(5)]
        now = dt.datetime.now(dt.UTC)
        grants = await asyncio.gather(
            *(
                runtime.rotation_groups.rotate(
                    presented=tokens["refresh_token"], client_id="web", now=now
                )
                for tokens in sessions
            )
        )
        assert all(grant is not None for grant in grants)
        txids = await _rotation_txids(runtime, [_sid(tokens) for tokens in sessions])
        assert sorted(txids.count(txid) for txid in set(txids)) == [1, 2, 2]
        counts = runtime.rotation_groups.counts  # what /metrics shows
        # Two groups of two shared a statement; the fifth, alone in its group, went alone.
        assert (counts.groups, counts.grouped, counts.alone) == (2, 4, 1)


@pytest.mark.parametrize("group_commit", [True, False], ids=["grouped", "off"])
async def test_the_switch_turns_group_commit_off_restoring_one_commit_per_rotation(
    broker_with, idp, group_commit
):
    async with broker_with(refresh_group_commit=group_commit) as (broker, runtime):
        assert (runtime.rotation_groups is not None) is group_commit
        sessions = [await login(broker) for _ in range(4)]
        client = runtime.settings.client("web")
        assert client is not None
        issued = await asyncio.gather(
            *(
                refresh_grant(runtime, client, {"refresh_token": tokens["refresh_token"]}, META)
                for tokens in sessions
            )
        )
        assert [_sid(answer.body) for answer in issued] == [_sid(t) for t in sessions]
        txids = await _rotation_txids(runtime, [_sid(tokens) for tokens in sessions])
        assert len(set(txids)) == (1 if group_commit else 4)
        # Either way the rotated tokens go on working over HTTP.
        for answer in issued:
            assert (await refresh(broker, answer.body["refresh_token"])).status_code == 200


async def test_good_and_bad_tokens_in_one_group_each_get_their_own_answer(broker, runtime, idp):
    good = await _new_user_signs_in(broker, idp)
    twice = await login(broker)  # presented twice in the group: a tab race
    replayed = await login(broker)
    rotated = await refresh(broker, replayed["refresh_token"])
    assert (await refresh(broker, rotated.json()["refresh_token"])).status_code == 200
    disabled = await _new_user_signs_in(broker, idp)
    needs_reauth = await _new_user_signs_in(broker, idp)
    foreign = await _new_user_signs_in(broker, idp)  # web's token, presented by console
    async with runtime.engine.begin() as connection:
        user_of = select(SESSIONS.c.user_id).where(SESSIONS.c.id == _sid(disabled))
        await connection.execute(
            update(USERS).where(USERS.c.id == user_of.scalar_subquery()).values(status="disabled")
        )
        profile_of = select(SESSIONS.c.profile_id).where(SESSIONS.c.id == _sid(needs_reauth))
        await connection.execute(
            update(LINKS)
            .where(LINKS.c.profile_id == profile_of.scalar_subquery())
            .values(state="needs_reauth")
        )
    web, console = runtime.settings.client("web"), runtime.settings.client("console")
    assert web is not None and console is not None
    requests = [
        (web, replayed),
        (web, good),
        (web, twice),
        (web, disabled),
        (web, needs_reauth),
        (console, foreign),
        (web, twice),
        (web, {"refresh_token": "never-issued"}),
    ]
    answers = await asyncio.gather(
        *(
            refresh_grant(runtime, client, {"refresh_token": tokens["refresh_token"]}, META)
            for client, tokens in requests
        ),
        return_exceptions=True,
    )
    replay, fine, first, blocked, reauth, wrong_client, second, unknown = answers
    assert isinstance(replay, RefreshTokenReused)
    assert not isinstance(fine, BaseException) and _sid(fine.body) == _sid(good)
    # The same token twice rotates once; the other presentation is the reuse interval's retry.
    assert not isinstance(first, BaseException) and not isinstance(second, BaseException)
    assert first.body["refresh_token"] == second.body["refresh_token"]
    assert (blocked.description, reauth.description, wrong_client.description) == (  # type: ignore[union-attr]
        "the refresh token has been revoked",
        "upstream_reauth_required",
        "the refresh token is invalid",
    )
    assert (
        isinstance(unknown, InvalidGrant) and unknown.description == "the refresh token is invalid"
    )
    # The two rotations went in one transaction; the failures wrote what they write alone.
    assert len(set(await _rotation_txids(runtime, [_sid(good), _sid(twice)]))) == 1
    async with runtime.engine.connect() as connection:
        actions = (
            await connection.execute(
                select(AUDIT.c.action, AUDIT.c.data["sid"].as_string()).where(
                    AUDIT.c.action.in_(["refresh_token.retried", "refresh_token.reuse_detected"]),
                    AUDIT.c.data["sid"].as_string().in_([str(_sid(twice)), str(_sid(replayed))]),
                )
            )
        ).all()
        revoked = {
            row.id: row.revoked_at is not None
            for row in await connection.execute(
                select(SESSIONS.c.id, SESSIONS.c.revoked_at).where(
                    SESSIONS.c.id.in_([_sid(t) for _, t in requests[:6]])
                )
            )
        }
    assert sorted(actions) == sorted(
        [
            ("refresh_token.retried", str(_sid(twice))),
            ("refresh_token.reuse_detected", str(_sid(replayed))),
        ]
    )
    assert revoked == {
        _sid(replayed): True,  # the replay revoked its family, and nothing else
        _sid(good): False,
        _sid(twice): False,
        _sid(disabled): False,
        _sid(needs_reauth): False,
        _sid(foreign): False,
    }
    # Nothing was rotated for the refused ones: once their cause is gone, their token works.
    assert (await refresh(broker, foreign["refresh_token"])).status_code == 200
    assert (await refresh(broker, fine.body["refresh_token"])).status_code == 200


async def _waiting_on_a_lock(runtime: Runtime) -> bool:
    """Whether a statement of this database waits for a lock (one the test holds)."""
    async with runtime.engine.connect() as connection:
        count = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            )
        )
    return bool(count)


async def test_an_answer_waits_for_its_group_to_commit(broker, runtime, idp):
    assert runtime.rotation_groups is not None
    sessions = [await login(broker) for _ in range(2)]
    now = dt.datetime.now(dt.UTC)
    async with runtime.engine.connect() as locker:
        # The group's statement rotates both, then waits to write its audit rows.
        await locker.execute(text("BEGIN"))
        await locker.execute(text("LOCK TABLE audit_actions IN SHARE MODE"))
        rotations = [
            asyncio.create_task(
                runtime.rotation_groups.rotate(
                    presented=tokens["refresh_token"], client_id="web", now=now
                )
            )
            for tokens in sessions
        ]
        await eventually(lambda: _waiting_on_a_lock(runtime), within=10, interval=0.02)
        # Not committed, so not answered: nobody holds a token the database could still lose.
        assert not any(rotation.done() for rotation in rotations)
        assert (await _token_row(runtime, sessions[0]["refresh_token"])).used_at is None
        await locker.execute(text("COMMIT"))
    grants = await asyncio.gather(*rotations)
    for tokens, grant in zip(sessions, grants, strict=True):
        # Answered after the commit: what the answer says is there for every other connection.
        assert grant is not None
        assert (await _token_row(runtime, tokens["refresh_token"])).used_at == now
        assert (await _token_row(runtime, grant.refresh_token)).created_at == now


async def test_a_token_whose_row_another_transaction_holds_never_holds_up_its_group(
    broker, runtime, idp
):
    assert runtime.rotation_groups is not None
    held, free = await login(broker), await login(broker)
    now = dt.datetime.now(dt.UTC)
    before = dataclasses.replace(runtime.rotation_groups.counts)
    async with runtime.engine.connect() as locker:
        await locker.execute(text("BEGIN"))
        await locker.execute(
            text("SELECT 1 FROM refresh_tokens WHERE token_hash = :h FOR UPDATE"),
            {"h": token_hash(held["refresh_token"])},
        )
        waiting, answered = (
            asyncio.create_task(
                runtime.rotation_groups.rotate(
                    presented=tokens["refresh_token"], client_id="web", now=now
                )
            )
            for tokens in (held, free)
        )
        # The group left the held token out: its neighbour is answered while the lock stays.
        grant = await asyncio.wait_for(answered, 30)
        assert grant is not None and grant.session_id == _sid(free)
        # The held one went on alone and waits there for the row, as a lone refresh would.
        await eventually(lambda: _waiting_on_a_lock(runtime), within=10, interval=0.02)
        assert not waiting.done()
        await locker.execute(text("COMMIT"))
    late = await waiting
    assert late is not None and late.session_id == _sid(held)
    assert (await _token_row(runtime, held["refresh_token"])).used_at == now
    txids = await _rotation_txids(runtime, [_sid(held), _sid(free)])
    assert len(set(txids)) == 2  # each in its own transaction
    counts = runtime.rotation_groups.counts
    assert (
        counts.groups - before.groups,
        counts.grouped - before.grouped,
        counts.alone - before.alone,
    ) == (1, 1, 1)


async def test_a_statement_error_fails_only_its_own_member(broker, runtime, idp):
    assert runtime.rotation_groups is not None
    sessions = [await login(broker) for _ in range(3)]
    now = dt.datetime.now(dt.UTC)
    # The middle one's successor already exists (a corrupted row): its insert violates the key,
    # which fails the whole statement; the members then run one by one.
    successor = _rotation(runtime, sessions[1]["refresh_token"], now).successor_hash
    async with runtime.engine.begin() as connection:
        await connection.execute(
            insert(TOKENS).values(
                token_hash=successor,
                session_id=uuid.uuid4(),
                created_at=now,
                expires_at=now + dt.timedelta(hours=1),
            )
        )
    outcomes = await asyncio.gather(
        *(
            runtime.rotation_groups.rotate(
                presented=tokens["refresh_token"], client_id="web", now=now
            )
            for tokens in sessions
        ),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], psycopg.errors.UniqueViolation)
    assert [getattr(outcome, "session_id", None) for outcome in outcomes] == [
        _sid(sessions[0]),
        None,
        _sid(sessions[2]),
    ]
    assert (await _token_row(runtime, sessions[1]["refresh_token"])).used_at is None  # untouched
    assert len(await _rotation_txids(runtime, [_sid(tokens) for tokens in sessions])) == 2


@asynccontextmanager
async def _proxied_pool(database_url: str) -> AsyncIterator[tuple[HotPathPool, Any]]:
    """A hot-path pool of one connection that reaches PostgreSQL through a cutting proxy."""
    url = make_url(database_url)
    async with cutting_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        conninfo = url.set(drivername="postgresql", port=proxy.port).render_as_string(
            hide_password=False
        )
        pool = HotPathPool(conninfo, max_size=1)
        await pool.open()
        try:
            yield pool, proxy
        finally:
            await pool.close()


async def test_a_group_whose_answer_was_lost_answers_each_member_from_its_commit_once(
    database_url, broker, runtime, idp
):
    good = [await login(broker) for _ in range(2)]
    replayed = await login(broker)
    rotated = await refresh(broker, replayed["refresh_token"])
    assert rotated.status_code == 200
    now = dt.datetime.now(dt.UTC)
    rotations = [
        _rotation(runtime, good[0]["refresh_token"], now),
        _rotation(runtime, replayed["refresh_token"], now),  # rotated before: nothing to rotate
        _rotation(runtime, good[1]["refresh_token"], now + dt.timedelta(milliseconds=3)),
    ]
    async with _proxied_pool(database_url) as (pool, proxy):
        warm = [_rotation(runtime, f"never-issued-{n}", now) for n in (1, 2)]
        assert await rotate_group_on_hot_path(pool, warm) == [None, None]  # prepared now
        proxy.cut_next_reply()
        outcomes = await rotate_group_on_hot_path(pool, rotations)
    assert proxy.cuts == 1
    # The server had committed the group: each good member gets the successor it committed,
    # and the replayed token is not handed its old successor (the caller then resolves it).
    assert [getattr(outcome, "session_id", None) for outcome in outcomes] == [
        _sid(good[0]),
        None,
        _sid(good[1]),
    ]
    for tokens, rotation, outcome in zip(good, rotations[::2], outcomes[::2], strict=True):
        assert outcome is not None and not isinstance(outcome, BaseException)
        assert outcome.refresh_token == rotation.successor
        successor = await _token_row(runtime, outcome.refresh_token)
        assert (successor.created_at, successor.used_at) == (rotation.now, None)
    # Rotated once each: one audit row per good session, in one transaction.
    assert len(set(await _rotation_txids(runtime, [_sid(t) for t in good]))) == 1
    assert len(await _rotation_txids(runtime, [_sid(t) for t in good])) == 2


async def test_a_replay_whose_answer_was_lost_is_not_handed_the_live_successor(
    database_url, broker, runtime, idp
):
    tokens = await login(broker)
    rotated = await refresh(broker, tokens["refresh_token"])
    assert rotated.status_code == 200
    async with _proxied_pool(database_url) as (pool, proxy):
        assert (
            await rotate_on_hot_path(
                pool,
                runtime.rotation,
                presented="warm-up",
                client_id="web",
                now=dt.datetime.now(dt.UTC),
            )
            is None
        )
        proxy.cut_next_reply()
        grant = await rotate_on_hot_path(
            pool,
            runtime.rotation,
            presented=tokens["refresh_token"],
            client_id="web",
            now=dt.datetime.now(dt.UTC),
        )
    assert proxy.cuts == 1
    # Its successor exists (from the first rotation), but this call committed nothing: the
    # caller resolves it as the retry or replay it is, rather than receiving the live token.
    assert grant is None


async def test_closing_answers_the_groups_already_formed_and_refuses_new_rotations(
    broker, runtime, idp
):
    tokens = await login(broker)
    assert runtime.hot_path is not None
    groups = RotationGroups(runtime.hot_path, runtime.rotation, max_size=8)
    now = dt.datetime.now(dt.UTC)
    pending = asyncio.create_task(
        groups.rotate(presented=tokens["refresh_token"], client_id="web", now=now)
    )
    await asyncio.sleep(0)  # it joined a group, not yet sent
    await groups.close()
    grant = await pending
    assert grant is not None and grant.session_id == _sid(tokens)
    with pytest.raises(psycopg.OperationalError, match="closed"):
        await groups.rotate(presented=grant.refresh_token, client_id="web", now=now)


async def test_a_member_whose_caller_gave_up_does_not_disturb_its_neighbours(broker, runtime, idp):
    sessions = [await login(broker) for _ in range(3)]
    assert runtime.rotation_groups is not None
    now = dt.datetime.now(dt.UTC)
    tasks = [
        asyncio.create_task(
            runtime.rotation_groups.rotate(
                presented=tokens["refresh_token"], client_id="web", now=now
            )
        )
        for tokens in sessions
    ]
    await asyncio.sleep(0)  # all three joined one group
    tasks[1].cancel()
    first, _, third = await asyncio.gather(*tasks, return_exceptions=True)
    assert tasks[1].cancelled()
    assert getattr(first, "session_id", None) == _sid(sessions[0])
    assert getattr(third, "session_id", None) == _sid(sessions[2])
    # The abandoned rotation committed with the group: its client's retry gets that successor.
    retry = await refresh(broker, sessions[1]["refresh_token"])
    assert retry.status_code == 200
