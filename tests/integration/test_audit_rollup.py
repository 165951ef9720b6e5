"""The audit rollup: committed audit rows are counted per UTC day, action and provider exactly
once (late commits, crashes, concurrent rollups, several batches), users' last_seen_at only moves
forward, and it runs with or without Redis, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

import pytest
from shared.audit import record_audit_core
from shared.crypto.keyring import Keyring
from shared.db.migrate import upgrade_to_head_async
from shared.db.tables import AUDIT_CURSORS as CURSORS
from shared.db.tables import AUDIT_DAILY_COUNTS as COUNTS
from shared.db.tables import AUDIT_TABLE, SESSIONS, USERS
from shared.jobs.audit_cursor import Position
from shared.jobs.audit_rollup import (
    ROLLUP_CURSOR,
    AuditRollupPayload,
    roll_up_audit_events,
    rollup_progress,
)
from shared.jobs.base import JobDeps, JobName, JobResult
from shared.jobs.schedule import periodic_jobs
from shared.settings import make_settings
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import broker_settings
from tests.support.job_deps import job_deps
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

DAY = dt.datetime(2031, 5, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
async def deps(database_url: str, upstream_idp: str, keyring: Keyring) -> AsyncIterator[JobDeps]:
    # A Redis nobody listens on: the rollup needs only the database.
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = broker_settings(database_url, upstream_idp, keyring, redis_url=dead_redis)
    async with job_deps(settings, redis_url=dead_redis) as job_dependencies:
        yield job_dependencies


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


async def write(
    engine: AsyncEngine, action: str, when: dt.datetime, subject: str | None = None, **data: Any
) -> None:
    async with engine.begin() as connection:
        await record_audit_core(
            connection, action=action, actor="test", subject=subject, data=data, now=when
        )


async def create_user(engine: AsyncEngine, *, last_seen_at: dt.datetime | None = None) -> str:
    user_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(USERS).values(
                id=user_id, created_at=DAY, updated_at=DAY, last_seen_at=last_seen_at
            )
        )
    return str(user_id)


async def create_session(engine: AsyncEngine, user_id: str, provider: str) -> str:
    session_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(SESSIONS).values(
                id=session_id,
                user_id=uuid.UUID(user_id),
                client_id="web",
                provider=provider,
                scope="openid",
                auth_time=DAY,
                created_at=DAY,
            )
        )
    return str(session_id)


async def counts(engine: AsyncEngine, action: str) -> dict[tuple[str, str], int]:
    """``{(day, provider): count}`` of one action."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(COUNTS.c.day, COUNTS.c.provider, COUNTS.c["count"]).where(
                COUNTS.c.action == action
            )
        )
        return {(day.isoformat(), provider): n for day, provider, n in rows.all()}


async def last_seen(engine: AsyncEngine, user_id: str) -> dt.datetime | None:
    async with engine.connect() as connection:
        seen: dt.datetime | None = await connection.scalar(
            select(USERS.c.last_seen_at).where(USERS.c.id == uuid.UUID(user_id))
        )
        return seen


async def last_position(engine: AsyncEngine, actions: Collection[str]) -> Position:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(AUDIT_TABLE.c.txid, AUDIT_TABLE.c.id)
                .where(AUDIT_TABLE.c.action.in_(actions))
                .order_by(AUDIT_TABLE.c.txid.desc(), AUDIT_TABLE.c.id.desc())
                .limit(1)
            )
        ).one()
    return (row.txid or 0, row.id)


async def roll_up_past(
    deps: JobDeps, *actions: str, payload: AuditRollupPayload | None = None
) -> list[JobResult]:
    """Run the rollup until its cursor is past every row of ``actions``: a transaction open
    anywhere on the server (another test run's) holds rows back for a moment."""
    target = await last_position(deps.engine, actions)
    results = []
    async with asyncio.timeout(30):
        while True:
            results.append(await roll_up_audit_events(payload or AuditRollupPayload(), deps))
            async with deps.engine.connect() as connection:
                progress = await rollup_progress(connection)
            if progress is not None and progress.position >= target:
                return results
            await asyncio.sleep(0.05)


async def catch_up(deps: JobDeps) -> None:
    """Count whatever earlier tests left, so a test's own rows are the whole backlog."""
    marker = unique("test.rollup.mark")
    await write(deps.engine, marker, DAY)
    await roll_up_past(deps, marker)


