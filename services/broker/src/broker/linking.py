"""Who may start a link flow, and unlinking.

A link flow attaches another upstream identity to the signed-in user. It starts from either

* a live broker access token (``Authorization: Bearer``), or
* an ``id_token_hint`` naming a live session *that this browser signed in* (its browser-session
  cookie), for plain browser navigations that cannot carry a header.

Its upstream state is then bound to that user and session and to this browser's login cookie
(SECURITY.md 7), so a callback URL started by one user and opened in another's browser links
nothing.

Unlinking deletes the profile and its upstream tokens, ends the sessions signed in through it,
and never removes the user's last way to sign in: a link counts as one only while its provider
is configured and enabled.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from shared.audit import record_audit_core
from shared.auth_sessions import SESSIONS, USERS, revoke_link_sessions
from shared.crypto.opaque import token_hash
from shared.db.base import table
from shared.models import AuthorizationCode, OAuth2Profile
from shared.revocations import Revocation
from shared.runtime import Runtime
from shared.user_claims import refresh_user_claims
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request

from broker import browser_sessions
from broker.callers import authenticated_caller
from broker.errors import OAuthError
from broker.logins import LinkOwner
from broker.tokens import TokenInvalid, verify_id_token_hint

PROFILES = table(OAuth2Profile)
CODES = table(AuthorizationCode)


class LinkNotAllowed(Exception):
    """Nobody is signed in (as far as this request shows): no link flow may start."""


async def link_owner(request: Request, runtime: Runtime) -> LinkOwner:
    if request.headers.get("authorization"):
        try:
            caller = await authenticated_caller(request)
        except OAuthError:
            raise LinkNotAllowed("the access token is invalid or its session has ended") from None
        return LinkOwner(user_id=caller.user_id, session_id=caller.session_id)
    hint = request.query_params.get("id_token_hint")
    browser = browser_sessions.current(request, runtime)
    if not hint or browser is None:
        raise LinkNotAllowed("sign in first")
    try:
        claims = verify_id_token_hint(hint, runtime.keys.snapshot, runtime.settings)
        session_id = uuid.UUID(str(claims["sid"]))
    except (TokenInvalid, ValueError):
        raise LinkNotAllowed("the id_token_hint is not an ID token of this service") from None
    async with runtime.engine.connect() as connection:
        row = (
            await connection.execute(
                select(SESSIONS.c.user_id)
                .join(USERS, USERS.c.id == SESSIONS.c.user_id)
                .where(
                    SESSIONS.c.id == session_id,
                    SESSIONS.c.revoked_at.is_(None),
                    SESSIONS.c.browser_hash == token_hash(browser),
                    USERS.c.status == "active",
                )
            )
        ).first()
    if row is None or str(row.user_id) != str(claims["sub"]):
        raise LinkNotAllowed("that session has ended or was signed in from another browser")
    return LinkOwner(user_id=row.user_id, session_id=session_id)


async def link_flow_session_alive(connection: AsyncConnection, owner: LinkOwner) -> bool:
    """At the callback: the session that started the link is still live, its user active."""
    row = (
        await connection.execute(
            select(SESSIONS.c.id)
            .join(USERS, USERS.c.id == SESSIONS.c.user_id)
            .where(
                SESSIONS.c.id == owner.session_id,
                SESSIONS.c.user_id == owner.user_id,
                SESSIONS.c.revoked_at.is_(None),
                USERS.c.status == "active",
            )
        )
    ).first()
    return row is not None


class UnlinkRefused(Exception):
    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


@dataclass(frozen=True)
class Unlinked:
    provider: str
    profile_id: uuid.UUID
    revocations: list[Revocation]


async def unlink(
    connection: AsyncConnection,
    *,
    user_id: uuid.UUID,
    provider_id: str,
    login_providers: frozenset[str],
    now: dt.datetime,
) -> Unlinked:
    """Remove the user's link to ``provider_id``; ``UnlinkRefused`` if absent or the last one."""
    links = (
        await connection.execute(
            select(PROFILES.c.id, PROFILES.c.provider)
            .where(PROFILES.c.user_id == user_id)
            .with_for_update()
        )
    ).all()
    target = next((link for link in links if link.provider == provider_id), None)
    if target is None:
        raise UnlinkRefused("not_linked", f"no link to {provider_id!r}")
    remaining = [
        link for link in links if link.id != target.id and link.provider in login_providers
    ]
    if not remaining:
        raise UnlinkRefused(
            "last_login_method",
            "this is the last way to sign in to the account; link another provider first",
        )
    actor = f"user:{user_id}"
    revocations = await revoke_link_sessions(
        connection, target.id, now=now, reason="link_removed", actor=actor
    )
    # A code issued through this link but not yet exchanged must not outlive it.
    await connection.execute(
        update(CODES)
        .where(CODES.c.profile_id == target.id, CODES.c.used_at.is_(None))
        .values(used_at=now)
    )
    await connection.execute(delete(PROFILES).where(PROFILES.c.id == target.id))
    for column in ("primary_email_provider", "primary_avatar_provider"):
        await connection.execute(
            update(USERS)
            .where(USERS.c.id == user_id, USERS.c[column] == provider_id)
            .values({column: None})
        )
    await refresh_user_claims(connection, user_id, now)
    await record_audit_core(
        connection,
        action="link.removed",
        actor=actor,
        subject=str(user_id),
        data={
            "provider": provider_id,
            "profile_id": str(target.id),
            "revoked_sessions": [str(r.session_id) for r in revocations],
        },
        now=now,
    )
    return Unlinked(provider=provider_id, profile_id=target.id, revocations=revocations)
