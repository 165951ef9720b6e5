"""The hot-path pool on real PostgreSQL: bounded, first come first served, self-healing; and the
refresh rotation's answer to a connection that fails in the middle of its statement."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from shared.auth_sessions import SessionGrant, create_session
from shared.crypto.keyring import Keyring
from shared.crypto.opaque import token_hash
from shared.db.base import table
from shared.db.database import create_engine
from shared.db.hot_path import HotPathPool, PoolTimeout, create_hot_path_pool
from shared.models import AuditAction, AuthSession, RefreshToken, User
from shared.refresh_rotation.hot_path import rotate_on_hot_path
from shared.refresh_rotation.policy import RotationPolicy
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.tcp_proxy import cutting_proxy

pytestmark = pytest.mark.integration

CLIENT = "web"
POLICY = RotationPolicy.build(Keyring.generate(), refresh_ttl=3600, reuse_interval=0)


def _conninfo(database_url: str, **changes: object) -> str:
    url = make_url(database_url).set(drivername="postgresql", **changes)
    return url.render_as_string(hide_password=False)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[HotPathPool]:
    pool = create_hot_path_pool(database_url, max_size=3)
    assert pool is not None
    await pool.open()
    yield pool
    await pool.close()


async def _backends(engine: AsyncEngine, application_name: str) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": application_name},
        )
    return int(count or 0)


async def test_statement_errors_keep_the_connection_and_rows_come_back(pool):
    assert await pool.fetchone("SELECT $1::int + 1", (41,)) == (42,)
    with pytest.raises(psycopg.errors.DivisionByZero):
        await pool.fetchone("SELECT 1 / $1::int", (0,))
    assert await pool.fetchone("SELECT 'still here'", ()) == ("still here",)
    assert pool.size == 1
    assert await pool.fetchone("SELECT 1 WHERE false", ()) is None


async def test_pool_stays_within_max_size_and_serves_waiters_first_come_first_served(
    database_url, engine
):
    name = f"hot-path-{uuid.uuid4().hex[:8]}"
    pool = HotPathPool(_conninfo(database_url, query={"application_name": name}), max_size=2)
    await pool.open()
    try:
        done: list[tuple[int, int]] = []  # (round, caller) in completion order

        async def caller(index: int) -> None:
            for round_ in (1, 2):  # the second call comes back while others still wait
                await pool.fetchone("SELECT pg_sleep(0.01)", ())
                done.append((round_, index))

        peak = 0

        async def watch() -> None:
            nonlocal peak
            while len(done) < 24:
                peak = max(peak, await _backends(engine, name))
                await asyncio.sleep(0.005)

        callers = []
        for index in range(12):
            callers.append(asyncio.create_task(caller(index)))
            await asyncio.sleep(0)  # they queue in this order
        await asyncio.gather(watch(), *callers)
        assert pool.size == 2
        assert 1 <= peak <= 2
        # A caller coming back queues behind those already waiting: it never jumps the line.
        # Connections pass to waiters in arrival order, so caller 0's second call starts only
        # after the 11th call ends (the first ten hand-offs go to callers 2-11).
        first_second = next(i for i, (round_, _) in enumerate(done) if round_ == 2)
        assert first_second >= 11, done
    finally:
        await pool.close()


async def test_a_connection_the_server_killed_is_replaced(pool, engine):
    (pid,) = await pool.fetchone("SELECT pg_backend_pid()", ()) or (None,)
    async with engine.connect() as connection:
        await connection.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
    with pytest.raises(psycopg.OperationalError):
        await pool.fetchone("SELECT 1", ())
    assert pool.size == 0
    (new_pid,) = await pool.fetchone("SELECT pg_backend_pid()", ()) or (None,)
    assert new_pid != pid
    assert pool.size == 1


async def test_a_cancelled_waiter_gives_its_turn_back(database_url):
    pool = create_hot_path_pool(database_url, max_size=1)
    assert pool is not None
    await pool.open()
    try:
        busy = asyncio.create_task(pool.fetchone("SELECT pg_sleep(0.1)", ()))
        await asyncio.sleep(0.02)
        waiting = asyncio.create_task(pool.fetchone("SELECT 1", ()))
        await asyncio.sleep(0.01)
        waiting.cancel()
        await busy
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await asyncio.wait_for(pool.fetchone("SELECT 2", ()), 2) == (2,)
        assert pool.size == 1
    finally:
        await pool.close()


# --------------------------------------------------------------------------- rotation


async def _session_with_token(engine: AsyncEngine) -> tuple[uuid.UUID, str]:
    now = dt.datetime.now(dt.UTC)
    user_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(table(User)).values(
                id=user_id,
                email=f"{user_id.hex[:8]}@example.test",
                email_verified=True,
                display_name="Rotating User",
                status="active",
                created_at=now,
                updated_at=now,
            )
        )
        grant = await create_session(
            connection,
            user_id=user_id,
            client_id=CLIENT,
            provider="dev",
            profile_id=None,
            scope="openid email",
            auth_time=now,
            now=now,
            refresh_ttl=3600,
        )
    return grant.session_id, grant.refresh_token


async def _family(engine: AsyncEngine, session_id: uuid.UUID) -> tuple[object, int, int, int]:
    """(revoked_at, live tokens, used tokens, rotation audit rows) of a session."""
    tokens = table(RefreshToken)
    async with engine.connect() as connection:
        revoked = await connection.scalar(
            select(table(AuthSession).c.revoked_at).where(table(AuthSession).c.id == session_id)
        )
        rows = (
            await connection.execute(
                select(tokens.c.used_at).where(tokens.c.session_id == session_id)
            )
        ).all()
        audits = await connection.scalar(
            select(func.count())
            .select_from(table(AuditAction))
            .where(
                table(AuditAction).c.action == "refresh_token.rotated",
                table(AuditAction).c.data["sid"].as_string() == str(session_id),
            )
        )
    live = sum(1 for row in rows if row.used_at is None)
    return revoked, live, len(rows) - live, int(audits or 0)


async def _rotate(pool: HotPathPool, presented: str) -> SessionGrant | None:
    return await rotate_on_hot_path(
        pool, POLICY, presented=presented, client_id=CLIENT, now=dt.datetime.now(dt.UTC)
    )


async def test_rotation_whose_answer_was_lost_returns_the_successor_it_committed(
    database_url, engine
):
    session_id, first = await _session_with_token(engine)
    url = make_url(database_url)
    async with cutting_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        pool = HotPathPool(_conninfo(database_url, port=proxy.port), max_size=1)
        await pool.open()
        try:
            warm = await _rotate(pool, first)  # prepares the statement on the connection
            assert warm is not None
            proxy.cut_next_reply()
            grant = await _rotate(pool, warm.refresh_token)
        finally:
            await pool.close()
    assert proxy.cuts == 1
    assert grant is not None and grant.session_id == session_id
    # The server had committed: the client gets that rotation's successor, not a replay verdict.
    revoked, live, used, audits = await _family(engine, session_id)
    assert revoked is None
    assert (live, used, audits) == (1, 2, 2)
    async with engine.connect() as connection:
        successor = await connection.scalar(
            select(table(RefreshToken).c.used_at).where(
                table(RefreshToken).c.token_hash == token_hash(grant.refresh_token)
            )
        )
    assert successor is None  # the token the client now holds is the live one


async def test_rotation_cut_off_while_its_statement_waits_on_the_server_revokes_nothing(
    database_url, engine
):
    # The statement reaches the server and waits on the token's row lock (a slow commit, a
    # synchronous replica); the network drops; the server-side statement still commits later.
    session_id, first = await _session_with_token(engine)
    url = make_url(database_url)
    async with cutting_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        pool = HotPathPool(_conninfo(database_url, port=proxy.port), max_size=2)
        await pool.open()
        try:
            async with engine.connect() as locker:
                await locker.execute(text("BEGIN"))
                await locker.execute(
                    text("SELECT 1 FROM refresh_tokens WHERE token_hash = :h FOR UPDATE"),
                    {"h": token_hash(first)},
                )
                rotation = asyncio.create_task(_rotate(pool, first))
                await asyncio.sleep(0.3)  # sent, and waiting for the lock
                proxy.hang_up()
                await asyncio.sleep(0.3)  # the client is already recovering
                await locker.execute(text("COMMIT"))
            grant = await rotation
        finally:
            await pool.close()
    assert grant is not None and grant.session_id == session_id
    revoked, live, used, audits = await _family(engine, session_id)
    assert revoked is None
    assert (live, used, audits) == (1, 1, 1)  # rotated once, by the first statement


async def test_after_a_server_restart_the_first_failure_drops_every_idle_connection(
    database_url, engine
):
    name = f"restart-{uuid.uuid4().hex[:8]}"
    pool = HotPathPool(_conninfo(database_url, query={"application_name": name}), max_size=4)
    await pool.open()
    try:
        await asyncio.gather(*(pool.fetchone("SELECT pg_sleep(0.05)", ()) for _ in range(4)))
        assert pool.size == 4
        async with engine.connect() as connection:  # every pooled backend dies while idle
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": name},
            )
        session_id, first = await _session_with_token(engine)
        grant = await _rotate(pool, first)  # fails once, then runs on a new connection
        assert grant is not None and grant.session_id == session_id
        assert pool.size == 1
    finally:
        await pool.close()


async def test_checkout_times_out_and_close_fails_waiters(database_url):
    pool = HotPathPool(_conninfo(database_url), max_size=1, timeout=0.2)
    await pool.open()
    busy = asyncio.create_task(pool.fetchone("SELECT 7 FROM pg_sleep(0.6)", ()))
    await asyncio.sleep(0.05)
    with pytest.raises(PoolTimeout):
        await pool.fetchone("SELECT 1", ())
    waiting = asyncio.create_task(pool.fetchone("SELECT 1", ()))
    await asyncio.sleep(0.05)
    await pool.close()
    with pytest.raises(psycopg.OperationalError, match="closed"):
        await waiting
    assert await busy == (7,)  # the call in flight still finishes
    assert pool.size == 0  # its connection was closed on return


async def test_rotation_on_a_connection_that_died_while_idle_runs_once_and_revokes_nothing(
    pool, engine
):
    session_id, first = await _session_with_token(engine)
    (pid,) = await pool.fetchone("SELECT pg_backend_pid()", ()) or (None,)
    async with engine.connect() as connection:
        await connection.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
    grant = await _rotate(pool, first)
    assert grant is not None and grant.session_id == session_id
    revoked, live, used, audits = await _family(engine, session_id)
    assert revoked is None
    assert (live, used, audits) == (1, 1, 1)
    again = await _rotate(pool, grant.refresh_token)
    assert again is not None
