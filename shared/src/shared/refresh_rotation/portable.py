"""The rotation as separate statements inside the caller's transaction.

SQLite (the embedded default) runs every rotation this way, and PostgreSQL the refreshes that
narrow the scope; the steps and their checks are those of the hot path's one statement
(``hot_path``). A rotation that finds nothing goes on to ``replays.resolve_failed_rotation`` in
the same transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.audit import audit_values
from shared.auth_sessions import SessionGrant
from shared.crypto.opaque import token_hash
from shared.db.tables import AUDIT_TABLE, LINKS, REFRESH_TOKENS, SESSIONS, USERS
from shared.refresh_rotation.outcomes import session_and_claims, session_grant
from shared.refresh_rotation.policy import BLOCKING_LINK_STATES, RotationPolicy
from shared.refresh_rotation.replays import resolve_failed_rotation


def _link_blocks(state: tuple[str, ...]) -> Any:
    """``EXISTS`` a link of the session's profile in one of ``state``."""
    return exists().where(LINKS.c.profile_id == SESSIONS.c.profile_id, LINKS.c.state.in_(state))


async def rotate_in_transaction(
    connection: AsyncConnection,
    policy: RotationPolicy,
    *,
    presented: str,
    client_id: str,
    now: dt.datetime,
    ip: str | None = None,
) -> SessionGrant:
    """The same rotation as separate statements inside the caller's transaction.

    Raises ``RotationError``; on ``REUSED`` the caller must commit so the family's revocation
    and its audit row persist.
    """
    successor = policy.successor(presented)
    expires_at = policy.expires_at(now)
    live_session = (
        select(SESSIONS.c.id)
        .join(USERS, USERS.c.id == SESSIONS.c.user_id)
        .where(
            SESSIONS.c.client_id == client_id,
            SESSIONS.c.revoked_at.is_(None),
            USERS.c.status == "active",
            ~_link_blocks(BLOCKING_LINK_STATES),
        )
    )
    used = (
        await connection.execute(
            update(REFRESH_TOKENS)
            .where(
                REFRESH_TOKENS.c.token_hash == token_hash(presented),
                REFRESH_TOKENS.c.used_at.is_(None),
                REFRESH_TOKENS.c.expires_at > now,
                REFRESH_TOKENS.c.session_id.in_(live_session),
            )
            .values(used_at=now)
            .returning(REFRESH_TOKENS.c.session_id)
        )
    ).first()
    if used is None:
        return await resolve_failed_rotation(
            connection, policy, presented=presented, client_id=client_id, now=now, ip=ip
        )
    await connection.execute(
        insert(REFRESH_TOKENS).values(
            session_id=used.session_id,
            token_hash=token_hash(successor),
            created_at=now,
            expires_at=expires_at,
        )
    )
    row = (
        await connection.execute(session_and_claims().where(SESSIONS.c.id == used.session_id))
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
    return session_grant(tuple(row), client_id, successor, expires_at)
