"""``audit_actions`` in weekly partitions on PostgreSQL: partitions kept ahead (once, however many
workers), rows without a partition caught by the default one and moved to their week, the
consumers exact across a week boundary, and the retention dropping a week only once the relay
and the rollup have read it — never the current one, never past a lock it cannot get. On
SQLite, one table: the same rule, rows deleted in bounded batches."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from broker.admin.audit import filtered_events
from broker.admin.audit_export import export_lines
from shared.audit import record_audit_core
from shared.clock import FrozenClock
from shared.db.audit_partitions import DEFAULT_PARTITION, WEEKS_AHEAD, Week, existing_weeks
from shared.db.migrate import upgrade_to_head, upgrade_to_head_async
from shared.db.tables import AUDIT_DAILY_COUNTS, AUDIT_TABLE
from shared.jobs.audit_cursor import LOGOUT_OUTBOX_CURSOR, ROLLUP_CURSOR, Position, read_cursor
from shared.jobs.audit_relay import AuditRelayPayload, relay_audit_events
from shared.jobs.audit_retention import PRUNED, AuditRetentionPayload, maintain_audit_log
from shared.jobs.audit_rollup import AuditRollupPayload, roll_up_audit_events
from shared.jobs.base import JobDeps
from shared.jobs.logout_outbox import collect_batch
from shared.settings import make_settings
from sqlalchemy import func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.accounts import Admin
from tests.support.databases import fresh_database, postgres_server_url
from tests.support.job_deps import job_deps
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

MAINTAIN = AuditRetentionPayload()
TABLE_OF_ROW = literal_column("tableoid::regclass::text").label("partition")


@pytest.fixture
def fresh_url() -> Iterator[str]:
    """A database of its own: these tests drop partitions, which the run's database shares."""
    with postgres_server_url() as server, fresh_database(server) as url:
        upgrade_to_head(url)
        yield url


@asynccontextmanager
async def deps_for(
    url: str, clock: FrozenClock, *, retention: int, redis_url: str | None = None
) -> AsyncIterator[JobDeps]:
    """Job dependencies on ``url``; with ``redis_url``, a relay on a stream of the test's own."""
    stream = f"broker:test-audit:{uuid.uuid4().hex}"
    settings = make_settings(
        database_url=url, redis_url=redis_url, audit_stream=stream, audit_retention=retention
    )
    async with job_deps(settings, clock=clock, redis_url=redis_url) as deps:
        try:
            yield deps
        finally:
            if deps.redis is not None:
                await deps.redis.delete(stream)


async def write(
    engine: AsyncEngine, subject: str, *instants: dt.datetime, action: str = "test.event"
) -> None:
    """One audit row per instant, all in one transaction."""
    async with engine.begin() as connection:
        for n, at in enumerate(instants):
            await record_audit_core(
                connection, action=action, actor="test", subject=subject, data={"n": n}, now=at
            )


async def rows_of(engine: AsyncEngine, subject: str) -> list[Any]:
    """The subject's rows with the partition holding each, in (txid, id) order."""
    async with engine.connect() as connection:
        result = await connection.execute(
            select(
                AUDIT_TABLE.c.id,
                AUDIT_TABLE.c.txid,
                AUDIT_TABLE.c.event_id,
                AUDIT_TABLE.c.occurred_at,
                TABLE_OF_ROW,
            )
            .where(AUDIT_TABLE.c.subject == subject)
            .order_by(AUDIT_TABLE.c.txid, AUDIT_TABLE.c.id)
        )
        return list(result.all())


async def weeks(engine: AsyncEngine) -> list[Week]:
    async with engine.connect() as connection:
        return await existing_weeks(connection)


async def last_position(engine: AsyncEngine) -> Position:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(AUDIT_TABLE.c.txid, AUDIT_TABLE.c.id)
                .order_by(AUDIT_TABLE.c.txid.desc(), AUDIT_TABLE.c.id.desc())
                .limit(1)
            )
        ).one()
    return (row.txid, row.id)


