"""Broker sessions: create one with its first refresh token, revoke one.

A session (``sid``) is one refresh-token family; ``shared.refresh_rotation`` exchanges its newest
token for the next. Revoking the session kills every token of the family at once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.audit import record_audit_core
from shared.crypto.opaque import new_opaque_token, token_hash
from shared.db.base import table
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
