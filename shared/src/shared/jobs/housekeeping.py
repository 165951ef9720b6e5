"""The housekeeping job: purge expired codes, login states, jti records, refresh tokens and old
sessions.

What goes (``now`` from the injected clock, ``cutoff = now - settings.session_retention``):

* ``authorization_codes`` past their expiry, used or not. Until then a used code stays: presented
  again, it revokes the session its first exchange created (RFC 6749 §4.1.2).
* ``login_states`` past their expiry.
* ``client_assertions`` (the ``jti`` of each ``private_key_jwt`` assertion accepted) once the
  assertion has expired: it can no longer be presented, so there is nothing left to replay.
* ``revoked_access_tokens`` (revoked service tokens) once the token has expired anyway.
* ``refresh_tokens`` that were rotated (used) and are past their own expiry, and expired ones
  whose session no longer exists. A rotated token is kept for its whole lifetime, however many
  rotations followed: presenting it again is how a stolen token shows itself, and it revokes the
  family (RFC 9700 §4.14.2); purged early, the replay would be just an unknown token. A family's
  newest, unused token is never purged on its own: it says when the family ends.
* ``auth_sessions`` revoked before the cutoff, or none of whose refresh tokens lives past it
  (kept that long for the admin views), together with their refresh tokens, in one transaction.
  ``refresh_tokens`` has no foreign key; ``authorization_codes.session_id`` is set NULL.
* ``logout_deliveries`` delivered or given up before the cutoff (the audit log keeps their
  ``backchannel_logout.delivered`` or ``.failed`` row); a pending one is never purged.

Upstream links and profiles, users, avatars and audit rows are never touched here.

Every batch is its own short transaction that selects at most ``batch_size`` rows of its kind
(``DELETE ... WHERE key IN (SELECT key ... LIMIT n)``; on PostgreSQL skipping rows another
transaction holds), so no lock is held for long and a crash loses nothing but that batch. Each
kind runs at most ``max_batches`` batches per run; the next run carries on. A batch of sessions
also deletes the refresh tokens those sessions still have, counted apart.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable

import structlog
from pydantic import Field
from sqlalchemy import ColumnElement, Delete, FromClause, Table, and_, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.tables import (
    CLIENT_ASSERTIONS,
    CODES,
    LOGIN_STATES,
    LOGOUT_DELIVERIES,
    REFRESH_TOKENS,
    REVOKED_ACCESS_TOKENS,
    SESSIONS,
)
from shared.jobs.base import JobDeps, JobPayload, JobResult

log = structlog.get_logger("shared.jobs.housekeeping")


# The kinds a run reports, in the order it purges them (sessions last: fewer codes to unlink).
KINDS = (
    "authorization_codes",
    "login_states",
    "client_assertions",
    "revoked_access_tokens",
    "refresh_tokens",
    "sessions",
    "logout_deliveries",
)
SESSION_TOKENS = "refresh_tokens_of_sessions"  # deleted along with their sessions

Batch = Callable[[AsyncConnection, int], Awaitable[Counter[str]]]


class HousekeepingPayload(JobPayload):
    """How much one run may delete: up to ``max_batches`` batches of ``batch_size`` per kind."""

    batch_size: int = Field(default=1000, ge=1, le=10_000)
    max_batches: int = Field(default=50, ge=1, le=10_000)


async def run_housekeeping(payload: HousekeepingPayload, deps: JobDeps) -> JobResult:
    """Purge what has expired, in bounded batches; the number of rows deleted per kind."""
    now = deps.clock.now()
    cutoff = now - dt.timedelta(seconds=deps.settings.session_retention)
    batches: dict[str, Batch] = {
        "authorization_codes": _expired_rows(CODES, "code_hash", now),
        "login_states": _expired_rows(LOGIN_STATES, "id", now),
        "client_assertions": _expired_rows(CLIENT_ASSERTIONS, "jti_hash", now),
        "revoked_access_tokens": _expired_rows(REVOKED_ACCESS_TOKENS, "jti", now),
        "refresh_tokens": _spent_refresh_tokens(now),
        "sessions": _retired_sessions(cutoff),
        "logout_deliveries": _finished_deliveries(cutoff),
    }
    counts: Counter[str] = Counter(dict.fromkeys((*KINDS, SESSION_TOKENS), 0))
    unfinished = []
    for kind in KINDS:
        for _ in range(payload.max_batches):
            async with deps.engine.begin() as connection:
                deleted = await batches[kind](connection, payload.batch_size)
            counts.update(deleted)
            if deleted[kind] < payload.batch_size:
                break
        else:
            unfinished.append(kind)  # more may be left: the next run continues
    # Pairs, not fields: the log redactor masks any field named like a token, code or state.
    log.info(
        "housekeeping.purged",
        purged=[[kind, count] for kind, count in counts.items()],
        unfinished=unfinished,
    )
    return dict(counts)


def _bounded_delete(
    target: Table, key: str, where: Callable[[FromClause], ColumnElement[bool]], limit: int
) -> Delete:
    """Delete at most ``limit`` rows of ``target`` matching ``where``.

    The rows are chosen through an alias: a subquery naming the DELETE's own table would be
    correlated to it, and match every row.
    """
    rows = target.alias("batch")
    chosen = select(rows.c[key]).where(where(rows)).limit(limit)
    return delete(target).where(target.c[key].in_(chosen.with_for_update(skip_locked=True)))


def _expired_rows(target: Table, key: str, now: dt.datetime) -> Batch:
    """Rows of a table with an ``expires_at`` that has passed."""
    kind = target.name

    async def batch(connection: AsyncConnection, limit: int) -> Counter[str]:
        statement = _bounded_delete(target, key, lambda rows: rows.c.expires_at <= now, limit)
        return Counter({kind: (await connection.execute(statement)).rowcount})

    return batch


def _spent_refresh_tokens(now: dt.datetime) -> Batch:
    """Rotated tokens past their own expiry, and expired ones left without a session."""

    def spent(rows: FromClause) -> ColumnElement[bool]:
        session_exists = exists().where(SESSIONS.c.id == rows.c.session_id)
        return and_(rows.c.expires_at <= now, or_(rows.c.used_at.is_not(None), ~session_exists))

    async def batch(connection: AsyncConnection, limit: int) -> Counter[str]:
        statement = _bounded_delete(REFRESH_TOKENS, "token_hash", spent, limit)
        return Counter({"refresh_tokens": (await connection.execute(statement)).rowcount})

    return batch


def _finished_deliveries(cutoff: dt.datetime) -> Batch:
    """Logout deliveries delivered or given up before the cutoff."""

    def finished(rows: FromClause) -> ColumnElement[bool]:
        return and_(
            rows.c.next_attempt_at.is_(None),
            or_(rows.c.delivered_at <= cutoff, rows.c.failed_at <= cutoff),
        )

    async def batch(connection: AsyncConnection, limit: int) -> Counter[str]:
        statement = _bounded_delete(LOGOUT_DELIVERIES, "id", finished, limit)
        return Counter({"logout_deliveries": (await connection.execute(statement)).rowcount})

    return batch


def _retired_sessions(cutoff: dt.datetime) -> Batch:
    """Sessions revoked before the cutoff or whose every token expired before it, with their
    refresh tokens (a session without tokens counts from its creation)."""
    sessions = SESSIONS.alias("batch")
    outlives_cutoff = exists().where(
        REFRESH_TOKENS.c.session_id == sessions.c.id, REFRESH_TOKENS.c.expires_at > cutoff
    )
    retired = or_(
        sessions.c.revoked_at <= cutoff,
        and_(sessions.c.created_at <= cutoff, ~outlives_cutoff),
    )

    async def batch(connection: AsyncConnection, limit: int) -> Counter[str]:
        chosen = select(sessions.c.id).where(retired).limit(limit)
        ids = list((await connection.scalars(chosen.with_for_update(skip_locked=True))).all())
        if not ids:
            return Counter({"sessions": 0})
        tokens = await connection.execute(
            delete(REFRESH_TOKENS).where(REFRESH_TOKENS.c.session_id.in_(ids))
        )
        deleted = await connection.execute(delete(SESSIONS).where(SESSIONS.c.id.in_(ids)))
        return Counter({"sessions": deleted.rowcount, SESSION_TOKENS: tokens.rowcount})

    return batch