async def test_rows_are_counted_per_utc_day_action_and_provider_exactly_once(
    deps: JobDeps,
) -> None:
    engine = deps.engine
    action = unique("test.rollup")
    github, corp = unique("gh"), unique("corp")
    user = await create_user(engine)
    session = await create_session(engine, user, corp)
    late = dt.datetime(2031, 5, 1, 23, 59, 59, 999_999, tzinfo=dt.UTC)
    next_day = dt.datetime(2031, 5, 2, 0, 0, tzinfo=dt.UTC)
    # 21:30 in UTC-3 is 00:30 the next UTC day.
    west = dt.datetime(2031, 5, 1, 21, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    await write(engine, action, late, provider=github)
    await write(engine, action, DAY, provider=github, sid=session)  # the event's own wins
    await write(engine, action, next_day, provider=github)
    await write(engine, action, west, provider=github)
    await write(engine, action, DAY, sid=session)
    await write(engine, action, late, sid=session)
    await write(engine, action, DAY, sid=str(uuid.uuid4()))  # a session that is gone
    await write(engine, action, DAY, sid="not-a-uuid")
    await write(engine, action, next_day)

    await roll_up_past(deps, action)
    counted = await counts(engine, action)
    second = await roll_up_audit_events(AuditRollupPayload(), deps)

    assert counted == {
        ("2031-05-01", github): 2,
        ("2031-05-02", github): 2,
        ("2031-05-01", corp): 2,
        ("2031-05-01", ""): 2,
        ("2031-05-02", ""): 1,
    }
    assert second == {"outcome": "ok", "counted": 0}
    assert await counts(engine, action) == counted


async def test_rows_of_a_transaction_still_open_are_counted_once_it_commits(
    deps: JobDeps,
) -> None:
    engine = deps.engine
    action = unique("test.rollup")
    async with engine.connect() as slow:
        slow_tx = await slow.begin()
        await record_audit_core(
            slow, action=action, actor="test", subject=None, data={"n": "slow"}, now=DAY
        )
        # A later transaction (higher row id) commits while the first is still open.
        await write(engine, action, DAY, n=1)
        await roll_up_audit_events(AuditRollupPayload(), deps)
        before = await counts(engine, action)
        await slow_tx.commit()
    await roll_up_past(deps, action)

    # Counting the committed row would have moved the cursor past the open one's.
    assert before == {}
    assert await counts(engine, action) == {("2031-05-01", ""): 2}


async def test_last_seen_at_moves_forward_only(deps: JobDeps) -> None:
    engine = deps.engine
    first, later, latest = (DAY + dt.timedelta(hours=hours) for hours in (0, 2, 4))
    user = await create_user(engine)
    ahead = await create_user(engine, last_seen_at=latest)

    await write(engine, "user.signed_in", first, user, provider="corp")
    await write(engine, "user.signed_in", first, ahead, provider="corp")
    await write(engine, "user.signed_in", first, "not-a-user-id", provider="corp")
    await roll_up_past(deps, "user.signed_in")
    after_sign_in = await last_seen(engine, user)

    await write(engine, "refresh_token.rotated", first - dt.timedelta(hours=1), user)
    await roll_up_past(deps, "refresh_token.rotated")
    after_older_refresh = await last_seen(engine, user)

    # The latest of one batch wins; other actions do not count as being seen.
    await write(engine, "refresh_token.rotated", later, user)
    await write(engine, "refresh_token.rotated", later - dt.timedelta(minutes=5), user)
    await write(engine, "user.updated", latest, user)
    await roll_up_past(deps, "refresh_token.rotated", "user.updated")

    assert after_sign_in == first
    assert after_older_refresh == first
    assert await last_seen(engine, user) == later
    assert await last_seen(engine, ahead) == latest


async def test_a_backlog_larger_than_a_batch_is_counted_over_several_batches(
    deps: JobDeps,
) -> None:
    await catch_up(deps)
    action = unique("test.rollup")
    for minute in range(23):
        await write(deps.engine, action, DAY + dt.timedelta(minutes=minute))
    async with deps.engine.connect() as connection:
        before = await rollup_progress(connection)

    results = await roll_up_past(deps, action, payload=AuditRollupPayload(batch_size=4))
    async with deps.engine.connect() as connection:
        after = await rollup_progress(connection)

    assert await counts(deps.engine, action) == {("2031-05-01", ""): 23}
    assert before is not None and after is not None
    assert after.rows - before.rows == sum(result["counted"] for result in results) == 23
    assert after.updated_at >= before.updated_at


async def test_concurrent_rollups_count_each_row_once(deps: JobDeps) -> None:
    action = unique("test.rollup")
    for n in range(60):
        await write(deps.engine, action, DAY, n=n)

    payload = AuditRollupPayload(batch_size=5)
    await asyncio.gather(*(roll_up_audit_events(payload, deps) for _ in range(4)))
    await roll_up_past(deps, action)

    assert await counts(deps.engine, action) == {("2031-05-01", ""): 60}


async def test_a_rollup_finds_the_cursor_taken_by_another_and_stops(deps: JobDeps) -> None:
    await catch_up(deps)
    action = unique("test.rollup")
    await write(deps.engine, action, DAY)
    async with deps.engine.connect() as other, other.begin():
        await other.execute(
            select(CURSORS).where(CURSORS.c.stream == ROLLUP_CURSOR).with_for_update()
        )
        busy = await roll_up_audit_events(AuditRollupPayload(), deps)
    await roll_up_past(deps, action)

    assert busy == {"outcome": "ok", "counted": 0, "reason": "busy"}
    assert await counts(deps.engine, action) == {("2031-05-01", ""): 1}


async def test_a_rollup_killed_before_its_commit_counts_nothing_and_the_next_counts_all(
    deps: JobDeps,
) -> None:
    await catch_up(deps)
    engine = deps.engine
    action = unique("test.rollup")
    user = await create_user(engine)
    await write(engine, action, DAY)
    await write(engine, "user.signed_in", DAY, user, provider="corp")
    await write(engine, action, DAY)

    await wait_until_readable(engine, action)  # or the rollup could finish without blocking
    async with engine.connect() as holder:
        # Holding the user's row stops the rollup inside its transaction, counts written.
        holder_tx = await holder.begin()
        await holder.execute(
            select(USERS.c.id).where(USERS.c.id == uuid.UUID(user)).with_for_update()
        )
        holder_pid = await holder.scalar(text("SELECT pg_backend_pid()"))
        rollup = asyncio.create_task(roll_up_audit_events(AuditRollupPayload(), deps))
        blocked = await backend_blocked_by(engine, holder_pid)
        await engine_scalar(engine, "SELECT pg_terminate_backend(:pid)", pid=blocked)
        with pytest.raises(DBAPIError):
            await rollup
        during = await counts(engine, action)
        await holder_tx.rollback()
    await roll_up_past(deps, action, "user.signed_in")

    assert during == {}
    assert await counts(engine, action) == {("2031-05-01", ""): 2}
    assert await last_seen(engine, user) == DAY


async def wait_until_readable(engine: AsyncEngine, *actions: str) -> None:
    """Wait until no transaction older than the rows of ``actions`` is running anywhere on the
    server: the rollup reads only rows of transactions older than every running one."""
    txid, _ = await last_position(engine, actions)
    query = "SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint"
    async with asyncio.timeout(30):
        while await engine_scalar(engine, query) <= txid:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # another server process cannot set an Event


async def backend_blocked_by(engine: AsyncEngine, pid: int) -> int:
    """The id of the server process waiting for a lock the process ``pid`` holds."""
    query = "SELECT pid FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
    async with asyncio.timeout(10):
        while not (blocked := await engine_scalar(engine, query, pid=pid)):  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # another server process cannot set an Event
    return int(blocked)


async def engine_scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as connection:
        return await connection.scalar(text(sql), params)


async def test_the_rollup_counts_on_sqlite_too(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
    await upgrade_to_head_async(url)
    async with job_deps(make_settings(database_url=url)) as deps:
        user = await create_user(deps.engine)
        session = await create_session(deps.engine, user, "dev")
        for n in range(7):
            await write(
                deps.engine, "refresh_token.rotated", DAY + dt.timedelta(hours=n), user, sid=session
            )
        await write(deps.engine, "user.signed_in", DAY, user, provider="dev")
        await write(deps.engine, "user.signed_in", DAY + dt.timedelta(days=1), user)

        first = await roll_up_audit_events(AuditRollupPayload(batch_size=3), deps)
        second = await roll_up_audit_events(AuditRollupPayload(batch_size=3), deps)

        assert first == {"outcome": "ok", "counted": 9}
        assert second == {"outcome": "ok", "counted": 0}
        assert await counts(deps.engine, "refresh_token.rotated") == {("2031-05-01", "dev"): 7}
        assert await counts(deps.engine, "user.signed_in") == {
            ("2031-05-01", "dev"): 1,
            ("2031-05-02", ""): 1,
        }
        assert await last_seen(deps.engine, user) == DAY + dt.timedelta(days=1)


def test_the_rollup_is_scheduled_with_and_without_redis(
    upstream_idp: str, keyring: Keyring
) -> None:
    for redis_url in (None, "redis://127.0.0.1:6379/0"):
        settings = broker_settings(
            "sqlite+aiosqlite://",
            upstream_idp,
            keyring,
            redis_url=redis_url,
            audit_rollup_interval=45,
        )
        (rollup,) = [
            job for job in periodic_jobs(settings) if job.name is JobName.ROLL_UP_AUDIT_EVENTS
        ]
        assert rollup.interval == 45
        (snapshot,) = [job for job in periodic_jobs(settings) if job.name is JobName.SNAPSHOT_STATS]
        assert snapshot.interval == 45