async def read_everything(deps: JobDeps, *, rollup: bool = False, relay: bool = False) -> None:
    """Run the rollup (with the back-channel logout outbox, the other consumer that needs only
    the database) and/or the relay until each has read every row written so far (rows become
    readable once no older transaction is running anywhere on the server)."""
    target = await last_position(deps.engine)

    async def caught_up() -> bool:
        done = True
        if rollup:
            await roll_up_audit_events(AuditRollupPayload(), deps)
            await collect_batch(deps, 10_000)
            done &= await position_of(deps, ROLLUP_CURSOR) >= target
            done &= await position_of(deps, LOGOUT_OUTBOX_CURSOR) >= target
        if relay:
            await relay_audit_events(AuditRelayPayload(), deps)
            done &= await position_of(deps, deps.settings.audit_stream) >= target
        return done

    await eventually(caught_up, within=60, interval=0.2)


async def position_of(deps: JobDeps, consumer: str) -> Position:
    async with deps.engine.connect() as connection:
        cursor = await read_cursor(connection, consumer)
    return (0, 0) if cursor is None else cursor.position


# --------------------------------------------------------------------------- partitions ahead


async def test_partitions_are_created_ahead_once_however_often_and_by_however_many_workers(
    fresh_url: str,
) -> None:
    clock = FrozenClock(dt.datetime(2040, 3, 15, 12, 0, tzinfo=dt.UTC))  # a Thursday
    current = Week.of(clock.now())
    expected = [current.later(n) for n in range(WEEKS_AHEAD + 1)]
    async with (
        deps_for(fresh_url, clock, retention=400) as first,
        deps_for(fresh_url, clock, retention=400) as second,
    ):
        created = await maintain_audit_log(MAINTAIN, first)
        again = await maintain_audit_log(MAINTAIN, first)
        clock.advance(7 * 86400)
        concurrent = await asyncio.gather(
            maintain_audit_log(MAINTAIN, first), maintain_audit_log(MAINTAIN, second)
        )
        existing = await weeks(first.engine)

    assert created["created"] == [week.name for week in expected]
    assert again["created"] == []
    # The week that came into reach: created by exactly one of the two runs.
    news = [name for result in concurrent for name in result["created"]]
    assert news == [current.later(WEEKS_AHEAD + 1).name]
    assert set(expected) <= set(existing)
    assert len(existing) == len(set(existing))


async def test_a_row_no_week_covers_lands_in_the_default_partition_and_moves_to_its_week_once(
    fresh_url: str, redis_url: str
) -> None:
    clock = FrozenClock(dt.datetime(2041, 1, 7, tzinfo=dt.UTC))
    far = dt.datetime(2041, 6, 5, 8, 0, tzinfo=dt.UTC)  # beyond every partition made ahead
    subject = f"adopted-{uuid.uuid4().hex}"
    async with deps_for(fresh_url, clock, retention=0, redis_url=redis_url) as deps:
        await maintain_audit_log(MAINTAIN, deps)
        await write(deps.engine, subject, far, far + dt.timedelta(hours=1))
        await read_everything(deps, relay=True)  # published while in the default partition
        await write(deps.engine, subject, far + dt.timedelta(hours=2))
        before = await rows_of(deps.engine, subject)

        result = await maintain_audit_log(MAINTAIN, deps)
        after = await rows_of(deps.engine, subject)
        await read_everything(deps, relay=True)
        stream = await deps.redis.xrange(deps.settings.audit_stream)  # type: ignore[union-attr]

    assert {row.partition for row in before} == {DEFAULT_PARTITION}
    assert result["created"] == [Week.of(far).name] and result["moved_from_default"] == 3
    assert {row.partition for row in after} == {Week.of(far).name}
    # Moved with their ids and transaction ids: the relay's positions still name them.
    assert [row[:4] for row in after] == [row[:4] for row in before]
    published = [fields[b"event_id"].decode() for _id, fields in stream]
    assert published.count(str(before[0].event_id)) == 1
    assert [event for event in published if event in {str(row.event_id) for row in before}] == [
        str(row.event_id) for row in before
    ]


# --------------------------------------------------------------------------- a week boundary


