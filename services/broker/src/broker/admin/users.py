"""The users listing (keyset pages, filters) and disabling or enabling a user.

Serves ``/admin/oauth2/users`` and the dashboard's users pages.

Newest users first, by ``(created_at, id)`` — the index ``ix_users_created_at_id`` serves the
order and the cursor. Disabling revokes every live session of the user in the same transaction
(their refresh tokens fail at once and their access tokens are refused by the broker's own APIs);
new sign-ins and refreshes are refused while the user is disabled. Each change is an audit event
whose actor is the admin.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from shared.audit import record_audit_core
from shared.auth_sessions import revoke_user_sessions
from shared.clock import rfc3339
from shared.db.tables import LINKS, PROFILES, SESSIONS, USERS
from shared.revocations import Revocation
from shared.runtime import Runtime
from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.admin.pagination import Cursor, page_limit, parse_instant, refuse_nul, refuse_unknown
from broker.http.errors import InvalidRequest, NotFound

STATUSES = ("active", "disabled")
_FILTERS = {
    "user",
    "provider",
    "email",
    "status",
    "last_login_after",
    "last_login_before",
    "cursor",
    "limit",
}


async def users_listing(runtime: Runtime, query: Mapping[str, str]) -> dict[str, Any]:
    """One page of the listing for these query parameters (the JSON body; the dashboard's too)."""
    refuse_unknown(query, _FILTERS)
    refuse_nul(query)
    limit = page_limit(query.get("limit"))
    statement = select(
        USERS.c.id,
        USERS.c.email,
        USERS.c.email_verified,
        USERS.c.display_name,
        USERS.c.status,
        USERS.c.created_at,
        USERS.c.last_login_at,
    )
    if (user := query.get("user")) is not None:
        try:
            statement = statement.where(USERS.c.id == uuid.UUID(user))
        except ValueError:
            raise InvalidRequest("user must be a user id (UUID)") from None
    if (provider := query.get("provider")) is not None:
        statement = statement.where(
            exists().where(PROFILES.c.user_id == USERS.c.id, PROFILES.c.provider == provider)
        )
    if (email := query.get("email")) is not None:
        if not email:
            raise InvalidRequest("email must not be empty")
        escaped = email.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(func.lower(USERS.c.email).like(f"%{escaped}%", escape="\\"))
    if (status := query.get("status")) is not None:
        if status not in STATUSES:
            raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}")
        statement = statement.where(USERS.c.status == status)
    if (after := parse_instant("last_login_after", query.get("last_login_after"))) is not None:
        statement = statement.where(USERS.c.last_login_at >= after)
    if (before := parse_instant("last_login_before", query.get("last_login_before"))) is not None:
        statement = statement.where(USERS.c.last_login_at < before)
    if (cursor := query.get("cursor")) is not None:
        last = Cursor.decode(cursor)
        try:
            last_id = uuid.UUID(last.id)
        except ValueError:
            raise InvalidRequest("cursor is not one this listing returned") from None
        statement = statement.where(
            or_(
                USERS.c.created_at < last.at,
                and_(USERS.c.created_at == last.at, USERS.c.id < last_id),
            )
        )
    statement = statement.order_by(USERS.c.created_at.desc(), USERS.c.id.desc()).limit(limit + 1)
    async with runtime.engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
        page = rows[:limit]
        links = await _links_of(connection, [row.id for row in page])
        sessions = await _live_sessions_of(connection, [row.id for row in page])
    return {
        "users": [_user(row, links.get(row.id, []), sessions.get(row.id, 0)) for row in page],
        "next_cursor": (
            Cursor(at=page[-1].created_at, id=str(page[-1].id)).encode()
            if len(rows) > limit
            else None
        ),
    }


async def _links_of(
    connection: AsyncConnection, user_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[Any]]:
    if not user_ids:
        return {}
    rows = await connection.execute(
        select(
            PROFILES.c.user_id,
            PROFILES.c.provider,
            PROFILES.c.email,
            PROFILES.c.email_verified,
            PROFILES.c.last_login_at,
            LINKS.c.state,
        )
        .outerjoin(LINKS, LINKS.c.profile_id == PROFILES.c.id)
        .where(PROFILES.c.user_id.in_(user_ids))
        .order_by(PROFILES.c.created_at, PROFILES.c.id)
    )
    found: dict[uuid.UUID, list[Any]] = {}
    for row in rows:
        found.setdefault(row.user_id, []).append(
            {
                "provider": row.provider,
                "email": row.email,
                "email_verified": bool(row.email_verified),
                "last_login_at": _iso(row.last_login_at),
                "link_state": row.state,
            }
        )
    return found


async def _live_sessions_of(
    connection: AsyncConnection, user_ids: list[uuid.UUID]
) -> dict[uuid.UUID, int]:
    if not user_ids:
        return {}
    rows = await connection.execute(
        select(SESSIONS.c.user_id, func.count())
        .where(SESSIONS.c.user_id.in_(user_ids), SESSIONS.c.revoked_at.is_(None))
        .group_by(SESSIONS.c.user_id)
    )
    return {row[0]: int(row[1]) for row in rows}


def _iso(value: dt.datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


def _user(row: Any, links: list[Any], live_sessions: int) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "email": row.email,
        "email_verified": bool(row.email_verified),
        "display_name": row.display_name,
        "status": row.status,
        "created_at": _iso(row.created_at),
        "last_login_at": _iso(row.last_login_at),
        "active_sessions": live_sessions,
        "links": links,
    }


async def set_user_status(
    runtime: Runtime, admin_id: uuid.UUID, user_id: uuid.UUID, status: str
) -> dict[str, Any]:
    """Disable (revoking every live session) or enable a user, audited with the admin as actor."""
    if status == "disabled" and user_id == admin_id:
        raise InvalidRequest("an admin cannot disable their own account")
    actor = f"user:{admin_id}"
    now = runtime.clock.now()
    revocations: list[Revocation] = []
    async with runtime.engine.begin() as connection:
        current = await connection.scalar(
            select(USERS.c.status).where(USERS.c.id == user_id).with_for_update()
        )
        if current is None:
            raise NotFound("no such user")
        changed = current != status
        if changed:
            await connection.execute(
                update(USERS).where(USERS.c.id == user_id).values(status=status, updated_at=now)
            )
            await record_audit_core(
                connection,
                action="user.disabled" if status == "disabled" else "user.enabled",
                actor=actor,
                subject=str(user_id),
                data={},
                now=now,
            )
        if status == "disabled":
            # Also when already disabled: a session that slipped in is ended all the same.
            revocations = await revoke_user_sessions(
                connection, user_id, now=now, reason="user_disabled", actor=actor
            )
    await runtime.revocations.publish(revocations)
    return {
        "id": str(user_id),
        "status": status,
        "changed": changed,
        "revoked_sessions": [str(revocation.session_id) for revocation in revocations],
    }
