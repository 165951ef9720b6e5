"""The audit relay: publish committed ``audit_actions`` rows to the Redis stream ``broker:audit``,
at least once and in order, losing nothing while Redis is down.

**Order.** Row ids are drawn when a row is inserted, not when its transaction commits, so a relay
that read "ids above the last one published" would skip a row whose transaction commits late.
On PostgreSQL every audit row carries its transaction's id (``txid``, a column default), and
the relay reads only rows of transactions older than the oldest one still running
(``pg_snapshot_xmin``): that set never grows afterwards, so nothing is skipped. Rows go out in
``(txid, id)`` order — a transaction's events together and in the order it wrote them, and a
transaction that began after another committed after all of that one's events. On SQLite
writers are serialised and the row id is commit order.

**At least once, exactly once in the stream.** One relay publishes at a time (the cursor row is
locked, ``SKIP LOCKED``: a second worker's relay finds it taken and stops). A batch is added in
one ``MULTI``/``EXEC``, every entry carrying its ``position`` (``txid:id``); the cursor moves in
the database only after Redis took the batch. If Redis fails, nothing moves and the next run
publishes the same rows; if the database commit fails after Redis took them, the next run reads
the stream's last ``position`` and skips what is already there.

**Entry fields** (all strings): ``event_id`` (UUID, stable: consumers dedupe on it), ``action``,
``actor``, ``subject``, ``client_id`` and ``ip`` (when known), ``occurred_at`` (RFC 3339 UTC),
``data`` (a JSON object), ``position``. The stream is trimmed to about
``BROKER_AUDIT_STREAM_MAXLEN`` entries; the database keeps every row.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import structlog
from pydantic import Field
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import insert, select, text, tuple_, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.audit import AUDIT_TABLE
from shared.clock import rfc3339
from shared.db.base import table
from shared.jobs.base import JobDeps, JobPayload, JobResult
from shared.models import AuditRelayCursor

log = structlog.get_logger("shared.jobs.audit_relay")

CURSORS = table(AuditRelayCursor)
Position = tuple[int, int]


class AuditRelayPayload(JobPayload):
    """Publish in batches of ``batch_size`` until caught up or ``max_seconds`` have passed."""

    batch_size: int = Field(default=500, ge=1, le=10_000)
    max_seconds: float = Field(default=5.0, gt=0, le=60)


def _position(value: bytes | str | None) -> Position | None:
    if value is None:
        return None
    raw = value.decode() if isinstance(value, bytes) else value
    txid, _, row_id = raw.partition(":")
    try:
        return int(txid), int(row_id)
    except ValueError:
        return None


async def _stream_position(redis: Redis, stream: str) -> Position | None:
    """The ``position`` of the stream's newest entry (None: empty, or Redis lost it)."""
    newest = await redis.xrevrange(stream, count=1)
    if not newest:
        return None
    _entry_id, fields = newest[0]
    return _position(fields.get(b"position"))


async def _lock_cursor(
    connection: AsyncConnection, stream: str, now: dt.datetime
) -> Row[Any] | None:
    statement = select(CURSORS).where(CURSORS.c.stream == stream).with_for_update(skip_locked=True)
    row = (await connection.execute(statement)).first()
    if row is not None:
        return row
    exists = (
        await connection.execute(select(CURSORS.c.stream).where(CURSORS.c.stream == stream))
    ).first()
    if exists is not None:
        return None  # another relay holds it
    try:
        async with connection.begin_nested():
            await connection.execute(
                insert(CURSORS).values(
                    stream=stream, last_txid=0, last_id=0, published=0, updated_at=now
                )
            )
    except IntegrityError:
        return None  # another relay created it just now
    return (await connection.execute(statement)).first()


