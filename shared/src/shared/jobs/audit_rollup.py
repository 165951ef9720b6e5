"""The audit rollup: count committed ``audit_actions`` rows into ``audit_daily_counts`` and move
``users.last_seen_at``, each row exactly once, so the admin statistics read a few small rows.

**Which rows.** The same rule as the audit relay (:mod:`shared.jobs.audit_cursor`): committed
rows only, in commit order, none skipped when a transaction commits late. The rollup's cursor is
the ``audit_relay_cursors`` row :data:`ROLLUP_CURSOR`; it needs only the database, so it runs
whatever state Redis (and the relay) are in.

**Exactly once.** A batch is applied in the transaction that locks the cursor row and moves it
past the batch: a crash before the commit leaves the counts and the cursor as they were, and the
next run reads the same rows; once committed, the cursor is past them. A second worker's rollup
finds the cursor locked (``SKIP LOCKED``) and stops.

**What a row adds.** One to ``(day, action, provider)``: ``day`` the UTC date of
``occurred_at``; ``provider`` the event's ``data["provider"]``, else the provider of the broker
session ``data["sid"]`` names (one query per ``SLICE`` of the batch; a session purged by
housekeeping counts as none), else ``""``. ``user.signed_in`` and ``refresh_token.rotated``
(whose subject is the broker user id) also set that user's ``last_seen_at`` to the row's
``occurred_at`` if later (one statement per batch; on SQLite one statement run per user).
``refresh_token.retried`` (a rotated token's unused successor handed out again) is counted as
itself, neither a rotation nor a failure, and moves no ``last_seen_at``: the rotation it repeats
already did, moments before.

**A large backlog at once.** :func:`roll_up_backlog` does what :func:`rollup_batch` run until
caught up does, in one transaction of three set-based statements (PostgreSQL only): for a
backlog far beyond what the job counts within its time limit, such as the benchmark's million
seeded rows. A test on that seed keeps the two in agreement.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import structlog
from pydantic import Field
from sqlalchemy import Uuid, any_, bindparam, cast, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.tables import AUDIT_DAILY_COUNTS, AUDIT_TABLE, SESSIONS, USERS
from shared.jobs.audit_cursor import (
    ROLLUP_CURSOR,
    CursorState,
    Position,
    committed_rows,
    cursor_position,
    lock_cursor,
    move_cursor,
    read_cursor,
    row_position,
)
from shared.jobs.base import JobDeps, JobPayload, JobResult
from shared.models.audit_action import ROTATED

log = structlog.get_logger("shared.jobs.audit_rollup")


SEEN_ACTIONS = frozenset({"user.signed_in", ROTATED})
# Only the two keys of ``data`` the rollup needs, extracted by the database (no JSON decoding).
ROW_COLUMNS = (
    "action",
    "subject",
    "occurred_at",
    AUDIT_TABLE.c.data["provider"].as_string().label("provider"),
    AUDIT_TABLE.c.data["sid"].as_string().label("sid"),
)
PROVIDER_LENGTH = 64  # audit_daily_counts.provider
CHUNK = 1000  # rows per VALUES list: well under SQLite's 32,766 bound parameters
# Rows counted between two turns of the event loop. The job shares its loop with requests (the
# broker without Redis) or with other jobs (the worker): counting a 5,000-row batch in one go
# held it for up to 65 ms, and under refresh load the grant's p99 went from ~35 to 80-100 ms
# in the rounds the rollup ran.
SLICE = 500

Key = tuple[dt.date, str, str]


class AuditRollupPayload(JobPayload):
    """Count in batches of ``batch_size`` until caught up or ``max_seconds`` have passed."""

    batch_size: int = Field(default=5000, ge=1, le=10_000)
    max_seconds: float = Field(default=20.0, gt=0, le=60)


async def roll_up_audit_events(payload: AuditRollupPayload, deps: JobDeps) -> JobResult:
    """The job: add committed audit rows to the daily counts until caught up."""
    counted = batches = 0
    deadline = time.monotonic() + payload.max_seconds
    while time.monotonic() < deadline:
        count = await rollup_batch(deps, payload.batch_size)
        if count is None:
            return {"outcome": "ok", "counted": counted, "reason": "busy"}
        counted += count
        batches += 1
        if count < payload.batch_size:
            break
    if counted:
        log.info("audit_rollup.counted", counted=counted, batches=batches)
    return {"outcome": "ok", "counted": counted}


async def rollup_batch(deps: JobDeps, limit: int) -> int | None:
    """Count up to ``limit`` rows in one transaction; how many, or None when another rollup
    holds the cursor."""
    now = deps.clock.now()
    async with deps.engine.connect() as connection, connection.begin():
        cursor = await lock_cursor(connection, ROLLUP_CURSOR, now)
        if cursor is None:
            return None
        rows = await committed_rows(connection, cursor_position(cursor), limit, ROW_COLUMNS)
        if rows:
            counts, seen = await _tally(connection, rows)
            await _add_counts(connection, counts)
            await _mark_seen(connection, seen)
        # Moved even when idle: updated_at says when the rollup last ran to completion.
        last = row_position(rows[-1]) if rows else cursor_position(cursor)
        await move_cursor(connection, ROLLUP_CURSOR, last, len(rows), now)
    return len(rows)


async def rollup_progress(connection: AsyncConnection) -> CursorState | None:
    """How far the rollup has got, as last committed: ``rows`` counted in all, ``updated_at``
    of its last batch (an idle run moves it too). None before its first run."""
    return await read_cursor(connection, ROLLUP_CURSOR)


async def _tally(
    connection: AsyncConnection, rows: Sequence[Row[Any]]
) -> tuple[Counter[Key], dict[uuid.UUID, dt.datetime]]:
    """The batch's daily counts and each user's latest sign-in or refresh, ``SLICE`` rows at a
    time with a turn of the event loop in between."""
    counts: Counter[Key] = Counter()
    seen: dict[uuid.UUID, dt.datetime] = {}
    for part in _chunks(rows, SLICE):
        # The sessions are looked up per slice too: parsing and reading thousands at once was
        # itself a long stretch, and the slices' queries cost no measurable throughput.
        counts.update(_daily_counts(part, await _session_providers(connection, part)))
        for user_id, at in _last_seen(part).items():
            if user_id not in seen or at > seen[user_id]:
                seen[user_id] = at
        await asyncio.sleep(0)
    return counts, seen


def _uuids(values: Iterable[str | None]) -> dict[str, uuid.UUID]:
    """The distinct values that are UUIDs, parsed once each (a batch repeats its sessions and
    users many times)."""
    parsed = {}
    for value in set(values):
        if value:
            try:
                parsed[value] = uuid.UUID(value)
            except ValueError:
                continue
    return parsed


async def _session_providers(
    connection: AsyncConnection, rows: Sequence[Row[Any]]
) -> dict[str, str]:
    """The provider of each session that rows without a provider name (``data["sid"]`` as
    written), in one query; a session purged by housekeeping is left out."""
    sids = _uuids(row.sid for row in rows if not row.provider)
    if not sids:
        return {}
    ids = list(sids.values())
    if connection.dialect.name == "postgresql":
        # One array parameter: thousands of IN placeholders cost more to send than to run.
        chosen = SESSIONS.c.id == any_(cast(bindparam("ids", ids), ARRAY(Uuid())))
    else:
        chosen = SESSIONS.c.id.in_(ids)
    found = await connection.execute(select(SESSIONS.c.id, SESSIONS.c.provider).where(chosen))
    by_session = {session_id: provider for session_id, provider in found.all()}
    return {sid: by_session[id_] for sid, id_ in sids.items() if id_ in by_session}


def _daily_counts(rows: Sequence[Row[Any]], session_providers: Mapping[str, str]) -> Counter[Key]:
    """Rows counted per (UTC day, action, provider)."""
    counts: Counter[Key] = Counter()
    for row in rows:
        provider = row.provider or session_providers.get(row.sid, "")
        occurred_at: dt.datetime = row.occurred_at
        day = occurred_at.astimezone(dt.UTC).date()
        counts[(day, row.action, provider[:PROVIDER_LENGTH])] += 1
    return counts


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _add_counts(connection: AsyncConnection, counts: Counter[Key]) -> None:
    """``count = count + n`` for each key, inserting the keys not there yet."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(AUDIT_DAILY_COUNTS)
    statement = statement.on_conflict_do_update(
        index_elements=[
            AUDIT_DAILY_COUNTS.c.day,
            AUDIT_DAILY_COUNTS.c.action,
            AUDIT_DAILY_COUNTS.c.provider,
        ],
        set_={"count": AUDIT_DAILY_COUNTS.c["count"] + statement.excluded["count"]},
    )
    rows = [
        {"day": day, "action": action, "provider": provider, "count": n}
        for (day, action, provider), n in sorted(counts.items())
    ]
    for chunk in _chunks(rows):
        await connection.execute(statement.values(list(chunk)))


