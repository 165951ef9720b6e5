"""Who is an admin: a broker user id or a linked ``provider:subject`` named in the ``admins:``
configuration, or a user granted with ``broker admins grant`` (``admin_grants``) — never an
email, which any provider can claim (SECURITY.md 26)."""

from __future__ import annotations

import uuid

from shared.auth_sessions import LINKS
from shared.db.base import table
from shared.models import AdminGrant, OAuth2Profile
from shared.settings import Settings
from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request

from broker.callers import Caller, authenticated_caller
from broker.errors import AccessDenied
from broker.routes.context import runtime_of

PROFILES = table(OAuth2Profile)
GRANTS = table(AdminGrant)


async def is_admin_user(
    connection: AsyncConnection, settings: Settings, user_id: uuid.UUID
) -> bool:
    """Whether ``user_id`` is an admin: by config ``user:<id>``, by an ``admin_grants`` row, or
    by a config ``provider:subject`` naming one of its links that still counts."""
    if f"user:{user_id}" in settings.admins:
        return True
    # A primary-key lookup; the grant follows the user id, whichever provider they signed in with.
    if await connection.scalar(select(exists().where(GRANTS.c.user_id == user_id))):
        return True
    if not any(not entry.startswith("user:") for entry in settings.admins):
        return False
    # Only a link that still counts: its provider configured, its upstream grant not revoked
    # nor waiting for a new sign-in (an offboarded upstream account stops being admin).
    links = await connection.execute(
        select(PROFILES.c.provider, PROFILES.c.subject)
        .outerjoin(LINKS, LINKS.c.profile_id == PROFILES.c.id)
        .where(
            PROFILES.c.user_id == user_id,
            or_(LINKS.c.state.is_(None), LINKS.c.state.not_in(("revoked", "needs_reauth"))),
        )
    )
    configured = {provider.id for provider in settings.providers if not provider.disabled}
    return any(
        row.provider in configured and f"{row.provider}:{row.subject}" in settings.admins
        for row in links
    )


async def is_admin(connection: AsyncConnection, settings: Settings, caller: Caller) -> bool:
    """Whether the caller's user is an admin (``is_admin_user``)."""
    return await is_admin_user(connection, settings, caller.user_id)


async def require_admin(connection: AsyncConnection, settings: Settings, caller: Caller) -> None:
    """403 ``access_denied`` for a signed-in user who is not an admin."""
    if not await is_admin(connection, settings, caller):
        raise AccessDenied("this needs an admin")


async def authenticated_admin(request: Request) -> Caller:
    """The caller of an admin endpoint: 401 without a live token, 403 unless an admin."""
    runtime = runtime_of(request)
    caller = await authenticated_caller(request)
    async with runtime.engine.connect() as connection:
        await require_admin(connection, runtime.settings, caller)
    return caller
