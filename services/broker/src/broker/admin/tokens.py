"""The sessions and upstream links listing, with their state; revoking either.

Serves ``/admin/oauth2/tokens`` and the dashboard's tokens page.

A broker session is one refresh-token family (its id is the ``sid`` in the tokens it issued); an
upstream link is the provider grant stored for one linked profile (``oauth2_tokens``, by its own
id). Neither ever shows a token, hash or ciphertext — only facts about them.

States. A session is ``revoked``; else ``expired`` when its current refresh token has expired;
``expiring`` when that token expires within :data:`EXPIRING_WITHIN`; else ``active``. An upstream
link is ``revoked``, ``needs_reauth`` or ``refresh_failing`` as the worker last found it; an
``ok`` link is ``expired`` when the broker can no longer renew it (its refresh token, or with
none its access token, has expired), ``expiring`` when that happens within
:data:`EXPIRING_WITHIN`, else ``active``.

Order, keyset-paginated; without ``kind`` both kinds are merged in it:

- newest first by ``(created_at, id)`` (each table has its ``(created_at, id)`` index);
- with ``state=expiring``, by when the session or link ends, soonest first; with
  ``state=expired``, by when it ended, the latest first. Both start nearest to now, and both walk
  an index of that end (sessions: their current refresh token's ``expires_at``; links: the
  partial ``ix_oauth2_tokens_renewal_end``) and stop after one page: newest first they would have
  to find and sort every match, and expired sessions are the oldest (docs/admin.md).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.auth_sessions import revoke_session
from shared.clock import rfc3339
from shared.db.tables import LINKS, REFRESH_TOKENS, SESSIONS
from shared.models.oauth2_token import renewal_end
from shared.runtime import Runtime
from shared.upstream_tokens import revoke_upstream_link
from sqlalchemy import ColumnElement, Select, and_, exists, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.admin.pagination import Cursor, page_limit, refuse_nul, refuse_unknown
from broker.http.errors import InvalidRequest, NotFound

EXPIRING_WITHIN = dt.timedelta(hours=24)
KINDS = ("session", "upstream")
SESSION_STATES = ("active", "expiring", "expired", "revoked")
UPSTREAM_STATES = ("active", "expiring", "expired", "refresh_failing", "needs_reauth", "revoked")
_FILTERS = {"kind", "user", "provider", "client", "state", "cursor", "limit"}
# The orders other than newest first, by the state filter that selects them (their cursors say
# which order they belong to).
ORDERS = {"expiring": "ends_asc", "expired": "ends_desc"}


async def tokens_listing(runtime: Runtime, query: Mapping[str, str]) -> dict[str, Any]:
    """One page of sessions and upstream links for these query parameters (the JSON body)."""
    refuse_unknown(query, _FILTERS)
    refuse_nul(query)
    limit = page_limit(query.get("limit"))
    kinds = _kinds(query)
    state = query.get("state")
    if state is not None and state not in SESSION_STATES + UPSTREAM_STATES:
        raise InvalidRequest(f"state must be one of {', '.join(UPSTREAM_STATES)}")
    user_id = _optional_uuid("user", query.get("user"))
    order = ORDERS.get(state or "", "")
    cursor = Cursor.decode(query["cursor"], order=order) if "cursor" in query else None
    cursor_id = _optional_uuid("cursor", cursor.id) if cursor else None
    now = runtime.clock.now()
    descending = order != ORDERS["expiring"]
    rows: list[dict[str, Any]] = []
    async with runtime.engine.connect() as connection:
        if "session" in kinds and (state is None or state in SESSION_STATES):
            walk = _sessions(now, user_id, query.get("provider"), query.get("client"), state)
            rows += await _page(connection, walk, descending, cursor, cursor_id, limit)
        if "upstream" in kinds and (state is None or state in UPSTREAM_STATES):
            walk = _upstream(now, user_id, query.get("provider"), state)
            rows += await _page(connection, walk, descending, cursor, cursor_id, limit)
    rows.sort(key=lambda row: (row["sort_at"], row["id"]), reverse=descending)
    page = rows[:limit]
    return {
        "tokens": [_public(row, now) for row in page],
        "next_cursor": (
            Cursor(at=page[-1]["sort_at"], id=str(page[-1]["id"]), order=order).encode()
            if len(rows) > limit
            else None
        ),
    }


@dataclass(frozen=True)
class _Walk:
    """A kind's rows for the filters, and the listing's sort key over them: ``(at, id)``."""

    statement: Select[Any]
    at: ColumnElement[Any]
    id: ColumnElement[Any]


def _kinds(query: Mapping[str, str]) -> tuple[str, ...]:
    kind = query.get("kind")
    if kind is not None and kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}")
    if "client" in query and kind == "upstream":
        raise InvalidRequest("client filters sessions; upstream links belong to no client")
    if "client" in query:
        return ("session",)
    return (kind,) if kind else KINDS


def _optional_uuid(name: str, value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        if name == "cursor":
            raise InvalidRequest("cursor is not one this listing returned") from None
        raise InvalidRequest(f"{name} must be a user id (UUID)") from None


async def _page(
    connection: AsyncConnection,
    walk: _Walk,
    descending: bool,
    cursor: Cursor | None,
    cursor_id: uuid.UUID | None,
    limit: int,
) -> list[dict[str, Any]]:
    statement = walk.statement.add_columns(walk.at.label("sort_at"))
    if cursor is not None:
        # The bound on ``at`` alone is what an index range scan can start from.
        if descending:
            bound = walk.at <= cursor.at
            after = or_(walk.at < cursor.at, and_(walk.at == cursor.at, walk.id < cursor_id))
        else:
            bound = walk.at >= cursor.at
            after = or_(walk.at > cursor.at, and_(walk.at == cursor.at, walk.id > cursor_id))
        statement = statement.where(bound, after)
    order = (walk.at.desc(), walk.id.desc()) if descending else (walk.at.asc(), walk.id.asc())
    statement = statement.order_by(*order).limit(limit + 1)
    return [dict(row._mapping) for row in await connection.execute(statement)]


def _current_refresh_token(*, after: dt.datetime) -> ColumnElement[bool]:
    return exists().where(
        REFRESH_TOKENS.c.session_id == SESSIONS.c.id,
        REFRESH_TOKENS.c.used_at.is_(None),
        REFRESH_TOKENS.c.expires_at > after,
    )


def _sessions(
    now: dt.datetime,
    user_id: uuid.UUID | None,
    provider: str | None,
    client: str | None,
    state: str | None,
) -> _Walk:
    columns = (
        SESSIONS.c.id,
        SESSIONS.c.user_id,
        SESSIONS.c.provider,
        SESSIONS.c.client_id,
        SESSIONS.c.scope,
        SESSIONS.c.auth_time,
        SESSIONS.c.created_at,
        SESSIONS.c.revoked_at,
        SESSIONS.c.revoked_reason,
        SESSIONS.c.ip,
        SESSIONS.c.user_agent,
    )
    live = SESSIONS.c.revoked_at.is_(None)
    soon = now + EXPIRING_WITHIN
    if state in ("expiring", "expired"):
        # Walked from the current tokens by their expiry index, nearest to now first: a page
        # reads about a page of current tokens, plus the rotated ones interleaved in that range
        # (kept for reuse detection until they expire). A live session has exactly one current
        # (unused) token — rotation replaces it in one statement, a replay gets the same
        # successor (shared.refresh_rotation) — kept until housekeeping deletes the session with
        # it; so the token's expiry is the session's.
        ends = REFRESH_TOKENS.c.expires_at
        window = and_(ends > now, ends <= soon) if state == "expiring" else ends <= now
        statement = (
            select(*columns, ends.label("expires_at"))
            .select_from(
                REFRESH_TOKENS.join(SESSIONS, SESSIONS.c.id == REFRESH_TOKENS.c.session_id)
            )
            .where(REFRESH_TOKENS.c.used_at.is_(None), window, live)
        )
        walk_at, walk_id = ends, REFRESH_TOKENS.c.session_id
    else:
        expires_at = (
            select(func.max(REFRESH_TOKENS.c.expires_at))
            .where(REFRESH_TOKENS.c.session_id == SESSIONS.c.id, REFRESH_TOKENS.c.used_at.is_(None))
            .scalar_subquery()
        )
        statement = select(*columns, expires_at.label("expires_at"))
        if state == "revoked":
            statement = statement.where(SESSIONS.c.revoked_at.is_not(None))
        elif state == "active":
            statement = statement.where(live, _current_refresh_token(after=soon))
        walk_at, walk_id = SESSIONS.c.created_at, SESSIONS.c.id
    if user_id is not None:
        statement = statement.where(SESSIONS.c.user_id == user_id)
    if provider is not None:
        statement = statement.where(SESSIONS.c.provider == provider)
    if client is not None:
        statement = statement.where(SESSIONS.c.client_id == client)
    return _Walk(statement, walk_at, walk_id)


def _upstream(
    now: dt.datetime, user_id: uuid.UUID | None, provider: str | None, state: str | None
) -> _Walk:
    statement = select(
        LINKS.c.id,
        LINKS.c.user_id,
        LINKS.c.provider,
        LINKS.c.state.label("link_state"),
        LINKS.c.scope,
        LINKS.c.created_at,
        LINKS.c.updated_at,
        LINKS.c.expires_at,
        LINKS.c.refresh_expires_at,
        (LINKS.c.refresh_token_enc.is_not(None)).label("has_refresh_token"),
        LINKS.c.failure_count,
        LINKS.c.last_error,
        LINKS.c.last_refreshed_at,
    )
    if user_id is not None:
        statement = statement.where(LINKS.c.user_id == user_id)
    if provider is not None:
        statement = statement.where(LINKS.c.provider == provider)
    if state in ("revoked", "needs_reauth", "refresh_failing"):
        statement = statement.where(LINKS.c.state == state)
    elif state is not None:
        ends = _renewal_end()
        soon = now + EXPIRING_WITHIN
        condition = {
            "expired": ends <= now,
            "expiring": and_(ends > now, ends <= soon),
            "active": or_(ends.is_(None), ends > soon),
        }[state]
        # The state written into the SQL, not bound: the partial index (state = 'ok') is usable
        # in a generic plan too.
        ok = literal("ok", literal_execute=True)
        statement = statement.where(LINKS.c.state == ok, condition)
        if state in ("expiring", "expired"):
            return _Walk(statement, ends, LINKS.c.id)
    return _Walk(statement, LINKS.c.created_at, LINKS.c.id)


def _renewal_end() -> ColumnElement[Any]:
    """When the broker can no longer renew a link (NULL when no end is known): the expression
    of ``ix_oauth2_tokens_renewal_end`` (shared.models.oauth2_token), spelled the same so the
    planner walks it."""
    return renewal_end(LINKS)


def _iso(value: dt.datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


def _session_state(row: Mapping[str, Any], now: dt.datetime) -> str:
    if row["revoked_at"] is not None:
        return "revoked"
    expires_at = row["expires_at"]
    if expires_at is None or expires_at <= now:
        return "expired"
    return "expiring" if expires_at <= now + EXPIRING_WITHIN else "active"


def _upstream_state(row: Mapping[str, Any], now: dt.datetime) -> str:
    if row["link_state"] != "ok":
        return str(row["link_state"])
    ends = row["refresh_expires_at"] if row["has_refresh_token"] else row["expires_at"]
    if ends is None or ends > now + EXPIRING_WITHIN:
        return "active"
    return "expired" if ends <= now else "expiring"


def _public(row: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    if "client_id" in row:
        return {
            "id": str(row["id"]),
            "kind": "session",
            "user_id": str(row["user_id"]),
            "provider": row["provider"],
            "client_id": row["client_id"],
            "state": _session_state(row, now),
            "scope": row["scope"],
            "created_at": _iso(row["created_at"]),
            "auth_time": _iso(row["auth_time"]),
            "expires_at": _iso(row["expires_at"]),
            "revoked_at": _iso(row["revoked_at"]),
            "revoked_reason": row["revoked_reason"],
            "ip": row["ip"],
            "user_agent": row["user_agent"],
        }
    return {
        "id": str(row["id"]),
        "kind": "upstream",
        "user_id": str(row["user_id"]),
        "provider": row["provider"],
        "state": _upstream_state(row, now),
        "scope": row["scope"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "expires_at": _iso(row["expires_at"]),
        "refresh_expires_at": _iso(row["refresh_expires_at"]),
        "has_refresh_token": bool(row["has_refresh_token"]),
        "failure_count": row["failure_count"],
        "last_error": row["last_error"],
        "last_refreshed_at": _iso(row["last_refreshed_at"]),
    }


async def revoke_token(
    runtime: Runtime, admin_id: uuid.UUID, token_id: uuid.UUID
) -> dict[str, Any]:
    """Revoke a broker session (by ``sid``) or an upstream link (by its id), audited with the
    admin as actor; ``changed`` is false when it was revoked already."""
    actor = f"user:{admin_id}"
    now = runtime.clock.now()
    async with runtime.engine.begin() as connection:
        session_state = await connection.scalar(
            select(SESSIONS.c.revoked_at.is_(None)).where(SESSIONS.c.id == token_id)
        )
        if session_state is not None:
            revocation = await revoke_session(
                connection, token_id, now=now, reason="admin_revoked", actor=actor
            )
            revocations = [revocation] if revocation else []
            kind = "session"
        else:
            link_state = await connection.scalar(
                select(LINKS.c.state).where(LINKS.c.id == token_id).with_for_update()
            )
            if link_state is None:
                raise NotFound("no such session or upstream link")
            kind = "upstream"
            if link_state == "revoked":
                revocations = []
            else:
                revocations = (
                    await revoke_upstream_link(
                        connection, token_id, now=now, actor=actor, reason="revoked_by_admin"
                    )
                    or []
                )
    await runtime.revocations.publish(revocations)
    changed = bool(revocations) if kind == "session" else link_state != "revoked"
    return {
        "id": str(token_id),
        "kind": kind,
        "changed": changed,
        "revoked_sessions": [str(revocation.session_id) for revocation in revocations],
    }