def _last_seen(rows: Sequence[Row[Any]]) -> dict[uuid.UUID, dt.datetime]:
    """The latest sign-in or refresh of each user in the batch."""
    latest: dict[str, dt.datetime] = {}
    for row in rows:
        if row.action in SEEN_ACTIONS and row.subject:
            if row.subject not in latest or row.occurred_at > latest[row.subject]:
                latest[row.subject] = row.occurred_at
    users = _uuids(latest)
    return {user_id: latest[subject] for subject, user_id in users.items()}


# PostgreSQL: the batch's users as two arrays, one statement SQLAlchemy compiles once.
_MARK_SEEN_POSTGRES = text(
    """
    UPDATE users SET last_seen_at = seen.seen_at
    FROM unnest(CAST(:user_ids AS uuid[]), CAST(:seen_at AS timestamptz[]))
        AS seen (user_id, seen_at)
    WHERE users.id = seen.user_id
      AND (users.last_seen_at IS NULL OR users.last_seen_at < seen.seen_at)
    """
)
# SQLite: one statement, run per user (in-process, no round trips).
_MARK_SEEN = (
    update(USERS)
    .where(
        USERS.c.id == bindparam("user_id"),
        or_(USERS.c.last_seen_at.is_(None), USERS.c.last_seen_at < bindparam("seen_at")),
    )
    .values(last_seen_at=bindparam("seen_at"))
)


