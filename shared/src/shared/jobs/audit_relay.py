"""The audit relay: publish committed ``audit_actions`` rows to the Redis stream ``broker:audit``,
at least once and in order, losing nothing while Redis is down.

**Order.** Rows are read by the rule of :mod:`shared.jobs.audit_cursor`: committed rows only,
in ``(txid, id)`` order on PostgreSQL (a transaction's events together and in the order it wrote
them), row id order on SQLite, none skipped when a transaction commits late.

**At least once, exactly once in the stream.** One relay publishes at a time (its cursor row,
keyed by the stream's name, is locked, ``SKIP LOCKED``: a second worker's relay finds it taken
and stops). A batch is added in one ``MULTI``/``EXEC``, every entry carrying its ``position``
(``txid:id``); the cursor moves in the database only after Redis took the batch. If Redis
fails, nothing moves and the next run publishes the same rows; if the database commit fails
after Redis took them, the next run reads the stream's last ``position`` and skips what is
already there.

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
from sqlalchemy.engine import Row

from shared.clock import rfc3339
from shared.jobs.audit_cursor import (
    Position,
    committed_rows,
    cursor_position,
    lock_cursor,
    move_cursor,
    row_position,
)
from shared.jobs.base import JobDeps, JobPayload, JobResult

log = structlog.get_logger("shared.jobs.audit_relay")

# What a stream entry carries of each row (id and txid come along for the position).
ENTRY_COLUMNS = (
    "event_id", "action", "actor", "subject", "client_id", "ip", "data", "occurred_at",
)  # fmt: skip


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
        cursor = await lock_cursor(connection, stream, now)
        if cursor is None:
            return None
        after = cursor_position(cursor)
        in_stream = await _stream_position(redis, stream)
        if in_stream is not None and in_stream > after:
            after = in_stream  # a previous run's batch reached Redis but not the database
        rows = await committed_rows(connection, after, limit, ENTRY_COLUMNS)
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
        if rows or last != cursor_position(cursor):
            await move_cursor(connection, stream, last, len(rows), now)
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
