"""Audit retention: keep ``audit_actions``' weekly partitions in place ahead of time, and delete
audit rows older than ``BROKER_AUDIT_RETENTION`` days once every consumer has read them (the
audit relay, the rollup and the back-channel logout outbox: ``audit_cursor.consumers``).

**PostgreSQL** (the layout: ``shared.db.audit_partitions``). Each run

1. creates the partitions of the current week and the next ``WEEKS_AHEAD`` that are missing;
2. gives the weeks of any rows in the default partition their own partition, moving the rows
   into it (the oldest first, at most ``max_weeks`` a run), so the default partition stays
   empty and those rows come under the retention too;
3. drops each week partition that ended before ``now - retention``, unless a consumer
   (:func:`shared.jobs.audit_cursor.consumers`) has not read all of its rows yet: that week is
   *held* — named in the result and logged ``audit_retention.held`` with the consumer — and
   dropped by the first run after the consumer has passed it. A stalled relay keeps its rows.

The check is repeated under ACCESS EXCLUSIVE on ``audit_actions`` (no transaction can then be
writing to the week), and the drop writes an ``audit_log.pruned`` audit row in its transaction.
A partition whose week has not ended is never dropped (``retention`` is at least a day).

**SQLite** keeps one table: rows older than the cutoff and at or before every consumer's cursor
are deleted in batches of ``batch_size`` (one ``DELETE`` and its ``audit_log.pruned`` row per
transaction), at most ``max_batches`` a run; the next run carries on.

Every step is safe when two workers run the job at once: layout changes take an advisory lock
and look again under it; a lock not granted within ``LOCK_TIMEOUT`` leaves the step to the next
run (``deferred`` in the result).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from pydantic import Field
from sqlalchemy import delete, exists, func, select, text, tuple_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.audit import record_audit_core
from shared.clock import rfc3339
from shared.db.audit_partitions import (
    PARENT,
    Week,
    create_partition_sql,
    drop_partition_sql,
    estimated_rows,
    existing_weeks,
    lock_layout,
    oldest_in_default,
    weeks_ahead,
)
from shared.db.tables import AUDIT_TABLE
from shared.jobs.audit_cursor import Position, consumers, read_cursor
from shared.jobs.base import JobDeps, JobPayload, JobResult
from shared.jobs.upstream_refresh import WORKER_ACTOR

log = structlog.get_logger("shared.jobs.audit_retention")

PRUNED = "audit_log.pruned"
LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock_timeout


class AuditRetentionPayload(JobPayload):
    """Bounds of one run: weeks moved out of the default partition (PostgreSQL); rows per
    ``DELETE`` and batches (SQLite)."""

    max_weeks: int = Field(default=8, ge=1, le=520)
    batch_size: int = Field(default=5000, ge=1, le=10_000)
    max_batches: int = Field(default=50, ge=1, le=10_000)


async def maintain_audit_log(payload: AuditRetentionPayload, deps: JobDeps) -> JobResult:
    """The job: partitions ahead and out of the default partition, then the retention."""
    if deps.engine.dialect.name == "postgresql":
        result = await _maintain_partitions(payload, deps)
    else:
        result = await _delete_in_batches(payload, deps)
    if result.get("held"):
        log.warning("audit_retention.held", held=result["held"])
    return {"outcome": "ok", **result}


def retention_cutoff(deps: JobDeps) -> dt.datetime | None:
    """Rows before this instant are past the retention (None: kept for ever)."""
    days = deps.settings.audit_retention
    return None if days == 0 else deps.clock.now() - dt.timedelta(days=days)


async def _record_pruned(connection: AsyncConnection, deps: JobDeps, what: dict[str, Any]) -> None:
    """The ``audit_log.pruned`` row of a drop or a delete (``what`` went), in its transaction."""
    await record_audit_core(
        connection,
        action=PRUNED,
        actor=WORKER_ACTOR,
        subject=None,
        now=deps.clock.now(),
        data={**what, "retention_days": deps.settings.audit_retention},
    )


# --------------------------------------------------------------------------- PostgreSQL


async def _maintain_partitions(payload: AuditRetentionPayload, deps: JobDeps) -> dict[str, Any]:
    created: list[str] = []
    deferred: list[str] = []

    async def make(week: Week) -> int | None:
        outcome = await _create(deps.engine, week)
        if outcome is None:
            deferred.append(week.name)
        elif outcome >= 0:
            created.append(week.name)
        return outcome

    for week in weeks_ahead(deps.clock.now()):
        await make(week)
    moved = 0
    for _ in range(payload.max_weeks):
        async with deps.engine.connect() as connection:
            oldest = await oldest_in_default(connection)
        if oldest is None:
            break
        outcome = await make(Week.of(oldest))
        if outcome is None or outcome < 0:
            break  # the default partition is locked (or busy): the next run
        moved += outcome
    dropped, held = await _drop_expired(deps, deferred)
    return {
        "created": created,
        "moved_from_default": moved,
        "dropped": dropped,
        "held": held,
        "deferred": deferred,
    }


async def _create(engine: AsyncEngine, week: Week) -> int | None:
    """Create ``week``'s partition: the rows it took from the default partition; -1 when it
    exists already; None when a lock was not granted in time."""

    async def create(connection: AsyncConnection) -> int:
        if week in await existing_weeks(connection):
            return -1
        statements = create_partition_sql(week)
        await connection.execute(text(statements.lock))
        await connection.execute(text(statements.create))
        moved = (await connection.execute(text(statements.move))).rowcount
        await connection.execute(text(statements.attach))
        log.info("audit_retention.partition_created", partition=week.name, moved=moved)
        return moved

    return await _layout_change(engine, create)


async def _drop_expired(
    deps: JobDeps, deferred: list[str]
) -> tuple[list[str], list[dict[str, Any]]]:
    """Drop the week partitions past the retention that every consumer has read."""
    cutoff = retention_cutoff(deps)
    if cutoff is None:
        return [], []
    names = consumers(deps.settings)
    async with deps.engine.connect() as connection:
        expired = [week for week in await existing_weeks(connection) if week.end <= cutoff]
    dropped: list[str] = []
    held: list[dict[str, Any]] = []
    for week in expired:
        async with deps.engine.connect() as connection:
            unread = await _unread_by(connection, week, names)
        if unread:  # checked before the lock, so a held week blocks nobody
            held.append({"partition": week.name, "unread_by": unread})
            continue
        outcome = await _layout_change(deps.engine, _dropper(deps, week, names, held))
        if outcome is None:
            deferred.append(week.name)
        elif outcome:
            dropped.append(week.name)
    return dropped, held


def _dropper(
    deps: JobDeps, week: Week, names: Sequence[str], held: list[dict[str, Any]]
) -> Callable[[AsyncConnection], Awaitable[int]]:
    async def drop(connection: AsyncConnection) -> int:
        # Nothing writes to audit_actions while this lock is held, so what is read now is final.
        await connection.execute(text(f"LOCK TABLE ONLY {PARENT} IN ACCESS EXCLUSIVE MODE"))
        if week not in await existing_weeks(connection):
            return 0  # another run dropped it
        if unread := await _unread_by(connection, week, names):
            held.append({"partition": week.name, "unread_by": unread})
            return 0
        rows = await estimated_rows(connection, week)
        await connection.execute(text(drop_partition_sql(week)))
        await _record_pruned(
            connection,
            deps,
            {
                "partition": week.name,
                "from": rfc3339(week.start),
                "to": rfc3339(week.end),
                "estimated_rows": rows,
            },
        )
        log.info("audit_retention.partition_dropped", partition=week.name, estimated_rows=rows)
        return 1

    return drop


async def _unread_by(connection: AsyncConnection, week: Week, names: Sequence[str]) -> list[str]:
    """The consumers that have not read every row of ``week`` yet (a consumer that never ran
    has read none)."""
    unread = []
    for name, position in (await _positions(connection, names)).items():
        ahead = exists().where(
            AUDIT_TABLE.c.occurred_at >= week.start,
            AUDIT_TABLE.c.occurred_at < week.end,
            tuple_(AUDIT_TABLE.c.txid, AUDIT_TABLE.c.id) > tuple_(*position),
        )
        if await connection.scalar(select(ahead)):
            unread.append(name)
    return unread


async def _positions(connection: AsyncConnection, names: Sequence[str]) -> dict[str, Position]:
    positions = {}
    for name in names:
        cursor = await read_cursor(connection, name)
        positions[name] = (0, 0) if cursor is None else cursor.position
    return positions


async def _layout_change(
    engine: AsyncEngine, change: Callable[[AsyncConnection], Awaitable[int]]
) -> int | None:
    """Run ``change`` in its own transaction under the layout's locks; None when a lock was
    not granted within the timeout (nothing changed)."""
    try:
        async with engine.connect() as connection, connection.begin():
            await lock_layout(connection)
            return await change(connection)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        log.info("audit_retention.lock_timeout")
        return None


# --------------------------------------------------------------------------- SQLite


async def _delete_in_batches(payload: AuditRetentionPayload, deps: JobDeps) -> dict[str, Any]:
    """Delete rows past the retention that every consumer has read, a batch per transaction."""
    cutoff = retention_cutoff(deps)
    if cutoff is None:
        return {"deleted": 0, "held": []}
    names = consumers(deps.settings)
    deleted = 0
    for _ in range(payload.max_batches):
        async with deps.engine.begin() as connection:
            read_up_to = min(
                position[1] for position in (await _positions(connection, names)).values()
            )
            chosen = (
                select(AUDIT_TABLE.c.id)
                .where(AUDIT_TABLE.c.occurred_at < cutoff, AUDIT_TABLE.c.id <= read_up_to)
                .order_by(AUDIT_TABLE.c.id)
                .limit(payload.batch_size)
            )
            count = (
                await connection.execute(delete(AUDIT_TABLE).where(AUDIT_TABLE.c.id.in_(chosen)))
            ).rowcount
            if count:
                await _record_pruned(connection, deps, {"rows": count, "before": rfc3339(cutoff)})
        deleted += count
        if count < payload.batch_size:
            break
    return {"deleted": deleted, "held": await _held_rows(deps.engine, cutoff, names)}


async def _held_rows(
    engine: AsyncEngine, cutoff: dt.datetime, names: Sequence[str]
) -> list[dict[str, Any]]:
    """The consumers keeping rows past the retention (they have not read them yet)."""
    async with engine.connect() as connection:
        last = await connection.scalar(
            select(func.max(AUDIT_TABLE.c.id)).where(AUDIT_TABLE.c.occurred_at < cutoff)
        )
        if last is None:
            return []
        positions = await _positions(connection, names)
    unread = [name for name, position in positions.items() if position[1] < last]
    return [{"before": rfc3339(cutoff), "unread_by": unread}] if unread else []
