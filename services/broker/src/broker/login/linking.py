"""Who may start a link flow, and unlinking.

A link adds a way into an account, so starting one is as strong as signing in
(docs/security.md "Linking needs a fresh browser sign-in"): it starts only from the browser that
holds the user's broker session (the browser-session cookie stored, hashed, on each session it
signed in), and only when that session authenticated within ``link_max_auth_age``. Otherwise
the browser signs in again first and the link continues from there. A Bearer token never
starts a link: whoever holds a leaked access token must not attach their own identity to its
user. An ``id_token_hint`` names which of this browser's sessions (and so which user) links;
without one, the browser's most recent sign-in does.

The upstream state is then bound to that user and to this browser's login cookie, so a callback
URL started by one user and opened in another's browser links nothing.

Unlinking deletes the profile and its upstream tokens, ends the sessions signed in through it,
and never removes the user's last way to sign in: a link counts as one only while its provider
is configured and enabled.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from shared.audit import record_audit_core
from shared.auth_sessions import revoke_link_sessions
from shared.crypto.keyring import Keyring
from shared.crypto.opaque import token_hash
from shared.db.tables import CODES, LINKS, PROFILES, SESSIONS, USERS
from shared.revocations import Revocation
from shared.runtime import Runtime
from shared.upstream_tokens import unseal_upstream_token
from shared.user_claims import refresh_user_claims
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from broker.http.errors import AccessDenied
from broker.http.pages import link_confirm_page
from broker.login import browser_sessions
from broker.login.logins import ClientRequest, LinkOwner, StartedLogin, set_login_cookie
from broker.oauth.responses import client_error_location
from broker.oauth.tokens import TokenInvalid, verify_id_token_hint


class LinkNotAllowed(Exception):
    """The request names a session it cannot speak for (an ID token not of this broker)."""


@dataclass(frozen=True)
class SignInFirst:
    """No fresh sign-in in this browser: sign in, then link. ``user_id`` and ``provider`` are
    whom this browser's (stale) session, or the ``id_token_hint``, says to expect, if anyone."""

    user_id: uuid.UUID | None
    provider: str | None


async def link_start(request: Request, runtime: Runtime) -> LinkOwner | SignInFirst:
    """Who links: this browser's freshly signed-in user, or ``SignInFirst``."""
    hinted_session: uuid.UUID | None = None
    hinted_user: uuid.UUID | None = None
    hint = request.query_params.get("id_token_hint")
    if hint:
        try:
            claims = verify_id_token_hint(hint, runtime.keys.snapshot, runtime.settings)
            hinted_session = uuid.UUID(str(claims["sid"]))
            hinted_user = uuid.UUID(str(claims["sub"]))
        except (TokenInvalid, ValueError):
            raise LinkNotAllowed("the id_token_hint is not an ID token of this service") from None
    browser = browser_sessions.current(request, runtime)
    if browser is None:
        return SignInFirst(user_id=hinted_user, provider=None)
    query = (
        select(SESSIONS.c.id, SESSIONS.c.user_id, SESSIONS.c.provider, SESSIONS.c.auth_time)
        .join(USERS, USERS.c.id == SESSIONS.c.user_id)
        .where(
            SESSIONS.c.browser_hash == token_hash(browser),
            SESSIONS.c.revoked_at.is_(None),
            USERS.c.status == "active",
        )
        .order_by(SESSIONS.c.auth_time.desc(), SESSIONS.c.created_at.desc())
        .limit(1)
    )
    if hinted_session is not None:
        query = query.where(SESSIONS.c.id == hinted_session, SESSIONS.c.user_id == hinted_user)
    async with runtime.engine.connect() as connection:
        row = (await connection.execute(query)).first()
    if row is None:
        return SignInFirst(user_id=hinted_user, provider=None)
    oldest = runtime.clock.now() - dt.timedelta(seconds=runtime.settings.link_max_auth_age)
    if row.auth_time < oldest:
        return SignInFirst(user_id=row.user_id, provider=row.provider)
    return LinkOwner(user_id=row.user_id, session_id=row.id)


async def confirm_link(
    runtime: Runtime,
    owner: LinkOwner,
    provider_name: str,
    started: StartedLogin,
    request: ClientRequest,
) -> Response:
    """A page naming the account and the provider, whose button goes on upstream.

    A link starts from a plain navigation, which another site can make a browser do; the page
    (never framed: ``frame-ancestors 'none'``) makes the person take the last step themselves,
    seeing which account gets the new way in (login CSRF: a browser signed in upstream as
    someone else does not get linked without a click).
    """
    async with runtime.engine.connect() as connection:
        user = (
            await connection.execute(
                select(USERS.c.email, USERS.c.display_name, USERS.c.custom_display_name).where(
                    USERS.c.id == owner.user_id
                )
            )
        ).first()
    account = str(owner.user_id)
    if user is not None:
        account = user.email or user.custom_display_name or user.display_name or account
    cancel = client_error_location(
        runtime.settings.issuer,
        request.redirect_uri,
        AccessDenied("the person did not confirm the link"),
        request.state,
    )
    page = link_confirm_page(provider_name, account, started.upstream_url, cancel)
    set_login_cookie(page, runtime, started.browser_token)
    return page


async def link_flow_session_alive(connection: AsyncConnection, owner: LinkOwner) -> bool:
    """At the callback: the user is still active and the session that started the link (when
    one did) is still live."""
    query = select(USERS.c.id).where(USERS.c.id == owner.user_id, USERS.c.status == "active")
    if owner.session_id is not None:
        query = query.join(SESSIONS, SESSIONS.c.user_id == USERS.c.id).where(
            SESSIONS.c.id == owner.session_id, SESSIONS.c.revoked_at.is_(None)
        )
    return (await connection.execute(query)).first() is not None


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


async def upstream_tokens_to_revoke(
    connection: AsyncConnection, keyring: Keyring, user_id: uuid.UUID, provider_id: str
) -> tuple[str | None, str | None]:
    """The link's access and refresh tokens, decrypted, to revoke after unlinking."""
    if "\x00" in provider_id:
        # No provider id has NUL (a path parameter may), and PostgreSQL text cannot hold it
        # (the query raised DataError: a 500); ``unlink`` then answers "not linked".
        return None, None
    row = (
        await connection.execute(
            select(
                LINKS.c.id,
                LINKS.c.access_token_enc,
                LINKS.c.refresh_token_enc,
            ).where(
                LINKS.c.user_id == user_id,
                LINKS.c.provider == provider_id,
            )
        )
    ).first()
    if row is None:
        return None, None
    return (
        unseal_upstream_token(keyring, row.id, "access_token", row.access_token_enc),
        unseal_upstream_token(keyring, row.id, "refresh_token", row.refresh_token_enc),
    )
