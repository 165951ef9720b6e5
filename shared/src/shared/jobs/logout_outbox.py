"""From ended sessions to Logout Tokens owed: read committed ``session.revoked`` audit rows and
write one ``logout_deliveries`` row for each whose client registered a
``backchannel_logout_uri``.

**Which rows.** The rule of :mod:`shared.jobs.audit_cursor`: committed rows only, in commit
order, none skipped when a transaction commits late. Every way a broker session ends (logout,
``/revoke``, admin revocation, a disabled user, refresh-token or code replay, an upstream grant
found revoked) goes through ``shared.auth_sessions.revoke_session``, which writes that row in the
transaction that ends the session; a transaction that rolls back leaves no row, so no Logout
Token is ever owed for a session that did not end.

**Exactly once.** The delivery rows are written in the transaction that locks this consumer's
cursor (the ``audit_relay_cursors`` row :data:`OUTBOX_CURSOR`) and moves it past the batch; a
second reader finds the cursor locked and stops, and ``event_id`` is unique besides. The cursor
is a row there like the relay's and the rollup's, so audit retention waits for it.

**Which relying party.** The session's own client: a broker session is one client's sign-in
(one refresh-token family). Sessions of other clients that end with it (a browser's sign-out
without ``client_id``, a user disabled) are revoked one by one, each its own audit row and its
own delivery.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row

from shared.db.tables import AUDIT_TABLE, LOGOUT_DELIVERIES
from shared.jobs.audit_cursor import (
    LOGOUT_OUTBOX_CURSOR,
    committed_rows,
    cursor_position,
    lock_cursor,
    move_cursor,
    row_position,
)
from shared.jobs.base import JobDeps

OUTBOX_CURSOR = LOGOUT_OUTBOX_CURSOR
"""The outbox's row in ``audit_relay_cursors``."""
SESSION_REVOKED = "session.revoked"
ROW_COLUMNS = (
    "event_id",
    "action",
    "subject",
    "client_id",
    "occurred_at",
    AUDIT_TABLE.c.data["sid"].as_string().label("sid"),
)


def registered_clients(deps: JobDeps) -> frozenset[str]:
    """The clients that registered a ``backchannel_logout_uri``."""
    return frozenset(c.id for c in deps.settings.clients if c.backchannel_logout_uri)


def _uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def _delivery(
    row: Row[Any], registered: Collection[str], now: dt.datetime
) -> dict[str, Any] | None:
    """The delivery row a ``session.revoked`` audit row calls for, if any."""
    if row.action != SESSION_REVOKED or row.client_id not in registered:
        return None
    session_id, user_id = _uuid(row.sid), _uuid(row.subject)
    if session_id is None or user_id is None:
        return None
    return {
        "id": uuid.uuid4(),
        "event_id": row.event_id,
        "client_id": row.client_id,
        "session_id": session_id,
        "user_id": user_id,
        # 128 random bits, as access tokens' jti: unique per delivery (RFC 7519 §4.1.7).
        "jti": secrets.token_urlsafe(16),
        "revoked_at": row.occurred_at,
        "created_at": now,
        "attempts": 0,
        "next_attempt_at": now,
    }


async def collect_batch(deps: JobDeps, limit: int) -> tuple[int, int] | None:
    """Read up to ``limit`` committed audit rows after the cursor; (rows read, deliveries
    written), or None when another reader holds the cursor."""
    now = deps.clock.now()
    registered = registered_clients(deps)
    async with deps.engine.connect() as connection, connection.begin():
        cursor = await lock_cursor(connection, OUTBOX_CURSOR, now)
        if cursor is None:
            return None
        rows = await committed_rows(connection, cursor_position(cursor), limit, ROW_COLUMNS)
        owed = [d for d in (_delivery(row, registered, now) for row in rows) if d is not None]
        if owed:
            dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
            await connection.execute(
                dialect.insert(LOGOUT_DELIVERIES)
                .values(owed)
                .on_conflict_do_nothing(index_elements=[LOGOUT_DELIVERIES.c.event_id])
            )
        # Moved even when idle: updated_at says when the outbox was last read to the end.
        last = row_position(rows[-1]) if rows else cursor_position(cursor)
        await move_cursor(connection, OUTBOX_CURSOR, last, len(rows), now)
    return len(rows), len(owed)


async def collect_deliveries(deps: JobDeps, *, batch_size: int, max_seconds: float) -> int | None:
    """Read the outbox until caught up or ``max_seconds`` have passed; the deliveries written,
    or None when another reader holds the cursor."""
    written = 0
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        batch = await collect_batch(deps, batch_size)
        if batch is None:
            return None if written == 0 else written
        read, owed = batch
        written += owed
        if read < batch_size:
            break
    return written