async def test_rows_on_both_sides_of_a_week_boundary_are_relayed_counted_listed_and_exported_once(
    admin: Admin, database_url: str, redis_url: str
) -> None:
    _runtime, broker, headers, _admin_id = admin
    monday = Week.of(dt.datetime(2042, 6, 4, tzinfo=dt.UTC)).end
    sunday_night = monday - dt.timedelta(microseconds=1)
    subject = f"boundary-{uuid.uuid4().hex}"
    action = f"test.boundary.{uuid.uuid4().hex[:8]}"
    clock = FrozenClock(monday - dt.timedelta(days=1))
    # The run's shared database: retention 0, so this job drops nothing of other tests'.
    async with deps_for(database_url, clock, retention=0, redis_url=redis_url) as deps:
        await maintain_audit_log(MAINTAIN, deps)
        # One transaction writing to both partitions in turn, then one on each side.
        await write(
            deps.engine,
            subject,
            sunday_night,
            monday,
            sunday_night - dt.timedelta(microseconds=1),
            monday + dt.timedelta(microseconds=1),
            action=action,
        )
        await write(deps.engine, subject, monday - dt.timedelta(seconds=1), action=action)
        await write(deps.engine, subject, monday + dt.timedelta(seconds=1), action=action)
        rows = await rows_of(deps.engine, subject)
        await read_everything(deps, rollup=True, relay=True)
        stream = await deps.redis.xrange(deps.settings.audit_stream)  # type: ignore[union-attr]
        async with deps.engine.connect() as connection:
            counted = dict(
                (
                    await connection.execute(
                        select(AUDIT_DAILY_COUNTS.c.day, AUDIT_DAILY_COUNTS.c["count"]).where(
                            AUDIT_DAILY_COUNTS.c.action == action
                        )
                    )
                ).all()
            )
        exported = b"".join(
            [
                chunk
                async for chunk in export_lines(
                    deps.engine, filtered_events({"subject": subject}), "jsonl", batch_size=2
                )
            ]
        )

    assert {row.partition for row in rows} == {
        Week.of(sunday_night).name,
        Week.of(monday).name,
    }
    # The relay: each row once, in (txid, id) order, whichever partition holds it.
    relayed = [fields for _id, fields in stream if fields[b"subject"] == subject.encode()]
    assert [fields[b"event_id"].decode() for fields in relayed] == [
        str(row.event_id) for row in rows
    ]
    # The rollup: each row counted once, on its own day.
    assert counted == {sunday_night.date(): 3, monday.date(): 3}
    # The listing, two events a page, and the export, two rows a read: each event once,
    # newest first by (occurred_at, id).
    newest_first = [
        row.id for row in sorted(rows, key=lambda r: (r.occurred_at, r.id), reverse=True)
    ]
    listed: list[int] = []
    cursor = None
    while True:
        query = {"subject": subject, "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await broker.get("/admin/oauth2/audit", params=query, headers=headers)
        assert page.status_code == 200, page.text
        listed += [event["id"] for event in page.json()["events"]]
        if (cursor := page.json()["next_cursor"]) is None:
            break
    assert listed == newest_first
    assert [json.loads(line)["id"] for line in exported.decode().splitlines()] == newest_first
    download = await broker.get(
        "/admin/oauth2/audit", params={"subject": subject, "format": "csv"}, headers=headers
    )
    assert [int(line.split(",")[0]) for line in download.text.splitlines()[1:]] == newest_first


# --------------------------------------------------------------------------- retention


async def test_a_week_past_the_retention_is_dropped_only_once_the_relay_and_the_rollup_read_it(
    fresh_url: str, redis_url: str
) -> None:
    old = Week.of(dt.datetime(2043, 3, 4, tzinfo=dt.UTC))
    clock = FrozenClock(old.start + dt.timedelta(days=1))
    subject = f"retained-{uuid.uuid4().hex}"
    async with deps_for(fresh_url, clock, retention=7, redis_url=redis_url) as deps:
        stream = deps.settings.audit_stream
        await maintain_audit_log(MAINTAIN, deps)
        await write(deps.engine, subject, *(old.start + dt.timedelta(hours=h) for h in (1, 2, 3)))
        # Two weeks on: the old week ended more than 7 days ago.
        clock.advance(14 * 86400 + 3600)
        await write(deps.engine, subject, clock.now())
        unread = await maintain_audit_log(MAINTAIN, deps)
        await read_everything(deps, rollup=True)
        unread_by_relay = await maintain_audit_log(MAINTAIN, deps)
        kept = await rows_of(deps.engine, subject)
        await read_everything(deps, relay=True)
        dropped = await maintain_audit_log(MAINTAIN, deps)
        left = await rows_of(deps.engine, subject)
        existing = await weeks(deps.engine)
        async with deps.engine.connect() as connection:
            pruned = (
                await connection.execute(
                    select(AUDIT_TABLE.c.actor, AUDIT_TABLE.c.data).where(
                        AUDIT_TABLE.c.action == PRUNED
                    )
                )
            ).all()

    assert unread["dropped"] == [] and unread["held"] == [
        {"partition": old.name, "unread_by": [ROLLUP_CURSOR, LOGOUT_OUTBOX_CURSOR, stream]}
    ]
    assert unread_by_relay["dropped"] == []
    assert unread_by_relay["held"] == [{"partition": old.name, "unread_by": [stream]}]
    assert len(kept) == 4  # a held week keeps its rows
    assert dropped["dropped"] == [old.name] and dropped["held"] == []
    assert [row.occurred_at for row in left] == [clock.now()]
    assert old not in existing
    assert Week.of(clock.now()) in existing and old.later(1) in existing
    ((actor, data),) = pruned
    assert actor == "system:worker"
    assert data["partition"] == old.name and data["retention_days"] == 7
    assert (data["from"], data["to"]) == ("2043-03-02T00:00:00Z", "2043-03-09T00:00:00Z")


async def test_even_the_shortest_retention_never_drops_the_current_week(fresh_url: str) -> None:
    current = Week.of(dt.datetime(2044, 8, 10, tzinfo=dt.UTC))
    last_moment = current.end - dt.timedelta(microseconds=1)
    clock = FrozenClock(current.start - dt.timedelta(days=1))
    subject = f"current-{uuid.uuid4().hex}"
    async with deps_for(fresh_url, clock, retention=1) as deps:  # no Redis: the rollup only
        await maintain_audit_log(MAINTAIN, deps)
        await write(deps.engine, subject, clock.now(), current.start, last_moment)
        clock.advance(8 * 86400 - 1e-6)  # the current week's last instant
        assert clock.now() == last_moment
        await read_everything(deps, rollup=True)
        first = await maintain_audit_log(MAINTAIN, deps)
        # Once its audit row (written into the current week) has been read too: still kept.
        await read_everything(deps, rollup=True)
        second = await maintain_audit_log(MAINTAIN, deps)
        left = await rows_of(deps.engine, subject)
        existing = await weeks(deps.engine)

    assert first["dropped"] == [current.later(-1).name]
    assert second["dropped"] == [] and second["held"] == []
    assert current in existing
    assert [row.occurred_at for row in left] == [current.start, last_moment]


async def test_a_drop_that_cannot_get_its_lock_in_time_is_left_to_the_next_run(
    fresh_url: str,
) -> None:
    old = Week.of(dt.datetime(2045, 1, 4, tzinfo=dt.UTC))
    clock = FrozenClock(old.start)
    subject = f"locked-{uuid.uuid4().hex}"
    async with (
        deps_for(fresh_url, clock, retention=7) as deps,
        deps_for(fresh_url, clock, retention=0) as keeps_all,
    ):
        await maintain_audit_log(MAINTAIN, deps)  # drops the migration's (empty) weeks too
        await write(deps.engine, subject, old.start + dt.timedelta(hours=1))
        await read_everything(deps, rollup=True)
        clock.advance(15 * 86400)
        await maintain_audit_log(MAINTAIN, keeps_all)  # the weeks ahead of the new date
        async with deps.engine.connect() as reader:
            # A long read (an export, say) of the table: it holds ACCESS SHARE till it ends.
            await reader.execute(select(func.count()).select_from(AUDIT_TABLE))
            deferred = await maintain_audit_log(MAINTAIN, deps)
            await reader.rollback()
        done = await maintain_audit_log(MAINTAIN, deps)
        left = await rows_of(deps.engine, subject)

    assert deferred["dropped"] == [] and deferred["deferred"] == [old.name]
    assert done["dropped"] == [old.name] and done["deferred"] == []
    assert left == []


async def test_a_retention_of_zero_keeps_every_week(fresh_url: str) -> None:
    old = Week.of(dt.datetime(2046, 2, 4, tzinfo=dt.UTC))
    clock = FrozenClock(old.start)
    subject = f"forever-{uuid.uuid4().hex}"
    async with deps_for(fresh_url, clock, retention=0) as deps:
        await maintain_audit_log(MAINTAIN, deps)
        await write(deps.engine, subject, old.start)
        await read_everything(deps, rollup=True)
        clock.advance(1000 * 86400)
        result = await maintain_audit_log(MAINTAIN, deps)
        left = await rows_of(deps.engine, subject)

    assert result["dropped"] == [] and result["held"] == []
    assert len(left) == 1


async def test_on_sqlite_rows_past_the_retention_go_in_bounded_batches_once_read(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
    await upgrade_to_head_async(url)
    clock = FrozenClock(dt.datetime(2047, 1, 1, tzinfo=dt.UTC))
    old = clock.now()
    subject = f"sqlite-{uuid.uuid4().hex}"
    small = AuditRetentionPayload(batch_size=3, max_batches=2)
    async with job_deps(make_settings(database_url=url, audit_retention=30), clock=clock) as deps:
        await write(deps.engine, subject, *(old + dt.timedelta(seconds=n) for n in range(7)))
        # The rollup and the logout outbox read those 7 (no Redis: no relay).
        await roll_up_audit_events(AuditRollupPayload(), deps)
        await collect_batch(deps, 10_000)
        await write(deps.engine, subject, *(old + dt.timedelta(seconds=n) for n in range(7, 12)))
        clock.advance(31 * 86400)
        await write(deps.engine, subject, clock.now())
        first = await maintain_audit_log(small, deps)  # two batches of three: the run's bound
        second = await maintain_audit_log(small, deps)  # the last row read; five are unread
        kept = await rows_of_sqlite(deps.engine, subject)
        await roll_up_audit_events(AuditRollupPayload(), deps)
        await collect_batch(deps, 10_000)
        third = await maintain_audit_log(small, deps)
        left = await rows_of_sqlite(deps.engine, subject)
        async with deps.engine.connect() as connection:
            pruned = (
                await connection.scalars(
                    select(AUDIT_TABLE.c.data)
                    .where(AUDIT_TABLE.c.action == PRUNED)
                    .order_by(AUDIT_TABLE.c.id)
                )
            ).all()

    held = [{"before": "2047-01-02T00:00:00Z", "unread_by": [ROLLUP_CURSOR, LOGOUT_OUTBOX_CURSOR]}]
    assert first == {"outcome": "ok", "deleted": 6, "held": held}
    assert second == {"outcome": "ok", "deleted": 1, "held": held}
    assert [row.occurred_at for row in kept] == [
        *(old + dt.timedelta(seconds=n) for n in range(7, 12)),
        clock.now(),
    ]
    assert third == {"outcome": "ok", "deleted": 5, "held": []}
    assert [row.occurred_at for row in left] == [clock.now()]
    # One audit row per batch, in the batch's transaction.
    assert [data["rows"] for data in pruned] == [3, 3, 1, 3, 2]
    assert {data["before"] for data in pruned} == {"2047-01-02T00:00:00Z"}


async def rows_of_sqlite(engine: AsyncEngine, subject: str) -> list[Any]:
    async with engine.connect() as connection:
        result = await connection.execute(
            select(AUDIT_TABLE.c.id, AUDIT_TABLE.c.occurred_at)
            .where(AUDIT_TABLE.c.subject == subject)
            .order_by(AUDIT_TABLE.c.id)
        )
        return list(result.all())