async def _mark_seen(connection: AsyncConnection, seen: dict[uuid.UUID, dt.datetime]) -> None:
    """``last_seen_at = max(last_seen_at, seen)`` for each user (rows of deleted users match
    nothing)."""
    if not seen:
        return
    users = sorted(seen)
    if connection.dialect.name == "postgresql":
        await connection.execute(
            _MARK_SEEN_POSTGRES, {"user_ids": users, "seen_at": [seen[user] for user in users]}
        )
    else:
        await connection.execute(
            _MARK_SEEN, [{"user_id": user, "seen_at": seen[user]} for user in users]
        )


# roll_up_backlog's statements: the rows after the cursor up to the last committed one (the
# rows rollup_batch reads, see committed_rows), counted and marked seen as rollup_batch does;
# a sid or subject is read as a UUID only in the canonical form str(uuid) writes.
_BACKLOG_END = text(
    """
    SELECT a.txid, a.id FROM audit_actions AS a
    WHERE a.txid < (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint
      AND (a.txid, a.id) > (:after_txid, :after_id)
    ORDER BY a.txid DESC, a.id DESC LIMIT 1
    """
)
_BACKLOG_ROWS = text(
    """
    SELECT count(*) FROM audit_actions AS a
    WHERE (a.txid, a.id) > (:after_txid, :after_id) AND (a.txid, a.id) <= (:txid, :id)
    """
)
_BACKLOG_ADD_COUNTS = text(
    """
    INSERT INTO audit_daily_counts (day, action, provider, count)
    SELECT (a.occurred_at AT TIME ZONE 'UTC')::date, a.action,
           left(coalesce(nullif(a.data ->> 'provider', ''), s.provider, ''), :provider_length),
           count(*)
    FROM audit_actions AS a
    LEFT JOIN auth_sessions AS s
           ON coalesce(a.data ->> 'provider', '') = ''
          AND s.id = CASE WHEN a.data ->> 'sid' ~ :uuid_pattern THEN (a.data ->> 'sid')::uuid END
    WHERE (a.txid, a.id) > (:after_txid, :after_id) AND (a.txid, a.id) <= (:txid, :id)
    GROUP BY 1, 2, 3
    ON CONFLICT (day, action, provider)
    DO UPDATE SET count = audit_daily_counts.count + excluded.count
    """
)
_BACKLOG_MARK_SEEN = text(
    """
    UPDATE users SET last_seen_at = seen.seen_at
    FROM (SELECT a.subject::uuid AS user_id, max(a.occurred_at) AS seen_at
          FROM audit_actions AS a
          WHERE a.action = ANY(CAST(:seen_actions AS text[])) AND a.subject ~ :uuid_pattern
            AND (a.txid, a.id) > (:after_txid, :after_id) AND (a.txid, a.id) <= (:txid, :id)
          GROUP BY 1) AS seen
    WHERE users.id = seen.user_id
      AND (users.last_seen_at IS NULL OR users.last_seen_at < seen.seen_at)
    """
)
_UUID_PATTERN = "^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$"


async def roll_up_backlog(deps: JobDeps) -> int | None:
    """Count every committed row after the cursor in one transaction (PostgreSQL only); how
    many, or None when another rollup holds the cursor."""
    now = deps.clock.now()
    async with deps.engine.connect() as connection, connection.begin():
        cursor = await lock_cursor(connection, ROLLUP_CURSOR, now)
        if cursor is None:
            return None
        after = cursor_position(cursor)
        # The last row, fixed first: every row up to it is committed and visible, so the
        # statements below see one and the same set of rows.
        first = {"after_txid": after[0], "after_id": after[1]}
        end = (await connection.execute(_BACKLOG_END, first)).first()
        last = row_position(end) if end is not None else after
        rows = 0
        if end is not None:
            bounds = _range(after, last)
            rows = int((await connection.execute(_BACKLOG_ROWS, bounds)).scalar_one())
            await connection.execute(
                _BACKLOG_ADD_COUNTS,
                {**bounds, "provider_length": PROVIDER_LENGTH, "uuid_pattern": _UUID_PATTERN},
            )
            await connection.execute(
                _BACKLOG_MARK_SEEN,
                {**bounds, "seen_actions": sorted(SEEN_ACTIONS), "uuid_pattern": _UUID_PATTERN},
            )
        await move_cursor(connection, ROLLUP_CURSOR, last, rows, now)
    return rows


def _range(after: Position, last: Position) -> dict[str, Any]:
    return {"after_txid": after[0], "after_id": after[1], "txid": last[0], "id": last[1]}
