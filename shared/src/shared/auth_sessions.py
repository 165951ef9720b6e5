"""Broker sessions: create one with its first refresh token, look a token up, revoke.

A session (``sid``) is one refresh-token family; ``shared.refresh_rotation`` exchanges its newest
token for the next. Revoking the session kills every token of the family at once, and every
access token minted for it at ``/userinfo`` and introspection.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.audit import record_audit_core
from shared.crypto.opaque import new_opaque_token, token_hash
from shared.db.tables import LINKS, REFRESH_TOKENS, SESSIONS, USERS
from shared.revocations import Revocation

USER_CLAIM_COLUMNS = (
    "email",
    "email_verified",
    "display_name",
    "picture",
    "preferred_username",
    "groups",
)


@dataclass(frozen=True)
class SessionGrant:
    """What a token response needs after a session was created or a refresh token rotated."""

    session_id: uuid.UUID
    user_id: uuid.UUID
    client_id: str
    provider: str  # the session's sign-in provider
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
    browser_hash: bytes | None = None,
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
            browser_hash=browser_hash,
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
        provider=provider,
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
) -> Revocation | None:
    """Revoke a session (its refresh tokens die with it); audited; None if already revoked.

    Publish the returned revocation once the caller's transaction has committed.
    """
    result = await connection.execute(
        update(SESSIONS)
        .where(and_(SESSIONS.c.id == session_id, SESSIONS.c.revoked_at.is_(None)))
        .values(revoked_at=now, revoked_reason=reason)
        .returning(SESSIONS.c.user_id, SESSIONS.c.client_id)
    )
    row = result.first()
    if row is None:
        return None
    await record_audit_core(
        connection,
        action="session.revoked",
        actor=actor,
        subject=str(row.user_id),
        client_id=row.client_id,
        data={"sid": str(session_id), "reason": reason},
        now=now,
    )
    return Revocation(session_id=session_id, reason=reason, revoked_at=now)


@dataclass(frozen=True)
class RefreshTokenState:
    """A stored refresh token with the state of everything it depends on."""

    session_id: uuid.UUID
    user_id: uuid.UUID
    client_id: str
    scope: str
    created_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None
    session_revoked_at: dt.datetime | None
    user_status: str
    link_state: str | None  # the session's upstream link (oauth2_tokens.state), if any


async def lookup_refresh_token(
    connection: AsyncConnection, presented_hash: bytes
) -> RefreshTokenState | None:
    """The token with this SHA-256, its session, user and upstream link; None if unknown."""
    link_state = (
        select(LINKS.c.state)
        .where(LINKS.c.profile_id == SESSIONS.c.profile_id)
        .scalar_subquery()
        .label("link_state")
    )
    row = (
        await connection.execute(
            select(
                REFRESH_TOKENS.c.session_id,
                SESSIONS.c.user_id,
                SESSIONS.c.client_id,
                SESSIONS.c.scope,
                REFRESH_TOKENS.c.created_at,
                REFRESH_TOKENS.c.expires_at,
                REFRESH_TOKENS.c.used_at,
                SESSIONS.c.revoked_at.label("session_revoked_at"),
                USERS.c.status.label("user_status"),
                link_state,
            )
            .join(SESSIONS, SESSIONS.c.id == REFRESH_TOKENS.c.session_id)
            .join(USERS, USERS.c.id == SESSIONS.c.user_id)
            .where(REFRESH_TOKENS.c.token_hash == presented_hash)
        )
    ).first()
    return None if row is None else RefreshTokenState(**row._mapping)


async def revoke_user_sessions(
    connection: AsyncConnection,
    user_id: uuid.UUID,
    *,
    now: dt.datetime,
    reason: str,
    actor: str,
) -> list[Revocation]:
    """Revoke every live session of a user, each one audited."""
    return await _revoke_live(connection, SESSIONS.c.user_id == user_id, now, reason, actor)


async def revoke_link_sessions(
    connection: AsyncConnection,
    profile_id: uuid.UUID,
    *,
    now: dt.datetime,
    reason: str,
    actor: str,
) -> list[Revocation]:
    """Revoke the live sessions signed in through one upstream link."""
    return await _revoke_live(connection, SESSIONS.c.profile_id == profile_id, now, reason, actor)


async def revoke_provider_sessions(
    connection: AsyncConnection,
    provider_id: str,
    *,
    now: dt.datetime,
    reason: str,
    actor: str,
) -> list[Revocation]:
    """Revoke the live sessions signed in through one provider (an admin disabling it)."""
    return await _revoke_live(connection, SESSIONS.c.provider == provider_id, now, reason, actor)


async def revoke_browser_sessions(
    connection: AsyncConnection,
    browser_hash: bytes,
    *,
    client_id: str | None,
    now: dt.datetime,
    reason: str,
    actor: str,
) -> list[Revocation]:
    """Revoke the live sessions one browser signed in (of one client, if given)."""
    condition = SESSIONS.c.browser_hash == browser_hash
    if client_id is not None:
        condition = and_(condition, SESSIONS.c.client_id == client_id)
    return await _revoke_live(connection, condition, now, reason, actor)


async def _revoke_live(
    connection: AsyncConnection,
    condition: ColumnElement[bool],
    now: dt.datetime,
    reason: str,
    actor: str,
) -> list[Revocation]:
    live = await connection.execute(
        # In id order: concurrent revocations of overlapping sets lock rows in the same order.
        select(SESSIONS.c.id)
        .where(condition, SESSIONS.c.revoked_at.is_(None))
        .order_by(SESSIONS.c.id)
    )
    return await _revoke_each(connection, live.scalars(), now, reason, actor)


async def _revoke_each(
    connection: AsyncConnection,
    session_ids: Any,
    now: dt.datetime,
    reason: str,
    actor: str,
) -> list[Revocation]:
    revoked = []
    for session_id in list(session_ids):
        revocation = await revoke_session(
            connection, session_id, now=now, reason=reason, actor=actor
        )
        if revocation is not None:
            revoked.append(revocation)
    return revoked
