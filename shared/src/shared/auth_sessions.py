"""Broker sessions and their refresh-token families: create, rotate, revoke.

A session (``sid``) is one refresh-token family. Each refresh presents the newest token of the
family; it is marked used and its successor inserted in one transaction. On PostgreSQL that is
one SQL statement (data-modifying CTEs) on the hot-path pool, so a rotation costs one round trip
and one commit; on SQLite (the embedded default) the same steps run as separate statements in
one transaction.

RFC 9700 §4.14.2: presenting a token that was already rotated revokes the whole family.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, NoReturn

import psycopg
from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.audit import AUDIT_TABLE, audit_values, record_audit_core
from shared.crypto.opaque import new_opaque_token, token_hash
from shared.db.base import table
from shared.db.hot_path import HotPathPool, PoolTimeout
from shared.models import AuthSession, RefreshToken, User

USER_CLAIM_COLUMNS = ("email", "email_verified", "display_name", "picture", "preferred_username")
SESSIONS = table(AuthSession)
REFRESH_TOKENS = table(RefreshToken)
USERS = table(User)


@dataclass(frozen=True)
class SessionGrant:
    """What a token response needs after a session was created or a refresh token rotated."""

    session_id: uuid.UUID
    user_id: uuid.UUID
    client_id: str
    scope: str
    auth_time: dt.datetime
    refresh_token: str
    refresh_expires_at: dt.datetime
    # The user's current claims (email, email_verified, display_name, picture,
    # preferred_username), read in the same statement as the rotation.
    user: Mapping[str, Any] | None = None


class RotationFailure(Enum):
    UNKNOWN = "unknown"  # never issued, or purged
    EXPIRED = "expired"
    WRONG_CLIENT = "wrong_client"
    REVOKED = "revoked"  # the session was revoked or the user disabled
    REUSED = "reused"  # an already rotated token: the family is now revoked


class RotationError(Exception):
    def __init__(self, failure: RotationFailure, session_id: uuid.UUID | None = None) -> None:
        super().__init__(failure.value)
        self.failure = failure
        self.session_id = session_id


async def create_session(
    connection: AsyncConnection,
    *,
    user_id: uuid.UUID,
    client_id: str,
    provider: str,
    profile_id: uuid.UUID | None,
    scope: str,
    auth_time: dt.datetime,
    now: dt.datetime,
    refresh_ttl: int,
    user_agent: str | None = None,
    ip: str | None = None,
) -> SessionGrant:
    """Start a session and its first refresh token (inside the caller's transaction)."""
    session_id = uuid.uuid4()
    await connection.execute(
        insert(SESSIONS).values(
            id=session_id,
            user_id=user_id,
            client_id=client_id,
            provider=provider,
            profile_id=profile_id,
            scope=scope,
            auth_time=auth_time,
            created_at=now,
            user_agent=(user_agent or "")[:512] or None,
            ip=ip,
        )
    )
    refresh_token = new_opaque_token()
    expires_at = now + dt.timedelta(seconds=refresh_ttl)
    await connection.execute(
        insert(REFRESH_TOKENS).values(
            session_id=session_id,
            token_hash=token_hash(refresh_token),
            created_at=now,
            expires_at=expires_at,
        )
    )
    return SessionGrant(
        session_id=session_id,
        user_id=user_id,
        client_id=client_id,
        scope=scope,
        auth_time=auth_time,
        refresh_token=refresh_token,
        refresh_expires_at=expires_at,
    )


# The PostgreSQL rotation: one statement (data-modifying CTEs), run in autocommit on the hot-path
# pool. It marks the presented token used, inserts its successor and the audit row, and returns
# the session and the user's claims; zero rows means nothing was rotated (see diagnose_rotation).
_ROTATE_POSTGRES = """
    WITH used AS (
        UPDATE refresh_tokens AS rt SET used_at = $1
        FROM auth_sessions AS s JOIN users AS u ON u.id = s.user_id
        WHERE rt.token_hash = $2 AND rt.used_at IS NULL AND rt.expires_at > $1
          AND s.id = rt.session_id AND s.client_id = $3 AND s.revoked_at IS NULL
          AND u.status = 'active'
        RETURNING s.id AS session_id, s.user_id, s.scope, s.auth_time
    ), successor AS (
        INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at)
        SELECT $4, used.session_id, $1, $5 FROM used
    ), audit AS (
        INSERT INTO audit_actions
            (event_id, action, actor, subject, client_id, ip, data, occurred_at)
        SELECT gen_random_uuid(), 'refresh_token.rotated', 'client:' || $3, used.user_id::text,
               $3, $6, jsonb_build_object('sid', used.session_id::text), $1
        FROM used
    )
    SELECT used.session_id, used.user_id, used.scope, used.auth_time, u.email, u.email_verified,
           u.display_name, u.picture, u.preferred_username
    FROM used JOIN users AS u ON u.id = used.user_id
"""

# After a connection failure: did this call's rotation commit? Its successor (a fresh random
# token, the table's key) exists only if it did. Still live only if session and user are.
_ROTATED_TO_POSTGRES = """
    SELECT s.id, s.user_id, s.scope, s.auth_time, u.email, u.email_verified, u.display_name,
           u.picture, u.preferred_username
    FROM refresh_tokens AS rt JOIN auth_sessions AS s ON s.id = rt.session_id
    JOIN users AS u ON u.id = s.user_id
    WHERE rt.token_hash = $1 AND s.revoked_at IS NULL AND u.status = 'active'
"""


def _granted(
    row: Sequence[Any], client_id: str, successor: str, expires_at: dt.datetime
) -> SessionGrant:
    """A grant from a row of (session_id, user_id, scope, auth_time, *USER_CLAIM_COLUMNS)."""
    return SessionGrant(
        session_id=row[0],
        user_id=row[1],
        client_id=client_id,
        scope=row[2],
        auth_time=row[3],
        refresh_token=successor,
        refresh_expires_at=expires_at,
        user=dict(zip(USER_CLAIM_COLUMNS, row[4:], strict=True)),
    )


async def rotate_refresh_token(
    connection: AsyncConnection,
    *,
    presented: str,
    client_id: str,
    now: dt.datetime,
    refresh_ttl: int,
    ip: str | None = None,
) -> SessionGrant:
    """Exchange a refresh token for its successor inside the caller's transaction.

    The portable path (SQLite, and a PostgreSQL refresh that narrows the scope). Raises
    ``RotationError``; on ``REUSED`` the caller must commit so the family's revocation and its
    audit row persist.
    """
    successor = new_opaque_token()
    expires_at = now + dt.timedelta(seconds=refresh_ttl)
    row = await _rotate_stepwise(
        connection, token_hash(presented), token_hash(successor), client_id, now, expires_at, ip
    )
    if row is None:
        await diagnose_rotation(connection, presented=presented, client_id=client_id, now=now)
    assert row is not None  # diagnose_rotation always raises
    return _granted(row, client_id, successor, expires_at)


async def rotate_refresh_token_autocommit(
    pool: HotPathPool,
    *,
    presented: str,
    client_id: str,
    now: dt.datetime,
    refresh_ttl: int,
    ip: str | None = None,
) -> SessionGrant | None:
    """The PostgreSQL hot path: the rotation is one statement and its own transaction.

    ``None`` means nothing was rotated; the caller runs ``diagnose_rotation`` in a transaction.
    A connection that fails during the statement leaves its outcome unknown, and the first
    statement may even still be running on the server. So the rotation is run again: it waits
    behind the first one's row lock, and finding nothing to rotate means the first one either
    committed — then its successor row exists and is this call's answer — or rotated nothing.
    (Answering "reused" there would revoke the session for a network failure.)
    """
    successor = new_opaque_token()
    successor_hash = token_hash(successor)
    expires_at = now + dt.timedelta(seconds=refresh_ttl)
    params = (now, token_hash(presented), client_id, successor_hash, expires_at, ip)
    try:
        row = await pool.fetchone(_ROTATE_POSTGRES, params)
    except PoolTimeout:
        raise  # the statement was never sent
    except psycopg.OperationalError:
        row = await pool.fetchone(_ROTATE_POSTGRES, params)
        if row is None:
            row = await pool.fetchone(_ROTATED_TO_POSTGRES, (successor_hash,))
    return None if row is None else _granted(row, client_id, successor, expires_at)


async def _rotate_stepwise(
    connection: AsyncConnection,
    presented_hash: bytes,
    successor_hash: bytes,
    client_id: str,
    now: dt.datetime,
    expires_at: dt.datetime,
    ip: str | None,
) -> tuple[Any, ...] | None:
    """The same rotation as ``_ROTATE_POSTGRES`` as separate statements in one transaction."""
    live_session = (
        select(SESSIONS.c.id)
        .join(USERS, USERS.c.id == SESSIONS.c.user_id)
        .where(
            SESSIONS.c.client_id == client_id,
            SESSIONS.c.revoked_at.is_(None),
            USERS.c.status == "active",
        )
    )
    used = (
        await connection.execute(
            update(REFRESH_TOKENS)
            .where(
                REFRESH_TOKENS.c.token_hash == presented_hash,
                REFRESH_TOKENS.c.used_at.is_(None),
                REFRESH_TOKENS.c.expires_at > now,
                REFRESH_TOKENS.c.session_id.in_(live_session),
            )
            .values(used_at=now)
            .returning(REFRESH_TOKENS.c.session_id)
        )
    ).first()
    if used is None:
        return None
    await connection.execute(
        insert(REFRESH_TOKENS).values(
            session_id=used.session_id,
            token_hash=successor_hash,
            created_at=now,
            expires_at=expires_at,
        )
    )
    row = (
        await connection.execute(
            select(
                SESSIONS.c.id,
                SESSIONS.c.user_id,
                SESSIONS.c.scope,
                SESSIONS.c.auth_time,
                *(USERS.c[name] for name in USER_CLAIM_COLUMNS),
            )
            .join(USERS, USERS.c.id == SESSIONS.c.user_id)
            .where(SESSIONS.c.id == used.session_id)
        )
    ).one()
    await connection.execute(
        insert(AUDIT_TABLE).values(
            **audit_values(
                action="refresh_token.rotated",
                actor=f"client:{client_id}",
                subject=str(row.user_id),
                client_id=client_id,
                ip=ip,
                data={"sid": str(row.id)},
                now=now,
            )
        )
    )
    return tuple(row)


async def diagnose_rotation(
    connection: AsyncConnection, *, presented: str, client_id: str, now: dt.datetime
) -> NoReturn:
    """Why a rotation found nothing, raised as ``RotationError``; a reuse revokes the family."""
    presented_hash = token_hash(presented)
    row = (
        await connection.execute(
            select(
                REFRESH_TOKENS.c.session_id,
                REFRESH_TOKENS.c.used_at,
                REFRESH_TOKENS.c.expires_at,
                SESSIONS.c.client_id,
                SESSIONS.c.user_id,
                SESSIONS.c.revoked_at,
            )
            .join(SESSIONS, SESSIONS.c.id == REFRESH_TOKENS.c.session_id)
            .where(REFRESH_TOKENS.c.token_hash == presented_hash)
        )
    ).first()
    if row is None:
        raise RotationError(RotationFailure.UNKNOWN)
    if row.client_id != client_id:
        # RFC 6749 §10.4: bound to its client; another client learns nothing about it.
        raise RotationError(RotationFailure.WRONG_CLIENT)
    if row.revoked_at is not None:
        raise RotationError(RotationFailure.REVOKED, row.session_id)
    if row.used_at is not None:
        # RFC 9700 §4.14.2: a rotated token presented again revokes the whole family.
        await revoke_session(
            connection,
            row.session_id,
            now=now,
            reason="refresh_token_reuse",
            actor=f"client:{client_id}",
        )
        await record_audit_core(
            connection,
            action="refresh_token.reuse_detected",
            actor=f"client:{client_id}",
            subject=str(row.user_id),
            client_id=client_id,
            data={"sid": str(row.session_id)},
            now=now,
        )
        raise RotationError(RotationFailure.REUSED, row.session_id)
    if row.expires_at <= now:
        raise RotationError(RotationFailure.EXPIRED, row.session_id)
    raise RotationError(RotationFailure.REVOKED, row.session_id)  # the user is disabled


async def revoke_session(
    connection: AsyncConnection,
    session_id: uuid.UUID,
    *,
    now: dt.datetime,
    reason: str,
    actor: str,
) -> bool:
    """Revoke a session (its refresh tokens die with it); audited; False if already revoked."""
    result = await connection.execute(
        update(SESSIONS)
        .where(and_(SESSIONS.c.id == session_id, SESSIONS.c.revoked_at.is_(None)))
        .values(revoked_at=now, revoked_reason=reason)
        .returning(SESSIONS.c.user_id, SESSIONS.c.client_id)
    )
    row = result.first()
    if row is None:
        return False
    await record_audit_core(
        connection,
        action="session.revoked",
        actor=actor,
        subject=str(row.user_id),
        client_id=row.client_id,
        data={"sid": str(session_id), "reason": reason},
        now=now,
    )
    return True