async def _pending_rows(connection: AsyncConnection, after: Position, limit: int) -> list[Row[Any]]:
    columns = [AUDIT_TABLE.c[name] for name in (
        "id", "txid", "event_id", "action", "actor", "subject", "client_id", "ip", "data",
        "occurred_at",
    )]  # fmt: skip
    if connection.dialect.name == "postgresql":
        # Only transactions older than every running one: their rows are all visible, final.
        finished = text("(pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")
        statement = (
            select(*columns)
            .where(
                AUDIT_TABLE.c.txid < finished,
                tuple_(AUDIT_TABLE.c.txid, AUDIT_TABLE.c.id) > tuple_(*after),
            )
            .order_by(AUDIT_TABLE.c.txid, AUDIT_TABLE.c.id)
        )
    else:
        statement = select(*columns).where(AUDIT_TABLE.c.id > after[1]).order_by(AUDIT_TABLE.c.id)
    return list((await connection.execute(statement.limit(limit))).all())


def row_position(row: Row[Any]) -> Position:
    return (row.txid or 0, row.id)


def stream_entry(row: Row[Any]) -> dict[str, str]:
    """One audit row as the fields of its stream entry."""
    occurred_at: dt.datetime = row.occurred_at
    fields = {
        "event_id": str(row.event_id),
        "action": row.action,
        "actor": row.actor,
        "subject": row.subject or "",
        "occurred_at": rfc3339(occurred_at),
        "data": json.dumps(row.data or {}, separators=(",", ":"), sort_keys=True),
        "position": "{}:{}".format(*row_position(row)),
    }
    if row.client_id:
        fields["client_id"] = row.client_id
    if row.ip:
        fields["ip"] = row.ip
    return fields


async def relay_batch(deps: JobDeps, redis: Redis, limit: int) -> int | None:
    """Publish up to ``limit`` rows; how many, or None when another relay holds the cursor."""
    stream = deps.settings.audit_stream
    now = deps.clock.now()
    async with deps.engine.connect() as connection, connection.begin():
        cursor = await _lock_cursor(connection, stream, now)
        if cursor is None:
            return None
        after: Position = (cursor.last_txid, cursor.last_id)
        in_stream = await _stream_position(redis, stream)
        if in_stream is not None and in_stream > after:
            after = in_stream  # a previous run's batch reached Redis but not the database
        rows = await _pending_rows(connection, after, limit)
        if rows:
            async with redis.pipeline(transaction=True) as pipe:
                for row in rows:
                    pipe.xadd(
                        stream,
                        stream_entry(row),  # type: ignore[arg-type]
                        maxlen=deps.settings.audit_stream_maxlen,
                        approximate=True,
                    )
                await pipe.execute()
        last = row_position(rows[-1]) if rows else after
        if rows or last != (cursor.last_txid, cursor.last_id):
            await connection.execute(
                update(CURSORS)
                .where(CURSORS.c.stream == stream)
                .values(
                    last_txid=last[0],
                    last_id=last[1],
                    published=CURSORS.c.published + len(rows),
                    updated_at=now,
                )
            )
    return len(rows)


async def relay_audit_events(payload: AuditRelayPayload, deps: JobDeps) -> JobResult:
    """The job: drain committed audit rows into the stream; Redis down means try next time."""
    if deps.redis is None:
        return {"outcome": "ok", "published": 0, "reason": "no_redis"}
    published = 0
    deadline = time.monotonic() + payload.max_seconds
    try:
        while time.monotonic() < deadline:
            count = await relay_batch(deps, deps.redis, payload.batch_size)
            if count is None:
                return {"outcome": "ok", "published": published, "reason": "busy"}
            published += count
            if count < payload.batch_size:
                break
    except (RedisError, OSError) as exc:
        # Nothing moved for the failed batch: the rows wait in the database for the next run.
        log.warning("audit_relay.redis_unavailable", error=type(exc).__name__, published=published)
        return {"outcome": "retried", "published": published, "reason": "redis_unavailable"}
    return {"outcome": "ok", "published": published}
