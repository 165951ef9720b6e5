"""Reading committed ``audit_actions`` rows once each, in commit order, behind a locked cursor:
the rule the audit relay and the audit rollup share.

**Which rows are safe to read.** Row ids are drawn when a row is inserted, not when its
transaction commits, so a reader of "ids above the last one read" would skip a row whose
transaction commits late. On PostgreSQL every audit row carries its transaction's id (``txid``,
a column default), and only rows of transactions older than the oldest one still running
(``pg_snapshot_xmin``) are read: that set never grows afterwards, so nothing is skipped. Rows
come in ``(txid, id)`` order — a transaction's events together and in the order it wrote them.
On SQLite writers are serialised (``BEGIN IMMEDIATE``) and the row id is commit order.

**One reader per consumer.** Each consumer owns one ``audit_relay_cursors`` row (``stream`` is
its name) holding the last ``(txid, id)`` it took. :func:`lock_cursor` locks that row for the
caller's transaction (``SKIP LOCKED``: a second reader finds it taken and stops), so a consumer
that moves its cursor in the transaction that applies the rows takes each row exactly once.

**Who must have read a row before it is deleted** (:func:`consumers`): the rollup, always, and
the relay where there is a Redis to relay to. The audit retention deletes no row that one of
them has not passed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, insert, select, text, tuple_, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.tables import AUDIT_CURSORS, AUDIT_TABLE
from shared.settings import Settings

Position = tuple[int, int]
"""``(txid, id)`` of an audit row; txid is 0 on SQLite. ``(0, 0)`` is before the first row."""

ROLLUP_CURSOR = "rollup:audit_daily_counts"
"""The audit rollup's row in ``audit_relay_cursors`` (the relay's rows are keyed by stream name)."""

LOGOUT_OUTBOX_CURSOR = "backchannel_logout:session.revoked"
"""The back-channel logout outbox's row (``shared.jobs.logout_outbox``)."""


@dataclass(frozen=True)
class CursorState:
    """How far one consumer has got: the last row it took, how many, and when it last moved."""

    stream: str
    position: Position
    rows: int  # rows taken since the cursor was created (the table's ``published``)
    updated_at: dt.datetime


def consumers(settings: Settings) -> tuple[str, ...]:
    """The cursors of the consumers running in this deployment: the rollup's and the
    back-channel logout outbox's (they need only the database), and the relay's, named by its
    stream, when there is a Redis to publish to."""
    if settings.redis_url is None:
        return (ROLLUP_CURSOR, LOGOUT_OUTBOX_CURSOR)
    return (ROLLUP_CURSOR, LOGOUT_OUTBOX_CURSOR, settings.audit_stream)


async def lock_cursor(
    connection: AsyncConnection, stream: str, now: dt.datetime
) -> Row[Any] | None:
    """Lock the consumer's cursor row for this transaction, creating it at ``(0, 0)`` the first
    time; None when another transaction holds it."""
    statement = (
        select(AUDIT_CURSORS)
        .where(AUDIT_CURSORS.c.stream == stream)
        .with_for_update(skip_locked=True)
    )
    row = (await connection.execute(statement)).first()
    if row is not None:
        return row
    exists = (
        await connection.execute(
            select(AUDIT_CURSORS.c.stream).where(AUDIT_CURSORS.c.stream == stream)
        )
    ).first()
    if exists is not None:
        return None  # another reader holds it
    try:
        async with connection.begin_nested():
            await connection.execute(
                insert(AUDIT_CURSORS).values(
                    stream=stream, last_txid=0, last_id=0, published=0, updated_at=now
                )
            )
    except IntegrityError:
        return None  # another reader created it just now
    return (await connection.execute(statement)).first()


def cursor_position(cursor: Row[Any]) -> Position:
    return (cursor.last_txid, cursor.last_id)


async def committed_rows(
    connection: AsyncConnection,
    after: Position,
    limit: int,
    columns: Sequence[str | ColumnElement[Any]],
) -> list[Row[Any]]:
    """Up to ``limit`` committed audit rows after ``after``, in commit order, with ``columns``
    (names of ``audit_actions`` columns, or labelled expressions over them); ``id`` and
    ``txid`` always come along, for :func:`row_position`."""
    selected: list[ColumnElement[Any]] = [AUDIT_TABLE.c.id, AUDIT_TABLE.c.txid]
    for name in columns:
        if not isinstance(name, str):
            selected.append(name)
        elif name not in ("id", "txid"):
            selected.append(AUDIT_TABLE.c[name])
    if connection.dialect.name == "postgresql":
        # Only transactions older than every running one: their rows are all visible, final.
        finished = text("(pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")
        statement = (
            select(*selected)
            .where(
                AUDIT_TABLE.c.txid < finished,
                tuple_(AUDIT_TABLE.c.txid, AUDIT_TABLE.c.id) > tuple_(*after),
            )
            .order_by(AUDIT_TABLE.c.txid, AUDIT_TABLE.c.id)
        )
    else:
        statement = select(*selected).where(AUDIT_TABLE.c.id > after[1]).order_by(AUDIT_TABLE.c.id)
    return list((await connection.execute(statement.limit(limit))).all())


def row_position(row: Row[Any]) -> Position:
    return (row.txid or 0, row.id)


async def move_cursor(
    connection: AsyncConnection, stream: str, to: Position, rows: int, now: dt.datetime
) -> None:
    """Set the (locked) cursor to ``to``, having taken ``rows`` more rows, at ``now``."""
    await connection.execute(
        update(AUDIT_CURSORS)
        .where(AUDIT_CURSORS.c.stream == stream)
        .values(
            last_txid=to[0],
            last_id=to[1],
            published=AUDIT_CURSORS.c.published + rows,
            updated_at=now,
        )
    )


async def read_cursor(connection: AsyncConnection, stream: str) -> CursorState | None:
    """The consumer's cursor as last committed (no lock); None before its first run."""
    row = (
        await connection.execute(select(AUDIT_CURSORS).where(AUDIT_CURSORS.c.stream == stream))
    ).first()
    if row is None:
        return None
    return CursorState(
        stream=row.stream,
        position=cursor_position(row),
        rows=row.published,
        updated_at=row.updated_at,
    )
